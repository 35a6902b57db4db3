"""SSD-MobileNetV2 (Open Images v4) box detector: anchors, box decoding, per-class NMS, TFLite.

The model is the detection stage of MediaPipe Objectron, shipped in the npm package
``@mediapipe/objectron`` (``detector_models.SSD_OIDV4``). Its raw outputs are 1917 anchor-relative
box encodings and 24 class logits per anchor (class 0 = background); decoding follows the
settings MediaPipe's graph uses for it (``models-offline.md``, update of 2026-12-07):

* input: the RGB image stretched to 300x300, scaled to [-1, 1];
* anchors: 6 layers with strides 16-512, scales 0.2-0.95, aspect ratios {1, 2, 1/2, 3, 1/3}
  plus one interpolated scale per cell, the lowest layer with 3 anchors per cell;
* boxes: (y, x, h, w) offsets divided by (10, 10, 5, 5), exponential on h and w;
* scores: sigmoid; each anchor keeps its best non-background class.

Owns: :func:`ssd_anchors`, :func:`decode_boxes`, :class:`SsdDetector`.
Does not own: the model files (``detector_models``), label mapping (``detector_classes``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.segmentation.detections import (BoxDetection, checked_rgb,
                                                          per_class_nms)

INPUT_SIZE = 300
NUM_LAYERS = 6
STRIDES = (16, 32, 64, 128, 256, 512)
MIN_SCALE, MAX_SCALE = 0.2, 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
BOX_SCALES = np.array([10.0, 10.0, 5.0, 5.0], np.float32)
"""Divisors of the (y, x, h, w) encodings."""


def _scale(index: int) -> float:
    return MIN_SCALE + (MAX_SCALE - MIN_SCALE) * index / (NUM_LAYERS - 1)


def ssd_anchors() -> np.ndarray:
    """[1917, 4] anchors (y_center, x_center, h, w), relative to the input image."""
    anchors = []
    for layer, stride in enumerate(STRIDES):
        if layer == 0:
            ratios, scales = [1.0, 2.0, 0.5], [0.1, _scale(0), _scale(0)]
        else:
            ratios = list(ASPECT_RATIOS) + [1.0]
            next_scale = 1.0 if layer == NUM_LAYERS - 1 else _scale(layer + 1)
            scales = [_scale(layer)] * len(ASPECT_RATIOS) + [math.sqrt(_scale(layer) * next_scale)]
        sizes = [(s / math.sqrt(r), s * math.sqrt(r)) for s, r in zip(scales, ratios)]
        cells = math.ceil(INPUT_SIZE / stride)
        for y in range(cells):
            for x in range(cells):
                for h, w in sizes:
                    anchors.append(((y + 0.5) / cells, (x + 0.5) / cells, h, w))
    return np.array(anchors, np.float32)


def decode_boxes(encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[N, 4] encodings (y, x, h, w) -> [N, 4] relative boxes (x0, y0, x1, y1)."""
    enc = np.asarray(encodings, np.float32) / BOX_SCALES
    yc = enc[:, 0] * anchors[:, 2] + anchors[:, 0]
    xc = enc[:, 1] * anchors[:, 3] + anchors[:, 1]
    h = np.exp(enc[:, 2]) * anchors[:, 2]
    w = np.exp(enc[:, 3]) * anchors[:, 3]
    return np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)


class SsdDetector:
    """The packaged SSD detector on the CPU through LiteRT (``ai-edge-litert``).

    Example:
        >>> det = SsdDetector(require_model_files(SSD_OIDV4))
        >>> det.detect(rgb, min_score=0.2)   # [BoxDetection, ...] best first
    """

    def __init__(self, model_dir: str | Path, num_threads: int = 1):
        """Load ``model.tflite`` and ``labels.txt`` from ``model_dir``.

        Raises:
            DataFormatError: the files are missing or the model has unexpected tensors.
        """
        from ai_edge_litert.interpreter import Interpreter

        model_dir = Path(model_dir)
        self.class_names = tuple(
            (model_dir / "labels.txt").read_text(encoding="utf-8").splitlines())
        self._interpreter = Interpreter(model_path=str(model_dir / "model.tflite"),
                                        num_threads=int(num_threads))
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        outputs = {d["name"]: d for d in self._interpreter.get_output_details()}
        if (len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3)
                or len(outputs) != 2):
            raise DataFormatError("detector.model", str(model_dir),
                                  "not the SSD-MobileNetV2 OIDv4 model (unexpected tensors)",
                                  kind="model_files")
        self._input_index = inputs[0]["index"]
        by_width = {int(d["shape"][-1]): d["index"] for d in outputs.values()}
        self._boxes_index = by_width[4]
        self._scores_index = by_width[len(self.class_names)]
        self.anchors = ssd_anchors()

    @property
    def object_classes(self) -> tuple[str, ...]:
        """Class names the detector can return (``labels.txt`` without the background)."""
        return self.class_names[1:]

    def raw_outputs(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([1917, 4] box encodings, [1917, C] class logits) of one image."""
        from PIL import Image

        resized = np.asarray(Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE),
                                                         Image.BILINEAR), np.float32)
        tensor = (resized / 127.5 - 1.0)[None]
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        return (self._interpreter.get_tensor(self._boxes_index)[0],
                self._interpreter.get_tensor(self._scores_index)[0])

    def detect(self, rgb: np.ndarray, min_score: float = 0.2, nms_iou: float = 0.45,
               max_detections: int = 50) -> list[BoxDetection]:
        """Boxes of one [H, W, 3] uint8 image, best first.

        Raises:
            InvalidInputError: ``rgb`` is not a non-empty [H, W, 3] uint8 image.
        """
        rgb = checked_rgb(rgb)
        height, width = rgb.shape[:2]
        encodings, logits = self.raw_outputs(rgb)
        probs = 1.0 / (1.0 + np.exp(-logits[:, 1:].astype(np.float64)))
        classes = probs.argmax(axis=1) + 1
        scores = probs.max(axis=1)
        keep = np.flatnonzero(scores >= min_score)
        if keep.size == 0:
            return []
        boxes = decode_boxes(encodings[keep], self.anchors[keep])
        boxes = np.clip(boxes, 0.0, 1.0) * np.array([width, height, width, height], np.float32)
        sizes_ok = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
        keep, boxes = keep[sizes_ok], boxes[sizes_ok]
        chosen = per_class_nms(boxes, scores[keep], classes[keep], nms_iou, max_detections)
        return [BoxDetection(tuple(float(v) for v in boxes[i]), float(scores[keep[i]]),
                             self.class_names[classes[keep[i]]]) for i in chosen]
