"""SAM as a box -> mask cutter: one image embedding per frame, box prompts decoded in batches.

Shared by the ``grounded_sam`` backend (Grounding DINO boxes) and the ``detector`` backend
(boxes of a packaged detector) when SAM weights are given. The model is the Hugging Face
``SamModel`` loaded from a local checkpoint directory (never from a hub); box prompts are scaled
into the resized (not padded) SAM input frame, as ``SamProcessor`` does, and the low-resolution
masks are upsampled back to the original image by the processor's ``post_process_masks``.

Owns: :class:`SamBoxCutter`, :func:`image_processor`.
Does not own: where boxes come from, weight-directory checks (``hf_weights``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def image_processor(cls: Any, directory: Path, **overrides: Any) -> Any:
    """The checkpoint's image processor (its normalisation) with our sizes; defaults without
    a ``preprocessor_config.json``."""
    if (directory / "preprocessor_config.json").is_file():
        return cls.from_pretrained(directory, **overrides)
    return cls(**overrides)


class SamBoxCutter:
    """Box-prompted SAM masks (``multimask_output=False``)."""

    def __init__(self, sam_dir: Path, device: str, box_batch_size: int = 16):
        """Load the model from a checked checkpoint directory (``hf_weights.require_model_dir``)."""
        import torch
        from transformers import SamModel
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

        self._torch = torch
        self.device = device
        self.box_batch_size = int(box_batch_size)
        self.model = SamModel.from_pretrained(sam_dir, local_files_only=True).to(device).eval()
        # SAM's positional embeddings fix its input size: the model config decides it.
        sam_size = int(self.model.config.vision_config.image_size)
        self.processor = image_processor(
            SamImageProcessorPil, sam_dir, size={"longest_edge": sam_size},
            pad_size={"height": sam_size, "width": sam_size})

    def preprocess(self, rgb: np.ndarray) -> Any:
        """The processor's inputs for one [H, W, 3] uint8 image."""
        return self.processor(images=rgb, return_tensors="pt")

    def cut_boxes(self, sam_inputs: Any, boxes_xyxy: np.ndarray) -> np.ndarray:
        """[N, H, W] bool masks of [N, 4] pixel boxes of the preprocessed image."""
        torch = self._torch
        original_hw = [int(v) for v in sam_inputs["original_sizes"][0]]
        reshaped_hw = [int(v) for v in sam_inputs["reshaped_input_sizes"][0]]
        boxes_xyxy = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        if not len(boxes_xyxy):
            return np.zeros((0, *original_hw), bool)
        scale = np.array([reshaped_hw[1] / original_hw[1], reshaped_hw[0] / original_hw[0]] * 2)
        boxes = boxes_xyxy * scale
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(
                sam_inputs["pixel_values"].to(self.device))
            masks = []
            for start in range(0, len(boxes), self.box_batch_size):
                prompt = torch.as_tensor(boxes[None, start:start + self.box_batch_size],
                                         dtype=torch.float32, device=self.device)
                out = self.model(image_embeddings=embeddings, input_boxes=prompt,
                                 multimask_output=False)
                full = self.processor.post_process_masks(
                    [out.pred_masks[0].float().cpu()], [original_hw], [reshaped_hw])[0]
                masks.append(full[:, 0].numpy())
        return np.concatenate(masks, axis=0).astype(bool)

    def cut(self, rgb: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """[N, H, W] bool masks of [N, 4] pixel boxes of ``rgb``."""
        return self.cut_boxes(self.preprocess(rgb), boxes_xyxy)
