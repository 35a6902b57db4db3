"""The Grounded-SAM emulator: ground truth in, realistic open-vocabulary segmenter output out.

Real Grounded SAM (Grounding DINO boxes from text prompts, SAM masks in the boxes; see
PanopticRecon++ sec. V-D) has characteristic errors, which this backend reproduces from a frame's
ground-truth label and instance images, each at a documented, measurable rate:

1. **ids are per frame**: segment ids are a random permutation, never associated across frames;
2. **too small / too big**: segments under ``min_area_frac`` of the image are never found; thing
   boxes wider *and* taller than ``max_box_frac`` of the image are skipped (as the reference
   pipeline does);
3. **under-segmentation**: touching thing segments are merged (same class at
   ``merge_rate_same_class``, different classes at ``merge_rate_other``), label of the larger.
   With ``merge_pair_consistency`` c > 0 a pair's merges are correlated over frames, as a real
   detector's are (the same two chairs look like one chair from most views): each pair of
   objects draws, once per scene, whether it is a "merging" pair (probability = the rate) and
   then merges at ``(1 - c) * rate + c`` if it is, ``(1 - c) * rate`` if not; the mean rate is
   unchanged;
4. **missed detections**: a thing is missed with probability
   ``miss_rate + miss_rate_small * exp(-area_frac / small_area_frac) + miss_rate_far * far``,
   ``far = clip((median depth - far_start_m) / (far_end_m - far_start_m), 0, 1)``; stuff segments
   are missed at ``stuff_miss_rate``;
5. **label confusion**: a detected thing whose class has ``confusable_with`` entries in the label
   registry takes one of them at ``confusion_rate``; any thing takes a random other thing label at
   ``random_confusion_rate``;
6. **over-segmentation**: a detected thing of at least ``split_min_area_frac`` is cut in two by a
   random line through its centroid at ``split_rate``;
7. **boundary erosion**: masks shrink by ``erosion_px`` (+- ``erosion_jitter_px`` per segment,
   + ``boundary_noise_px`` of smooth spatial noise) at every boundary between segments;
8. **bleeding across a contact**: a detected thing touching another segment has its mask
   grow into that neighbour, by ``bleed_px`` (x U(0.5, 1.5)) pixels, at ``bleed_rate`` per
   touching pair and frame (where the two overlap, the higher score wins as below);
9. **false positives**: ``Poisson(false_positives_per_frame)`` blobs with a random thing label;
10. **phrases and scores**: each segment carries a random synonym phrase of its (possibly wrong)
   label and a score; where masks overlap, the higher score wins the pixel.

Everything is deterministic given the config seed and the frame key (``SegmentationRequest``'s
``stamp_ns``; or an explicit ``frame_key`` to :meth:`GroundedSamEmulator.emulate`). Pixel-valued
parameters are given for a 640-pixel-wide image and scale with the width.

Owns: :class:`GroundedSamEmulatorConfig` and its presets (:data:`NOISE_LEVELS`),
:class:`GroundedSamEmulator`, :class:`EmulationReport`.
Does not own: rendering the ground truth (``core/scene``) or the backend registry (``base``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import SegmentationRequest
from panoptic_mapper.core.types import (VOID_LABEL_ID, GroundTruthLabels, PanopticSegmentation2D,
                                        Segment)

REFERENCE_WIDTH_PX = 640
"""Image width at which the pixel-valued parameters are specified."""
EMULATOR_STREAM = 0x47534D45
"""Random-stream tag of the emulator, mixed with the seed and the frame key."""
PAIR_STREAM = 0x50414952
"""Random-stream tag of the per-pair merge propensity, mixed with the seed and two instance ids."""
DEPTH_BIN_M = 0.01
"""Resolution of the per-segment median depth, metres."""
MAX_DEPTH_BIN = 2000
"""Depths beyond ``MAX_DEPTH_BIN * DEPTH_BIN_M`` (20 m) count as that depth."""


@dataclass
class GroundedSamEmulatorConfig(ConfigBase):
    """Error model of the emulated Grounded SAM (defaults = the ``medium`` level)."""

    seed: int = 0
    """Seed; with the frame key it fixes every random choice of a frame."""
    min_area_frac: float = 0.0003
    """Segments smaller than this fraction of the image are never detected."""
    max_box_frac: float = 0.7
    """Things whose bounding box exceeds this fraction of both image width and height are
    skipped (the reference pipeline's big-box filter); 1 disables it."""
    merge_rate_same_class: float = 0.3
    """Probability that two touching thing segments of the same class are merged into one."""
    merge_rate_other: float = 0.05
    """Probability that two touching thing segments of different classes are merged."""
    merge_pair_consistency: float = 0.0
    """How much a pair's merges repeat over frames: 0 = independent per frame; 1 = a pair
    merges in every frame or in none (drawn once per pair of objects, at the merge rate)."""
    bleed_rate: float = 0.0
    """Probability, per touching pair (thing with any segment) and frame, that the thing's mask
    grows into its neighbour."""
    bleed_px: float = 8.0
    """Mean depth of the bleed into the neighbour, pixels (at 640 px)."""
    min_contact_px: int = 4
    """Touching means sharing at least this many boundary pixel pairs (at 640 px)."""
    miss_rate: float = 0.05
    """Base probability that a thing segment is not detected."""
    miss_rate_small: float = 0.3
    """Extra miss probability of tiny things, decaying as exp(-area_frac / small_area_frac)."""
    small_area_frac: float = 0.004
    """Image-area fraction over which the small-object miss term decays."""
    miss_rate_far: float = 0.15
    """Extra miss probability of things at or beyond ``far_end_m`` (linear from far_start_m)."""
    far_start_m: float = 2.0
    """Median depth where the far-object miss term starts, metres."""
    far_end_m: float = 4.5
    """Median depth where the far-object miss term reaches ``miss_rate_far``, metres."""
    stuff_miss_rate: float = 0.03
    """Probability that a stuff segment (one per stuff class and frame) is not detected."""
    confusion_rate: float = 0.1
    """Probability that a detected thing of a class with ``confusable_with`` labels is given
    one of them."""
    random_confusion_rate: float = 0.01
    """Probability that a detected thing is given a random other thing label."""
    split_rate: float = 0.05
    """Probability that a detected thing segment is cut in two (over-segmentation)."""
    split_min_area_frac: float = 0.003
    """Only segments covering at least this fraction of the image are split."""
    erosion_px: float = 1.5
    """Mean number of pixel layers removed at segment boundaries (at 640 px)."""
    erosion_jitter_px: float = 1.0
    """Per-segment uniform jitter of the erosion, +- pixels (at 640 px)."""
    boundary_noise_px: float = 1.0
    """Amplitude of smooth spatial noise added to the erosion radius, pixels (at 640 px)."""
    false_positives_per_frame: float = 0.3
    """Mean (Poisson) number of false-positive blobs per frame."""
    false_positive_area_frac: tuple[float, float] = (0.002, 0.03)
    """Range of the image-area fraction of a false-positive blob (log-uniform)."""
    score_range: tuple[float, float] = (0.45, 0.95)
    """Scores of true detections are uniform in this range, minus the penalties below."""
    score_penalty_hard: float = 0.2
    """Score lowered by this times the segment's miss-probability excess (small/far things)."""
    confused_score_penalty: float = 0.15
    """Score lowered by this for segments with a wrong label."""
    false_positive_score_range: tuple[float, float] = (0.25, 0.5)
    """Scores of false positives are uniform in this range."""

    def validate(self) -> None:
        probabilities = ("merge_rate_same_class", "merge_rate_other", "miss_rate",
                         "miss_rate_small", "miss_rate_far", "stuff_miss_rate", "confusion_rate",
                         "random_confusion_rate", "split_rate", "min_area_frac",
                         "merge_pair_consistency", "bleed_rate")
        for name in probabilities:
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, value, "must be in [0, 1]")
        require(0.0 < self.max_box_frac <= 1.0, "max_box_frac", self.max_box_frac,
                "must be in (0, 1]")
        require(self.min_contact_px >= 1, "min_contact_px", self.min_contact_px, "must be >= 1")
        require(self.small_area_frac > 0, "small_area_frac", self.small_area_frac, "must be > 0")
        require(self.far_end_m > self.far_start_m, "far_end_m", self.far_end_m,
                "must exceed far_start_m")
        require(0.0 <= self.split_min_area_frac <= 1.0, "split_min_area_frac",
                self.split_min_area_frac, "must be in [0, 1]")
        for name in ("erosion_px", "erosion_jitter_px", "boundary_noise_px",
                     "false_positives_per_frame", "score_penalty_hard", "confused_score_penalty",
                     "bleed_px"):
            require(getattr(self, name) >= 0.0, name, getattr(self, name), "must be >= 0")
        for name in ("false_positive_area_frac", "score_range", "false_positive_score_range"):
            lo, hi = getattr(self, name)
            require(0.0 < lo <= hi <= 1.0, name, (lo, hi), "must be a range 0 < low <= high <= 1")


NOISE_LEVELS: dict[str, dict[str, Any]] = {
    "clean": dict(min_area_frac=0.0, max_box_frac=1.0, merge_rate_same_class=0.0,
                  merge_rate_other=0.0, miss_rate=0.0, miss_rate_small=0.0, miss_rate_far=0.0,
                  stuff_miss_rate=0.0, confusion_rate=0.0, random_confusion_rate=0.0,
                  split_rate=0.0, erosion_px=0.0, erosion_jitter_px=0.0, boundary_noise_px=0.0,
                  false_positives_per_frame=0.0, score_range=(0.9, 1.0)),
    "medium": {},
    "hard": dict(min_area_frac=0.0006, merge_rate_same_class=0.8, merge_rate_other=0.25,
                 merge_pair_consistency=0.7, bleed_rate=0.4, bleed_px=10.0,
                 miss_rate=0.12, miss_rate_small=0.45, miss_rate_far=0.3, stuff_miss_rate=0.08,
                 confusion_rate=0.35, random_confusion_rate=0.04, split_rate=0.15,
                 erosion_px=3.0, erosion_jitter_px=1.5, boundary_noise_px=2.0,
                 false_positives_per_frame=1.0, false_positive_area_frac=(0.002, 0.06),
                 score_range=(0.35, 0.9)),
}
"""Noise level name -> overrides of the :class:`GroundedSamEmulatorConfig` defaults."""


def emulator_preset(level: str, **overrides: Any) -> GroundedSamEmulatorConfig:
    """The config of a noise level (``clean``, ``medium``, ``hard``) with optional overrides."""
    if level not in NOISE_LEVELS:
        raise ConfigError("emulator.level", level, f"unknown noise level; known: "
                                                   f"{sorted(NOISE_LEVELS)}")
    values = {**NOISE_LEVELS[level], **overrides}
    return GroundedSamEmulatorConfig.from_dict(values)


@dataclass
class GtSegmentOutcome:
    """What the emulator did with one ground-truth segment of a frame."""

    gt_label_id: int
    gt_instance_id: int
    """Scene instance id (0 for stuff)."""
    area_px: int
    median_depth_m: float
    """Median valid depth over the segment (0 when unknown)."""
    dropped: str = ""
    """Why it was not emitted: ``""`` (emitted), ``"too_small"``, ``"too_big"``, ``"missed"``."""
    miss_probability: float = 0.0
    """The miss probability it was drawn against (things and stuff)."""
    merged: bool = False
    """True when merged with at least one other ground-truth segment."""
    split: bool = False
    label_id: int = VOID_LABEL_ID
    """Label id it was emitted with (0 when dropped)."""
    segment_ids: tuple[int, ...] = ()
    """Output segment ids that carry it."""


@dataclass
class EmulationReport:
    """Per-frame record of the emulated corruptions (for tests and benchmarks)."""

    outcomes: list[GtSegmentOutcome] = field(default_factory=list)
    merged_pairs: list[tuple[int, int]] = field(default_factory=list)
    """Indices (into ``outcomes``) of the touching thing pairs that were merged directly."""
    candidate_pairs: list[tuple[int, int, bool]] = field(default_factory=list)
    """Every touching thing pair considered for merging: (index, index, same_class)."""
    false_positive_ids: tuple[int, ...] = ()


@dataclass
class EmulatedSegmentation:
    """Output of :meth:`GroundedSamEmulator.emulate`."""

    segmentation: PanopticSegmentation2D
    report: EmulationReport


@dataclass
class _Candidate:
    """One emitted segment before painting."""

    mask: np.ndarray
    label_id: int
    is_thing: bool
    score: float
    outcome_indices: tuple[int, ...]


class GroundedSamEmulator:
    """A segmenter backend (``SegmenterBackend`` protocol) driven by ground truth."""

    def __init__(self, config: GroundedSamEmulatorConfig, registry: LabelRegistry):
        self.config = config
        self.registry = registry
        self._thing_table = registry.is_thing_table()
        self._thing_ids = np.array(registry.thing_ids, np.int64)
        self._confusable = {lab.id: [registry.by_name(n).id for n in lab.confusable_with]
                            for lab in registry}

    @classmethod
    def from_config(cls, config: dict | None, registry: LabelRegistry) -> "GroundedSamEmulator":
        """Build from a dict: an optional ``level`` (default ``medium``) plus field overrides."""
        values = dict(config or {})
        level = values.pop("level", "medium")
        return cls(emulator_preset(level, **values), registry)

    def segment(self, request: SegmentationRequest) -> PanopticSegmentation2D:
        """Emulate the segmenter on one frame (``request.ground_truth`` is required)."""
        if request.ground_truth is None:
            raise InvalidInputError("ground_truth", None,
                                    "the emulator backend needs per-pixel ground truth",
                                    kind="segmentation")
        return self.emulate(request.ground_truth, request.depth_m, request.stamp_ns,
                            request.stamp_ns).segmentation

    def emulate(self, ground_truth: GroundTruthLabels, depth_m: np.ndarray | None = None,
                frame_key: int = 0, stamp_ns: int = 0) -> EmulatedSegmentation:
        """Emulate one frame and report what was done to each ground-truth segment.

        Args:
            ground_truth: per-pixel GT label and scene instance ids.
            depth_m: [H, W] depth (0 = invalid) for the far-object misses; None = all near.
            frame_key: selects the random stream (with the config seed), e.g. the frame index.
            stamp_ns: copied into the output.
        """
        labels, instances = ground_truth.label_ids, ground_truth.instance_ids
        if depth_m is not None and np.asarray(depth_m).shape != labels.shape:
            raise InvalidInputError("depth_m", list(np.asarray(depth_m).shape),
                                    f"must match the ground truth size {list(labels.shape)}",
                                    kind="size_mismatch")
        if labels.size and (int(labels.max()) > self.registry.max_id or int(labels.min()) < 0):
            bad = int(labels.max()) if int(labels.min()) >= 0 else int(labels.min())
            raise InvalidInputError("ground_truth.label_ids", bad,
                                    "label id unknown to the registry", kind="unknown_label")
        if instances.size and int(instances.min()) < 0:
            raise InvalidInputError("ground_truth.instance_ids", int(instances.min()),
                                    "instance ids must be >= 0", kind="segmentation")
        cfg = self.config
        key = int(frame_key) & 0xFFFFFFFFFFFFFFFF
        rng = np.random.default_rng([cfg.seed, EMULATOR_STREAM, key & 0xFFFFFFFF, key >> 32])
        h, w = labels.shape
        scale = w / REFERENCE_WIDTH_PX
        seg_map, outcomes = self._gt_segments(labels, instances, depth_m)
        report = EmulationReport(outcomes=outcomes)
        group = self._drop_and_merge(rng, seg_map, outcomes, report, scale)
        candidates = self._detect(rng, seg_map, group, outcomes, scale)
        candidates += self._false_positives(rng, (h, w))
        segmentation = self._paint(rng, candidates, outcomes, report, (h, w), stamp_ns)
        return EmulatedSegmentation(segmentation, report)

    # ---- steps --------------------------------------------------------------------------------
    def _gt_segments(self, labels: np.ndarray, instances: np.ndarray,
                     depth_m: np.ndarray | None) -> tuple[np.ndarray, list[GtSegmentOutcome]]:
        """Index map (-1 = void) of the GT segments (one per thing instance, one per stuff class;
        thing pixels without an instance id count as stuff) and their outcomes with area and
        median depth."""
        is_thing = self._thing_table[labels] & (instances > 0)
        n_labels = self.registry.max_id + 1
        key = np.where(is_thing, instances.astype(np.int64) * n_labels + labels, labels)
        key = np.where(labels == VOID_LABEL_ID, -1, key)
        values, seg_map, counts = _compact(key)
        medians = self._median_depths(seg_map, len(values), depth_m)
        outcomes = []
        for v, c, d in zip(values.tolist(), counts.tolist(), medians.tolist()):
            outcomes.append(GtSegmentOutcome(gt_label_id=int(v % n_labels),
                                             gt_instance_id=int(v // n_labels),
                                             area_px=int(c), median_depth_m=float(d)))
        return seg_map, outcomes

    @staticmethod
    def _median_depths(seg_map: np.ndarray, n: int, depth_m: np.ndarray | None) -> np.ndarray:
        """Median valid depth per segment, to the nearest centimetre (one joint histogram of
        segment and depth bin, no sorting)."""
        medians = np.zeros(n)
        if depth_m is None or n == 0:
            return medians
        depth = np.asarray(depth_m, np.float32)
        valid = (seg_map >= 0) & (depth > 0)
        bins = np.minimum(np.round(depth[valid] / DEPTH_BIN_M).astype(np.int64), MAX_DEPTH_BIN)
        hist = np.bincount(seg_map[valid].astype(np.int64) * (MAX_DEPTH_BIN + 1) + bins,
                           minlength=n * (MAX_DEPTH_BIN + 1)).reshape(n, MAX_DEPTH_BIN + 1)
        cumulative = np.cumsum(hist, axis=1)
        total = cumulative[:, -1]
        has = total > 0
        middle = np.argmax(cumulative >= (total[:, None] + 1) // 2, axis=1)
        medians[has] = middle[has] * DEPTH_BIN_M
        return medians

    def _drop_and_merge(self, rng: np.random.Generator, seg_map: np.ndarray,
                        outcomes: list[GtSegmentOutcome], report: EmulationReport,
                        scale: float) -> np.ndarray:
        """Apply the size filters, then merge touching things; returns the group of each GT
        segment (union-find roots; dropped segments keep their own index)."""
        cfg = self.config
        h, w = seg_map.shape
        n = len(outcomes)
        boxes = ndimage.find_objects(seg_map + 1, max_label=n)
        for i, o in enumerate(outcomes):
            if o.area_px < cfg.min_area_frac * h * w:
                o.dropped = "too_small"
            elif o.gt_instance_id and boxes[i] is not None:
                rows, cols = boxes[i]
                if ((rows.stop - rows.start) > cfg.max_box_frac * h
                        and (cols.stop - cols.start) > cfg.max_box_frac * w
                        and cfg.max_box_frac < 1.0):
                    o.dropped = "too_big"
        parent = np.arange(n)

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return int(i)

        pairs = self._touching_pairs(seg_map, n, max(1, int(round(cfg.min_contact_px * scale))))
        for a, b in pairs:
            oa, ob = outcomes[a], outcomes[b]
            if not (oa.gt_instance_id and ob.gt_instance_id) or oa.dropped or ob.dropped:
                continue
            same = oa.gt_label_id == ob.gt_label_id
            report.candidate_pairs.append((a, b, same))
            rate = cfg.merge_rate_same_class if same else cfg.merge_rate_other
            if cfg.merge_pair_consistency > 0:
                rate = self._pair_merge_rate(rate, oa.gt_instance_id, ob.gt_instance_id)
            if rng.random() < rate:
                report.merged_pairs.append((a, b))
                ra, rb = root(a), root(b)
                if ra != rb:
                    keep, gone = (ra, rb) if outcomes[ra].area_px >= outcomes[rb].area_px \
                        else (rb, ra)
                    parent[gone] = keep
        roots = np.array([root(i) for i in range(n)], np.int64)
        for i in range(n):
            if (roots == roots[i]).sum() > 1:
                outcomes[i].merged = True
        return roots

    def _pair_merge_rate(self, rate: float, instance_a: int, instance_b: int) -> float:
        """The merge rate of one pair of objects under ``merge_pair_consistency``: whether the
        pair is a "merging" one is drawn once per scene (seed and the two instance ids), not per
        frame, so its merges repeat over views."""
        c = self.config.merge_pair_consistency
        lo, hi = sorted((int(instance_a), int(instance_b)))
        merging = np.random.default_rng([self.config.seed, PAIR_STREAM, lo, hi]).random() < rate
        return (1.0 - c) * rate + (c if merging else 0.0)

    @staticmethod
    def _touching_pairs(seg_map: np.ndarray, n: int, min_contact: int) -> list[tuple[int, int]]:
        """Pairs (a < b) of segments sharing at least ``min_contact`` 4-neighbour pixel pairs."""
        codes = []
        for a, b in ((seg_map[:, :-1], seg_map[:, 1:]), (seg_map[:-1, :], seg_map[1:, :])):
            diff = (a != b) & (a >= 0) & (b >= 0)
            lo = np.minimum(a[diff], b[diff]).astype(np.int64)
            hi = np.maximum(a[diff], b[diff]).astype(np.int64)
            codes.append(lo * n + hi)
        if n == 0:
            return []
        values, counts = np.unique(np.concatenate(codes), return_counts=True)
        values = values[counts >= min_contact]
        return [(int(v // n), int(v % n)) for v in values]

    def _miss_probability(self, o: GtSegmentOutcome, image_area: int) -> float:
        cfg = self.config
        if not o.gt_instance_id:
            return cfg.stuff_miss_rate
        far = np.clip((o.median_depth_m - cfg.far_start_m) / (cfg.far_end_m - cfg.far_start_m),
                      0.0, 1.0) if o.median_depth_m > 0 else 0.0
        p = (cfg.miss_rate + cfg.miss_rate_small * math.exp(-o.area_px / image_area
                                                            / cfg.small_area_frac)
             + cfg.miss_rate_far * float(far))
        return float(min(1.0, p))

    def _detect(self, rng: np.random.Generator, seg_map: np.ndarray, group: np.ndarray,
                outcomes: list[GtSegmentOutcome], scale: float) -> list[_Candidate]:
        """Misses, label confusion, splits, scores and boundary erosion of the merged groups."""
        cfg = self.config
        h, w = seg_map.shape
        image_area = h * w
        n = len(outcomes)
        group_map = np.where(seg_map >= 0, group[np.maximum(seg_map, 0)], -1) if n else seg_map
        erode = self._erosion_field(rng, group_map, n, scale)
        neighbours = self._thing_neighbours(group_map, group, outcomes, n, scale)
        candidates: list[_Candidate] = []
        alive = [i for i in range(n) if not outcomes[i].dropped]
        for g in sorted({int(group[i]) for i in alive}):
            members = [i for i in alive if group[i] == g]
            head = outcomes[g]
            area = sum(outcomes[i].area_px for i in members)
            p_miss = self._miss_probability(head if len(members) == 1 else
                                            _merged_outcome(outcomes, members, area), image_area)
            for i in members:
                outcomes[i].miss_probability = p_miss
            if rng.random() < p_miss:
                for i in members:
                    outcomes[i].dropped = "missed"
                continue
            label_id = head.gt_label_id
            is_thing = bool(head.gt_instance_id)
            confused = False
            if is_thing:
                label_id, confused = self._confuse(rng, label_id)
            hard = max(0.0, p_miss - cfg.miss_rate) if is_thing else 0.0
            score = (rng.uniform(*cfg.score_range) - cfg.score_penalty_hard * hard
                     - (cfg.confused_score_penalty if confused else 0.0))
            mask = (group_map == g) & ~erode
            parts = [mask]
            split = (is_thing and area >= cfg.split_min_area_frac * image_area
                     and rng.random() < cfg.split_rate)
            if split:
                parts = _split_mask(rng, group_map == g, erode, scale)
            if is_thing and cfg.bleed_rate > 0:
                bleed = self._bleed(rng, group_map, g, neighbours.get(g, ()), scale)
                if bleed is not None:
                    parts[0] = parts[0] | bleed
            for i in members:
                outcomes[i].label_id = label_id
                outcomes[i].split = split and len(parts) == 2
            for part in parts:
                part_score = float(np.clip(score + (rng.uniform(-0.05, 0.05) if split else 0.0),
                                           0.01, 1.0))
                candidates.append(_Candidate(part, label_id, is_thing, part_score, tuple(members)))
        return candidates

    def _thing_neighbours(self, group_map: np.ndarray, group: np.ndarray,
                          outcomes: list[GtSegmentOutcome], n: int, scale: float
                          ) -> dict[int, tuple[int, ...]]:
        """Group -> the thing groups it touches (only computed when masks may bleed)."""
        if self.config.bleed_rate <= 0 or n == 0:
            return {}
        min_contact = max(1, int(round(self.config.min_contact_px * scale)))
        out: dict[int, list[int]] = {}
        for a, b in self._touching_pairs(group_map, n, min_contact):
            if outcomes[a].gt_instance_id and outcomes[b].gt_instance_id:
                out.setdefault(a, []).append(b)
                out.setdefault(b, []).append(a)
        return {g: tuple(sorted(v)) for g, v in out.items()}

    def _bleed(self, rng: np.random.Generator, group_map: np.ndarray, g: int,
               neighbours: tuple[int, ...], scale: float) -> np.ndarray | None:
        """Pixels of touching neighbours that group ``g``'s mask grows into, or None."""
        cfg = self.config
        chosen = [h for h in neighbours if rng.random() < cfg.bleed_rate]
        if not chosen:
            return None
        radius = cfg.bleed_px * scale * rng.uniform(0.5, 1.5)
        rows, cols = np.nonzero(group_map == g)
        reach = int(math.ceil(radius)) + 1
        r0, r1 = max(0, rows.min() - reach), min(group_map.shape[0], rows.max() + reach + 1)
        c0, c1 = max(0, cols.min() - reach), min(group_map.shape[1], cols.max() + reach + 1)
        crop = group_map[r0:r1, c0:c1]
        near = ndimage.distance_transform_edt(crop != g) <= radius
        out = np.zeros(group_map.shape, bool)
        out[r0:r1, c0:c1] = near & np.isin(crop, chosen)
        return out

    def _confuse(self, rng: np.random.Generator, label_id: int) -> tuple[int, bool]:
        cfg = self.config
        options = self._confusable.get(label_id, [])
        if options and rng.random() < cfg.confusion_rate:
            return int(rng.choice(options)), True
        if rng.random() < cfg.random_confusion_rate:
            others = self._thing_ids[self._thing_ids != label_id]
            if len(others):
                return int(rng.choice(others)), True
        return label_id, False

    def _erosion_field(self, rng: np.random.Generator, group_map: np.ndarray, n: int,
                       scale: float) -> np.ndarray:
        """[H, W] bool: pixels removed by boundary erosion (within each group's radius of a
        boundary between different groups or void)."""
        cfg = self.config
        if cfg.erosion_px <= 0 and cfg.erosion_jitter_px <= 0 and cfg.boundary_noise_px <= 0:
            return np.zeros(group_map.shape, bool)
        boundary = np.zeros(group_map.shape, bool)
        for axis in (0, 1):
            d = np.diff(group_map, axis=axis) != 0
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            boundary[tuple(lo)] |= d
            boundary[tuple(hi)] |= d
        distance = ndimage.distance_transform_edt(~boundary)
        radius = np.maximum(0.0, cfg.erosion_px + rng.uniform(-1.0, 1.0, max(n, 1))
                            * cfg.erosion_jitter_px) * scale
        field = radius[np.maximum(group_map, 0)]
        if cfg.boundary_noise_px > 0:
            field = field + _smooth_noise(rng, group_map.shape, 12.0 * scale) \
                * cfg.boundary_noise_px * scale
        return distance < field

    def _false_positives(self, rng: np.random.Generator, shape: tuple[int, int]
                         ) -> list[_Candidate]:
        cfg = self.config
        h, w = shape
        out = []
        for _ in range(int(rng.poisson(cfg.false_positives_per_frame))):
            lo, hi = np.log(cfg.false_positive_area_frac)
            area = math.exp(rng.uniform(lo, hi)) * h * w
            aspect = math.exp(rng.uniform(-0.7, 0.7))
            ry, rx = math.sqrt(area / math.pi / aspect), math.sqrt(area * aspect / math.pi)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            angle = rng.uniform(0, math.pi)
            # The blob (an ellipse with a wobbly rim, at most sqrt(1.3) times its radius) is
            # computed in its bounding box only.
            reach = math.sqrt(1.3) * max(rx, ry) + 1
            r0, r1 = int(max(0, cy - reach)), int(min(h, cy + reach + 1))
            c0, c1 = int(max(0, cx - reach)), int(min(w, cx + reach + 1))
            yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
            dy, dx = yy - cy, xx - cx
            u = dx * math.cos(angle) + dy * math.sin(angle)
            v = -dx * math.sin(angle) + dy * math.cos(angle)
            wobble = 1.0 + 0.3 * _smooth_noise(rng, (r1 - r0, c1 - c0), max(rx, ry) / 2 + 1)
            mask = np.zeros(shape, bool)
            mask[r0:r1, c0:c1] = (u / rx) ** 2 + (v / ry) ** 2 <= wobble
            label_id = int(rng.choice(self._thing_ids))
            out.append(_Candidate(mask, label_id, True,
                                  float(rng.uniform(*cfg.false_positive_score_range)), ()))
        return out

    def _paint(self, rng: np.random.Generator, candidates: list[_Candidate],
               outcomes: list[GtSegmentOutcome], report: EmulationReport,
               shape: tuple[int, int], stamp_ns: int) -> PanopticSegmentation2D:
        """Paint in ascending score (the highest score wins a pixel), drop empty segments, and
        number the survivors with a random permutation."""
        order = sorted(range(len(candidates)), key=lambda i: candidates[i].score)
        owner = np.full(shape, -1, np.int32)
        for i in order:
            owner[candidates[i].mask] = i
        present = np.unique(owner)
        present = present[present >= 0]
        ids = rng.permutation(len(present)) + 1
        id_of = dict(zip(present.tolist(), ids.tolist()))
        lut = np.zeros(len(candidates) + 1, np.int32)
        segments = []
        fp_ids = []
        for index, seg_id in id_of.items():
            c = candidates[index]
            lut[index] = seg_id
            label = self.registry.by_id(c.label_id)
            phrase = str(rng.choice(label.phrases))
            segments.append(Segment(id=seg_id, label=label.name, label_id=label.id,
                                    is_thing=label.is_thing and c.is_thing,
                                    score=c.score, phrase=phrase))
            if not c.outcome_indices:
                fp_ids.append(seg_id)
            for i in c.outcome_indices:
                outcomes[i].segment_ids += (seg_id,)
        report.false_positive_ids = tuple(sorted(fp_ids))
        segment_ids = np.where(owner >= 0, lut[owner], 0).astype(np.int32)
        segments.sort(key=lambda s: s.id)
        return PanopticSegmentation2D(segment_ids, tuple(segments), stamp_ns)


def _compact(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct non-negative keys of an image, the image of their indices (-1 where the key is
    negative) and their pixel counts; by a dense table when keys are small (no sorting)."""
    valid = key >= 0
    top = int(key.max()) if key.size else -1
    if top < 0:
        return np.zeros(0, np.int64), np.full(key.shape, -1, np.int32), np.zeros(0, np.int64)
    if top < (1 << 22):
        all_counts = np.bincount(key[valid], minlength=top + 1)
        values = np.flatnonzero(all_counts)
        lut = np.full(top + 1, -1, np.int32)
        lut[values] = np.arange(len(values), dtype=np.int32)
        index = np.where(valid, lut[np.maximum(key, 0)], -1).astype(np.int32)
        return values, index, all_counts[values]
    values, inverse, counts = np.unique(key[valid], return_inverse=True, return_counts=True)
    index = np.full(key.shape, -1, np.int32)
    index[valid] = inverse
    return values, index, counts


def _merged_outcome(outcomes: list[GtSegmentOutcome], members: list[int], area: int
                    ) -> GtSegmentOutcome:
    """A stand-in outcome for a merged group (for its miss probability): total area, the
    area-weighted depth, the label of the largest member."""
    biggest = max(members, key=lambda i: outcomes[i].area_px)
    depth = sum(outcomes[i].median_depth_m * outcomes[i].area_px for i in members) / max(area, 1)
    return GtSegmentOutcome(outcomes[biggest].gt_label_id, outcomes[biggest].gt_instance_id, area,
                            depth)


def _split_mask(rng: np.random.Generator, region: np.ndarray, erode: np.ndarray, scale: float
                ) -> list[np.ndarray]:
    """Cut a region by a random line through its centroid; the cut is eroded like a boundary."""
    ys, xs = np.nonzero(region)
    cy, cx = ys.mean(), xs.mean()
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:region.shape[0], 0:region.shape[1]]
    side = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    gap = max(1.0, 1.5 * scale)
    a = region & (side > gap / 2) & ~erode
    b = region & (side < -gap / 2) & ~erode
    if not a.any() or not b.any():
        return [region & ~erode]
    return [a, b]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float
                  ) -> np.ndarray:
    """[H, W] smooth random field in about [-1, 1]: a coarse random grid upsampled bilinearly
    (two small interpolation-matrix products)."""
    h, w = shape
    gh, gw = int(h / cell_px) + 2, int(w / cell_px) + 2
    coarse = rng.uniform(-1.0, 1.0, (gh, gw))
    return _interpolation_matrix(h, gh) @ coarse @ _interpolation_matrix(w, gw).T


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] linear interpolation weights from ``n_in`` samples spanning the same range."""
    x = np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1))
    lo = np.minimum(np.floor(x).astype(int), n_in - 2)
    frac = x - lo
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), lo] = 1.0 - frac
    matrix[np.arange(n_out), lo + 1] = frac
    return matrix
