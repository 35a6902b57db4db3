"""The ``grounded_sam`` segmenter backend: Grounding DINO boxes from registry phrases, SAM masks.

Pipeline per frame (PanopticRecon++ recipe, ``method-panopticrecon-pp.md`` section 3.3):

1. preprocess: the detector's and SAM's image processors (resize, normalise, pad);
2. detect: Grounding DINO on each prompt caption (registry phrases, ". "-separated, split into
   captions that fit the text-token limit); a box is kept when its best token probability exceeds
   ``box_threshold`` and its best phrase (highest token probability inside the phrase) exceeds
   ``text_threshold``; boxes wider than ``max_box_width_fraction`` of the image *and* taller than
   ``max_box_height_fraction`` are skipped; same-label duplicates are suppressed (our addition:
   they would only leave slivers after the merge);
3. segment: SAM with one box prompt per detection, ``multimask_output=False``, in batches that
   share one image embedding;
4. merge: per-pixel conflicts won by the highest detection score, one segment per thing
   detection, one per stuff label (``grounded_sam_merge``).

The models are the maintained Hugging Face ``transformers`` classes
(``GroundingDinoForObjectDetection``, ``SamModel``) and their processors, loaded from local
directories (never from a hub). Per-stage timings come back in :class:`GroundedSamStats`.

Owns: :class:`GroundedSamConfig`, :class:`GroundedSamSegmenter`, :class:`GroundedSamStats`,
:class:`GroundedSamResult`.
Does not own: the merge rules (``grounded_sam_merge``), prompt packing (``grounding_prompts``),
weight-directory checks (``hf_weights``), running SAM on boxes (``sam_box_cutter``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import SegmentationRequest
from panoptic_mapper.core.segmentation.detections import checked_rgb
from panoptic_mapper.core.segmentation.grounded_sam_merge import (BoxXYXY, Detection,
                                                                  class_aware_nms,
                                                                  merge_detection_masks)
from panoptic_mapper.core.segmentation.grounding_prompts import (PromptChunk,
                                                                 build_prompt_chunks,
                                                                 phrase_scores)
from panoptic_mapper.core.segmentation.hf_weights import require_model_dir, resolve_device
from panoptic_mapper.core.segmentation.sam_box_cutter import SamBoxCutter, image_processor
from panoptic_mapper.core.types import PanopticSegmentation2D


@dataclass
class GroundedSamConfig(ConfigBase):
    """Configuration of the Grounded SAM backend (YAML section ``grounded_sam``)."""

    detector_weights_dir: str = ""
    """Local Grounding DINO checkpoint directory (config.json, weights, preprocessor_config.json,
    tokenizer files), e.g. a download of IDEA-Research/grounding-dino-tiny."""
    sam_weights_dir: str = ""
    """Local SAM checkpoint directory (config.json, weights), e.g. facebook/sam-vit-base."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the models run; auto = CUDA when available, else CPU."""
    box_threshold: float = 0.25
    """Keep a box when its highest box-token probability exceeds this (recipe: 0.2-0.25)."""
    text_threshold: float = 0.25
    """Keep a box only when its best phrase's token probability exceeds this (recipe: 0.25)."""
    max_box_width_fraction: float = 0.7
    """Skip boxes wider than this fraction of the image width *and* taller than
    ``max_box_height_fraction`` of its height (recipe: 0.7); 1 disables."""
    max_box_height_fraction: float = 0.7
    """See ``max_box_width_fraction``."""
    nms_iou_threshold: float = 0.8
    """Drop a box when a higher-scoring box of the same label overlaps it with a larger IoU;
    1 disables."""
    max_detections: int = 100
    """At most this many boxes (best first) are sent to SAM per frame."""
    min_segment_area_fraction: float = 0.001
    """Segments covering less than this fraction of the image are removed after the merge."""
    detector_shortest_edge_px: int = 800
    """Grounding DINO input: the image is resized so its shorter side has this many pixels ..."""
    detector_longest_edge_px: int = 1333
    """... unless that makes its longer side exceed this many pixels."""
    sam_box_batch_size: int = 16
    """Box prompts decoded together by SAM (one image embedding per frame)."""
    prompt_phrases: tuple[str, ...] = ()
    """Registry phrases to detect; empty = every phrase of every label."""
    max_prompt_tokens: int = 0
    """Token budget of one caption including [CLS]/[SEP]; 0 = the detector's max_text_len."""

    def validate(self) -> None:
        super().validate()
        for name in ("box_threshold", "text_threshold"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, name, value, "must be in [0, 1)")
        for name in ("max_box_width_fraction", "max_box_height_fraction"):
            value = getattr(self, name)
            require(0.0 < value <= 1.0, name, value, "must be in (0, 1]")
        require(0.0 < self.nms_iou_threshold <= 1.0, "nms_iou_threshold",
                self.nms_iou_threshold, "must be in (0, 1]")
        require(self.max_detections >= 1, "max_detections", self.max_detections, "must be >= 1")
        require(0.0 <= self.min_segment_area_fraction < 1.0, "min_segment_area_fraction",
                self.min_segment_area_fraction, "must be in [0, 1)")
        require(self.detector_shortest_edge_px >= 16, "detector_shortest_edge_px",
                self.detector_shortest_edge_px, "must be >= 16")
        require(self.detector_longest_edge_px >= self.detector_shortest_edge_px,
                "detector_longest_edge_px", self.detector_longest_edge_px,
                "must be >= detector_shortest_edge_px")
        require(self.sam_box_batch_size >= 1, "sam_box_batch_size", self.sam_box_batch_size,
                "must be >= 1")
        require(self.max_prompt_tokens == 0 or self.max_prompt_tokens >= 3, "max_prompt_tokens",
                self.max_prompt_tokens, "must be 0 (model limit) or >= 3")


@dataclass
class GroundedSamStats:
    """What one frame cost and how many boxes each stage kept (for node diagnostics)."""

    device: str = "cpu"
    preprocess_ms: float = 0.0
    """Image processors of both models."""
    detect_ms: float = 0.0
    """Grounding DINO forward passes and box decoding."""
    segment_ms: float = 0.0
    """SAM image encoder, box-prompted mask decoder and mask upsampling."""
    merge_ms: float = 0.0
    """Per-pixel conflict resolution and segment building."""
    total_ms: float = 0.0
    num_prompt_chunks: int = 0
    """Detector passes (captions) per frame."""
    num_boxes_above_threshold: int = 0
    """Boxes whose score exceeded ``box_threshold``."""
    num_boxes_without_phrase: int = 0
    """Of those, boxes whose best phrase stayed below ``text_threshold``."""
    num_boxes_too_large: int = 0
    """Boxes skipped for covering most of the image."""
    num_boxes_suppressed: int = 0
    """Boxes removed by same-label NMS or the ``max_detections`` cap."""
    num_boxes_segmented: int = 0
    """Boxes prompted to SAM."""
    num_segments: int = 0
    num_segments_removed: int = 0
    """Segments removed by the minimum-area rule after the merge."""

    def as_dict(self) -> dict[str, float | str]:
        """Flat ``{name: value}`` for diagnostics and logs."""
        return asdict(self)


@dataclass
class GroundedSamResult:
    """The segmentation of one frame, the boxes behind it and what it cost."""

    segmentation: PanopticSegmentation2D
    detections: list[Detection] = field(default_factory=list)
    """The boxes sent to SAM (after all filters), best first; segment sources index into it."""
    segment_sources: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Segment id -> indices into ``detections``."""
    stats: GroundedSamStats = field(default_factory=GroundedSamStats)


class GroundedSamSegmenter:
    """Grounding DINO + SAM segmenter over the phrases of a label registry.

    Example:
        >>> seg = GroundedSamSegmenter.from_config(
        ...     {"detector_weights_dir": "/models/grounding-dino-tiny",
        ...      "sam_weights_dir": "/models/sam-vit-base"}, LabelRegistry.default())
        >>> result = seg.segment_with_stats(SegmentationRequest(rgb=image))
        >>> result.stats.total_ms
    """

    def __init__(self, config: GroundedSamConfig, registry: LabelRegistry):
        """Load both models and build the prompt captions.

        Raises:
            DataFormatError: a weights directory is missing or wrong (says how to get it).
            ConfigError: a prompt phrase is not in the registry, or CUDA is unavailable.
        """
        import torch
        from transformers import AutoTokenizer, GroundingDinoForObjectDetection
        from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
            GroundingDinoImageProcessorPil)

        self.config = config
        self.registry = registry
        self.device = resolve_device(config.device, "grounded_sam.device")
        self.last_stats: GroundedSamStats | None = None
        detector_dir = require_model_dir(config.detector_weights_dir,
                                         "grounded_sam.detector_weights_dir", "grounding-dino")
        sam_dir = require_model_dir(config.sam_weights_dir, "grounded_sam.sam_weights_dir",
                                    "sam")
        self._torch = torch
        self._detector = GroundingDinoForObjectDetection.from_pretrained(
            detector_dir, local_files_only=True).to(self.device).eval()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(detector_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError("grounded_sam.detector_weights_dir", str(detector_dir),
                              f"no usable tokenizer files in the checkpoint ({exc}); download "
                              "the whole repository, tokenizer included") from exc
        self._detector_processor = image_processor(
            GroundingDinoImageProcessorPil, detector_dir,
            size={"shortest_edge": config.detector_shortest_edge_px,
                  "longest_edge": config.detector_longest_edge_px})
        self._sam_cutter = SamBoxCutter(sam_dir, self.device, config.sam_box_batch_size)
        self._sam_processor = self._sam_cutter.processor
        max_tokens = config.max_prompt_tokens or int(self._detector.config.max_text_len)
        self.prompt_chunks: list[PromptChunk] = build_prompt_chunks(
            self._prompt_phrases(), self._tokenizer, max_tokens)
        self._text_inputs = [self._tokenizer(c.text, return_tensors="pt")
                             for c in self.prompt_chunks]

    @classmethod
    def from_config(cls, config: dict[str, Any] | GroundedSamConfig | None,
                    registry: LabelRegistry) -> "GroundedSamSegmenter":
        """Build from a config dict (the YAML section) or a config object."""
        if not isinstance(config, GroundedSamConfig):
            config = GroundedSamConfig.from_dict(config, "grounded_sam")
        return cls(config, registry)

    def _prompt_phrases(self) -> list[tuple[str, int]]:
        if not self.config.prompt_phrases:
            return [(phrase, label.id) for phrase, label in self.registry.all_phrases()]
        pairs = []
        for phrase in self.config.prompt_phrases:
            label = self.registry.find_phrase(phrase)
            if label is None:
                raise ConfigError("grounded_sam.prompt_phrases", phrase,
                                  "not a phrase of the label registry")
            pairs.append((phrase, label.id))
        return pairs

    # ---- public API ----------------------------------------------------------------------------
    def segment(self, request: SegmentationRequest) -> PanopticSegmentation2D:
        """Segment one frame (the :class:`SegmenterBackend` call); stats in ``last_stats``."""
        return self.segment_with_stats(request).segmentation

    def segment_with_stats(self, request: SegmentationRequest) -> GroundedSamResult:
        """Segment one frame and report the boxes and per-stage timings.

        Raises:
            InvalidInputError: ``request.rgb`` is not a non-empty [H, W, 3] uint8 image.
        """
        rgb = checked_rgb(request.rgb)
        height, width = rgb.shape[:2]
        stats = GroundedSamStats(device=self.device, num_prompt_chunks=len(self.prompt_chunks))
        t_start = self._now()

        detector_inputs = self._detector_processor(images=rgb, return_tensors="pt")
        sam_inputs = self._sam_processor(images=rgb, return_tensors="pt")
        t_preprocessed = self._now()

        detections = self._detect(detector_inputs, (height, width), stats)
        t_detected = self._now()

        masks = self._segment_boxes(sam_inputs, detections)
        t_segmented = self._now()

        min_area = int(np.ceil(self.config.min_segment_area_fraction * height * width))
        merged = merge_detection_masks(detections, masks, self.registry, min_area,
                                       request.stamp_ns)
        t_merged = self._now()

        stats.preprocess_ms = (t_preprocessed - t_start) * 1e3
        stats.detect_ms = (t_detected - t_preprocessed) * 1e3
        stats.segment_ms = (t_segmented - t_detected) * 1e3
        stats.merge_ms = (t_merged - t_segmented) * 1e3
        stats.total_ms = (t_merged - t_start) * 1e3
        stats.num_boxes_segmented = len(detections)
        stats.num_segments = len(merged.segmentation.segments)
        stats.num_segments_removed = merged.num_removed
        self.last_stats = stats
        return GroundedSamResult(merged.segmentation, detections, merged.segment_sources, stats)

    # ---- stages ------------------------------------------------------------------------------
    def _now(self) -> float:
        """Wall clock in seconds, after pending GPU work (so stage timings are honest)."""
        if self.device == "cuda":
            self._torch.cuda.synchronize()
        return time.perf_counter()

    def _detect(self, detector_inputs: Any, image_hw: tuple[int, int],
                stats: GroundedSamStats) -> list[Detection]:
        """Grounding DINO over every caption; thresholds, phrase choice and box filters."""
        torch = self._torch
        height, width = image_hw
        pixel_values = detector_inputs["pixel_values"].to(self.device)
        pixel_mask = detector_inputs["pixel_mask"].to(self.device)
        candidates: list[Detection] = []
        for chunk, text in zip(self.prompt_chunks, self._text_inputs):
            with torch.inference_mode():
                out = self._detector(pixel_values=pixel_values, pixel_mask=pixel_mask,
                                     **{k: v.to(self.device) for k, v in text.items()})
            probs = torch.sigmoid(out.logits[0, :, :chunk.num_tokens]).float().cpu().numpy()
            boxes_cxcywh = out.pred_boxes[0].float().cpu().numpy()  # [Q, 4], relative
            scores = probs.max(axis=1)
            above = np.flatnonzero(scores > self.config.box_threshold)
            stats.num_boxes_above_threshold += int(above.size)
            per_phrase = phrase_scores(probs[above], chunk)  # [A, P]
            for row, query in enumerate(above):
                best = int(per_phrase[row].argmax())
                if per_phrase[row, best] <= self.config.text_threshold:
                    stats.num_boxes_without_phrase += 1
                    continue
                box = _cxcywh_to_xyxy(boxes_cxcywh[query], width, height)
                if (box[2] - box[0] > self.config.max_box_width_fraction * width
                        and box[3] - box[1] > self.config.max_box_height_fraction * height):
                    stats.num_boxes_too_large += 1
                    continue
                phrase = chunk.phrases[best]
                candidates.append(Detection(box, float(scores[query]), phrase.phrase,
                                            phrase.label_id))
        kept = class_aware_nms(candidates, self.config.nms_iou_threshold)
        kept = kept[:self.config.max_detections]
        stats.num_boxes_suppressed = len(candidates) - len(kept)
        return [candidates[i] for i in kept]

    def _segment_boxes(self, sam_inputs: Any, detections: list[Detection]) -> np.ndarray:
        """[N, H, W] bool SAM masks, one per detection box."""
        return self._sam_cutter.cut_boxes(sam_inputs, np.array([d.box_xyxy for d in detections],
                                                               np.float64).reshape(-1, 4))


def _cxcywh_to_xyxy(box: np.ndarray, width: int, height: int) -> BoxXYXY:
    """Relative (cx, cy, w, h) -> pixel (x0, y0, x1, y1), clipped to the image."""
    cx, cy, w, h = (float(v) for v in box)
    x0 = min(max((cx - w / 2) * width, 0.0), width)
    x1 = min(max((cx + w / 2) * width, 0.0), width)
    y0 = min(max((cy - h / 2) * height, 0.0), height)
    y1 = min(max((cy + h / 2) * height, 0.0), height)
    return (x0, y0, x1, y1)
