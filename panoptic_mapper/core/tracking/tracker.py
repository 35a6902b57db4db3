"""Frame-to-map instance association: persistent 3D instance ids from per-frame 2D segments.

Per frame, with the map's current instance id under every sampled pixel (looked up in the voxels
the pixels land on, before this frame votes):

1. Pair histogram of (frame thing segment, map instance) over the samples. Overlap is measured on
   *mapped* samples only (voxels that have instance evidence), so a segment that reveals a new side
   of a known object is not penalised for the unmapped part.
2. Hungarian assignment maximising IoU, restricted to class-compatible pairs (the instance's label
   distribution, with confusable labels counted at ``confusable_compatibility``) whose IoU or
   overlap coefficient is high enough.
3. Under-segmentation: a segment that also covers most of the visible part of *another* instance
   that no segment claimed keeps the map's split: its samples on that instance vote for it.
4. Unmatched segments with enough samples start *candidates* (remembering the instance they
   overlap, if any); a candidate is confirmed after ``confirm_observations`` frames and retired if
   it is not seen again within ``retire_after_frames`` frames (its voxels then resolve to that
   parent instance, or to none).
5. Duplicates are merged when one segment keeps covering both instances (co-segmentation in most
   frames where they are seen together), or when their boxes overlap largely and no frame ever
   showed them as two separate segments.

Stuff is not tracked: one region per stuff class (:meth:`InstanceTracker.stuff_region`).

Owns: :class:`TrackingConfig`, :class:`InstanceTracker`. Does not own: voxel storage or voting.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.labels.registry import LabelRegistry
from panoptic_mapper.core.labels.voting import LabelChannels
from panoptic_mapper.core.tracking.instances import (InstanceRecord, InstanceStatus,
                                                     InstanceTable)
from panoptic_mapper.core.tracking.pair_stats import PairStats
from panoptic_mapper.core.types import NO_INSTANCE_ID

NO_VOTE = -1
"""Per-sample instance target meaning "cast no instance vote"."""
UNMAPPED = -1
"""Per-sample map id of a voxel with no instance evidence yet."""


@dataclass
class TrackingConfig(ConfigBase):
    """Association of frame segments with persistent map instances."""

    min_match_iou: float = 0.2
    """A segment matches an instance if their IoU (over mapped samples) reaches this ..."""
    min_match_containment: float = 0.6
    """... or if their overlap coefficient |A and B| / min(|A|, |B|) reaches this."""
    min_overlap_samples: int = 4
    """Fewest shared samples for any match, split or co-segmentation, in samples."""
    min_class_compatibility: float = 0.3
    """Smallest label compatibility (probability the instance gives the segment's label, with
    confusable labels counted partly) for a match or a merge, in [0, 1]."""
    confusable_compatibility: float = 0.5
    """How much a confusable label (registry ``confusable_with``) counts as the same label."""
    min_new_instance_samples: int = 8
    """An unmatched segment starts a candidate only with at least this many valid samples."""
    min_visible_samples: int = 10
    """An instance counts as visible in a frame with at least this many samples on it."""
    split_coverage: float = 0.5
    """Under-segmentation: a matched segment covering at least this share of another visible,
    unclaimed, confirmed instance leaves that instance's samples to it (candidates get no such
    protection, so a fragment cut off by one over-segmented frame fades out)."""
    confirm_observations: int = 3
    """Frames a candidate must be observed in to be confirmed."""
    retire_after_frames: int = 30
    """A candidate unseen for this many frames is retired."""
    merge_min_frames: int = 3
    """Co-segmentation frames needed before two instances are merged."""
    merge_ratio: float = 0.8
    """Merge when co-segmented in at least this share of the frames that showed both (either as
    one segment or as two). Touching objects of one class are merged by the segmenter in some
    frames (30 % at the emulator's ``medium``, 65 % at ``hard``); a duplicate nearly always."""
    merge_box_overlap: float = 0.6
    """Merge instances whose boxes overlap by this share of the smaller box ... (0 disables)"""
    merge_box_min_volume_m3: float = 1e-4
    """... provided both boxes have at least this volume, m^3, and they were never seen as two
    separate segments in one frame."""
    merge_box_interval_frames: int = 10
    """The box-overlap merge test runs every this many frames (it compares all instances)."""
    merge_neighbour_margin_m: float = 0.1
    """Instances whose boxes come closer than this are merge candidates, m; frames showing such
    a pair as two segments are counted against merging them."""
    instance_count_cap: float = 20.0
    """Largest weight of a voxel's instance slot (like the label cap: keeps the map changeable)."""

    def validate(self) -> None:
        for name in ("min_match_iou", "min_match_containment", "min_class_compatibility",
                     "confusable_compatibility", "split_coverage", "merge_ratio",
                     "merge_box_overlap"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, value, "must be in [0, 1]")
        for name in ("min_overlap_samples", "min_new_instance_samples", "min_visible_samples",
                     "confirm_observations", "retire_after_frames", "merge_min_frames",
                     "merge_box_interval_frames"):
            value = getattr(self, name)
            require(value >= 1, name, value, "must be >= 1")
        require(self.merge_box_min_volume_m3 >= 0.0, "merge_box_min_volume_m3",
                self.merge_box_min_volume_m3, "must be >= 0 m^3")
        require(self.merge_neighbour_margin_m >= 0.0, "merge_neighbour_margin_m",
                self.merge_neighbour_margin_m, "must be >= 0 m")
        require(self.instance_count_cap > 0.0, "instance_count_cap", self.instance_count_cap,
                "must be > 0")


@dataclass
class ThingSegment:
    """A thing segment of the current frame, as the tracker sees it."""

    segment_id: int
    channel: int
    """Evidence channel of its label."""
    score: float


@dataclass
class FrameAssociation:
    """Result of associating one frame."""

    sample_instance: np.ndarray
    """[N] int64 instance id each sample votes for (``NO_VOTE`` for samples of no thing
    segment or of a segment that was dropped)."""
    segment_to_instance: dict[int, int] = field(default_factory=dict)
    """Frame segment id -> map instance id, for the thing segments that got one."""
    num_matched: int = 0
    num_new: int = 0
    num_splits: int = 0


class InstanceTracker:
    """Keeps the instance table and associates each frame's thing segments with it."""

    def __init__(self, config: TrackingConfig, registry: LabelRegistry,
                 channels: LabelChannels):
        self.config = config
        self.channels = channels
        self.table = InstanceTable(channels.count)
        self.stuff_regions: dict[int, int] = {}
        """Stuff channel -> its region's instance id."""
        self._compat = self._compatibility_matrix(registry, channels,
                                                  config.confusable_compatibility)
        self.pairs = PairStats()
        """Frames that showed pairs of instances as one segment or as two."""

    @staticmethod
    def _compatibility_matrix(registry: LabelRegistry, channels: LabelChannels,
                              confusable: float) -> np.ndarray:
        """[C, C] how much evidence for channel j supports a segment of channel i."""
        matrix = np.eye(channels.count)
        for lab in registry:
            i = channels.channel_of[lab.id]
            for other in lab.confusable_with:
                j = channels.channel_of[registry.by_name(other).id]
                matrix[i, j] = matrix[j, i] = max(matrix[i, j], confusable)
        return matrix

    # ---- stuff -----------------------------------------------------------------------------
    def stuff_region(self, channel: int, frame_index: int) -> int:
        """The region id of a stuff channel, created (and confirmed) on first use."""
        region = self.stuff_regions.get(channel)
        if region is None:
            record = self.table.create(False, frame_index, status=InstanceStatus.CONFIRMED)
            record.label_evidence[channel] = 1.0
            region = self.stuff_regions[channel] = record.id
        return region

    def observe_stuff(self, channel: int, frame_index: int, score: float) -> int:
        region = self.stuff_region(channel, frame_index)
        record = self.table.get(region)
        if record.last_frame != frame_index or record.num_observations == 0:
            record.num_observations += 1
        record.last_frame = frame_index
        record.label_evidence[channel] += score
        return region

    # ---- association -----------------------------------------------------------------------
    def _compatibility(self, channels: np.ndarray, instance_ids: np.ndarray) -> np.ndarray:
        """[S, I] class compatibility of segment channels [S] with instances [I]: the
        probability an instance's label evidence gives the segment's label, confusable labels
        counted at ``confusable_compatibility`` (1 for an instance with no evidence yet)."""
        evidence = np.stack([self.table.get(i).label_evidence for i in instance_ids]) \
            if instance_ids.size else np.zeros((0, self.channels.count))
        total = evidence.sum(axis=1)
        dist = evidence / np.maximum(total, 1e-12)[:, None]
        compat = np.minimum(1.0, self._compat[channels] @ dist.T)
        compat[:, total <= 0] = 1.0
        return compat

    def associate(self, frame_index: int, segments: list[ThingSegment],
                  sample_segment: np.ndarray, sample_map_id: np.ndarray,
                  sample_points_m: np.ndarray) -> FrameAssociation:
        """Associate the thing segments of one frame and update the table.

        Args:
            frame_index: running index of accepted frames.
            segments: the frame's thing segments; ``sample_segment`` indexes into this list.
            sample_segment: [N] int64 row in ``segments`` per sample (-1 = not a thing segment).
            sample_map_id: [N] int64 resolved map instance id per sample (``UNMAPPED`` = no
                evidence, 0 = no thing).
            sample_points_m: [N, 3] world points of the samples (for instance bounds).
        """
        cfg = self.config
        num_seg = len(segments)
        result = FrameAssociation(sample_instance=np.full(sample_segment.shape, NO_VOTE,
                                                          np.int64))
        visible_ids, visible_counts = np.unique(sample_map_id[sample_map_id > 0],
                                                return_counts=True)
        if num_seg == 0:
            self._finish_frame(frame_index)
            return result
        num_inst = visible_ids.size
        in_seg = sample_segment >= 0
        seg_total = np.bincount(sample_segment[in_seg], minlength=num_seg)
        seg_mapped = np.bincount(sample_segment[in_seg & (sample_map_id >= 0)],
                                 minlength=num_seg)
        on_thing = in_seg & (sample_map_id > 0)
        col_of_sample = np.searchsorted(visible_ids, sample_map_id[on_thing])
        overlap = np.bincount(sample_segment[on_thing] * num_inst + col_of_sample,
                              minlength=num_seg * num_inst).reshape(num_seg, num_inst)
        compat = self._compatibility(np.array([s.channel for s in segments]), visible_ids)
        union = seg_mapped[:, None] + visible_counts[None, :] - overlap
        iou = overlap / np.maximum(union, 1)
        containment = overlap / np.maximum(np.minimum(seg_mapped[:, None],
                                                      visible_counts[None, :]), 1)
        allowed = ((overlap >= cfg.min_overlap_samples)
                   & (compat >= cfg.min_class_compatibility)
                   & ((iou >= cfg.min_match_iou) | (containment >= cfg.min_match_containment)))
        seg_instance = np.zeros(num_seg, np.int64)
        col_claimed = np.zeros(num_inst, bool)
        rows_any, cols_any = np.flatnonzero(allowed.any(1)), np.flatnonzero(allowed.any(0))
        if rows_any.size:
            sub = allowed[np.ix_(rows_any, cols_any)]
            score = np.where(sub, (iou + 0.01 * containment)[np.ix_(rows_any, cols_any)], 0.0)
            rows, cols = linear_sum_assignment(-score)
            keep = sub[rows, cols]
            rows, cols = rows_any[rows[keep]], cols_any[cols[keep]]
            seg_instance[rows] = visible_ids[cols]
            col_claimed[cols] = True
        result.num_matched = int((seg_instance > 0).sum())
        # Under-segmentation: a matched segment over most of another, unclaimed instance.
        confirmed = np.array([self.table.get(int(i)).status == InstanceStatus.CONFIRMED
                              for i in visible_ids], bool)
        split = (allowed & (seg_instance > 0)[:, None] & ~col_claimed[None, :]
                 & (confirmed & (visible_counts >= cfg.min_visible_samples))[None, :]
                 & (overlap >= cfg.split_coverage * visible_counts[None, :]))
        splits: list[tuple[int, int]] = []
        for c in np.flatnonzero(split.any(axis=0)):
            r = int(np.argmax(np.where(split[:, c], overlap[:, c], -1)))
            splits.append((r, int(visible_ids[c])))
        # New candidates for unmatched segments with enough support.
        for r in np.flatnonzero((seg_instance == 0) & (seg_total >= cfg.min_new_instance_samples)):
            parent = NO_INSTANCE_ID
            if num_inst:
                support = np.where(compat[r] >= cfg.min_class_compatibility, overlap[r], 0)
                best = int(np.argmax(support))
                if support[best] >= max(cfg.min_overlap_samples,
                                        cfg.min_match_containment * seg_mapped[r]):
                    parent = int(visible_ids[best])
            seg_instance[r] = self.table.create(True, frame_index, parent_id=parent).id
            result.num_new += 1
        targets = np.where(seg_instance > 0, seg_instance, NO_VOTE)
        result.sample_instance[in_seg] = targets[sample_segment[in_seg]]
        co_segmented: list[tuple[int, int]] = []
        for r, other in splits:
            result.sample_instance[(sample_segment == r) & (sample_map_id == other)] = other
            self._observe(self.table.get(other), segments[r], frame_index)
            co_segmented.append((int(seg_instance[r]), other))
        result.num_splits = len(splits)
        matched_ids: dict[int, int] = {}
        for r in np.flatnonzero(seg_instance > 0):
            inst = int(seg_instance[r])
            matched_ids[int(r)] = inst
            self._observe(self.table.get(inst), segments[r], frame_index)
            result.segment_to_instance[segments[r].segment_id] = inst
        self._grow_bounds(result.sample_instance, sample_points_m)
        updated = self._update_pair_stats(co_segmented, matched_ids, visible_ids, visible_counts)
        self._finish_frame(frame_index, updated)
        return result

    def _observe(self, record: InstanceRecord, segment: ThingSegment, frame_index: int) -> None:
        if record.last_frame != frame_index or record.num_observations == 0:
            record.num_observations += 1
        record.last_frame = frame_index
        record.label_evidence[segment.channel] += segment.score

    def _grow_bounds(self, sample_instance: np.ndarray, points_m: np.ndarray) -> None:
        """Grow each voted instance's box by the 5-95 % range of this frame's samples on it."""
        voted = sample_instance > 0
        voted[1::2] = False  # every other sample is plenty for a 5-95 % range
        inst, points = sample_instance[voted], points_m[voted]
        if inst.size == 0:
            return
        order = np.argsort(inst, kind="stable")
        inst, points = inst[order], points[order]
        starts = np.flatnonzero(np.r_[True, inst[1:] != inst[:-1]])
        counts = np.diff(np.r_[starts, inst.size])
        lo_at = starts + np.floor(0.05 * (counts - 1)).astype(np.int64)
        hi_at = starts + np.ceil(0.95 * (counts - 1)).astype(np.int64)
        # Sort each axis within each instance at once: instance in the high bits, the
        # coordinate (in 0.1 mm, offset to be positive) in the low 40 bits.
        quantized = np.clip(np.rint(points * 1e4) + (1 << 39), 0, (1 << 40) - 1).astype(np.int64)
        lo = np.empty((starts.size, 3))
        hi = np.empty((starts.size, 3))
        for axis in range(3):
            values = np.sort((inst << 40) | quantized[:, axis])
            coords = ((values & ((1 << 40) - 1)) - (1 << 39)) * 1e-4
            lo[:, axis], hi[:, axis] = coords[lo_at], coords[hi_at]
        for k in np.flatnonzero(counts >= 3):
            record = self.table.get(int(inst[starts[k]]))
            record.bounds_min_m = np.minimum(record.bounds_min_m, lo[k])
            record.bounds_max_m = np.maximum(record.bounds_max_m, hi[k])

    def _update_pair_stats(self, co_segmented: list[tuple[int, int]],
                           matched_ids: dict[int, int], visible_ids: np.ndarray,
                           visible_counts: np.ndarray) -> set[tuple[int, int]]:
        """Count co- and separate segmentations; returns the co-segmented pairs (the only
        ones whose merge test can have changed).

        Separate segmentations are counted for pairs that could ever be merged: instances
        whose boxes come within ``merge_neighbour_margin_m`` of each other.
        """
        updated = {self.pairs.add_co_segmented(a, b) for a, b in co_segmented}
        visible = visible_ids[visible_counts >= self.config.min_visible_samples]
        separately = np.intersect1d(np.fromiter(matched_ids.values(), np.int64), visible)
        if separately.size < 2:
            return updated
        records = [self.table.get(int(i)) for i in separately]
        lo = np.stack([r.bounds_min_m for r in records])
        hi = np.stack([r.bounds_max_m for r in records])
        gap = np.maximum(lo[:, None], lo[None]) - np.minimum(hi[:, None], hi[None])
        near = np.all(gap <= self.config.merge_neighbour_margin_m, axis=2)
        i, j = np.nonzero(np.triu(near, k=1))
        self.pairs.add_separate(separately[i], separately[j])
        return updated

    # ---- life cycle ------------------------------------------------------------------------
    def _finish_frame(self, frame_index: int,
                      updated_pairs: set[tuple[int, int]] | None = None) -> None:
        cfg = self.config
        for record in self.table.alive(things_only=True):
            if record.status == InstanceStatus.CANDIDATE:
                if record.num_observations >= cfg.confirm_observations:
                    self.table.set_status(record.id, InstanceStatus.CONFIRMED)
                elif frame_index - record.last_frame > cfg.retire_after_frames:
                    self.table.set_status(record.id, InstanceStatus.RETIRED)
        self._merge_duplicates(updated_pairs or set())
        if cfg.merge_box_overlap > 0 and frame_index % cfg.merge_box_interval_frames == 0:
            self._merge_overlapping_boxes()

    def _merge_duplicates(self, updated_pairs: set[tuple[int, int]]) -> None:
        cfg = self.config
        for key in sorted(updated_pairs):
            co, sep = self.pairs.counts(*key)
            if co < cfg.merge_min_frames or co < cfg.merge_ratio * (co + sep):
                continue
            ra, rb = self.table.get(key[0]), self.table.get(key[1])
            if ra.alive and rb.alive and self._labels_compatible(ra, rb):
                self._merge(ra, rb)

    def _merge_overlapping_boxes(self) -> None:
        cfg = self.config
        confirmed = [r for r in self.table.alive(things_only=True)
                     if r.status == InstanceStatus.CONFIRMED]
        if len(confirmed) < 2:
            return
        lo = np.stack([r.bounds_min_m for r in confirmed])
        hi = np.stack([r.bounds_max_m for r in confirmed])
        volume = np.where(np.all(hi > lo, axis=1), np.prod(hi - lo, axis=1), 0.0)
        boxed = [r for r, v in zip(confirmed, volume) if v >= cfg.merge_box_min_volume_m3]
        if len(boxed) < 2:
            return
        keep = volume >= cfg.merge_box_min_volume_m3
        lo, hi, volume = lo[keep], hi[keep], volume[keep]
        inter = np.prod(np.clip(np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None],
                                                                               lo[None]),
                                0.0, None), axis=2)
        smaller = np.minimum(volume[:, None], volume[None])
        rows, cols = np.nonzero(np.triu(inter >= cfg.merge_box_overlap * smaller, k=1))
        for i, j in zip(rows, cols):
            ra, rb = boxed[i], boxed[j]
            if (ra.alive and rb.alive and self.pairs.separate(ra.id, rb.id) == 0
                    and self._labels_compatible(ra, rb)):
                self._merge(ra, rb)

    def _labels_compatible(self, ra: InstanceRecord, rb: InstanceRecord) -> bool:
        da, db = ra.label_distribution(), rb.label_distribution()
        if not (da.any() and db.any()):
            return True
        return float(da @ self._compat @ db) >= self.config.min_class_compatibility

    def _merge(self, ra: InstanceRecord, rb: InstanceRecord) -> None:
        keep, drop = (ra, rb) if ra.id < rb.id else (rb, ra)
        self.table.merge(keep.id, drop.id)
        self.pairs.replace_id(drop.id, keep.id)

    def rename(self, current_id: int, wanted_id: int) -> None:
        """Serve instance (or stuff region) ``current_id`` as the unused ``wanted_id``
        (``InstanceTable.rename``), keeping the pair statistics and stuff regions."""
        self.table.rename(current_id, wanted_id)
        self.pairs.replace_id(current_id, wanted_id)
        for channel, region in self.stuff_regions.items():
            if region == current_id:
                self.stuff_regions[channel] = wanted_id

    def finalize(self) -> None:
        """Retire every candidate that was never confirmed (end of the sequence)."""
        for record in self.table.alive(things_only=True):
            if record.status == InstanceStatus.CANDIDATE:
                self.table.set_status(record.id, InstanceStatus.RETIRED)

    # ---- state -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"table": self.table.to_dict(),
                "stuff_regions": {str(k): v for k, v in self.stuff_regions.items()},
                "pair_stats": self.pairs.to_dict()}

    def load_dict(self, data: dict) -> None:
        self.table.load_dict(data["table"])
        self.stuff_regions = {int(k): int(v) for k, v in data["stuff_regions"].items()}
        self.pairs = PairStats()
        self.pairs.load_dict(data["pair_stats"])

    def reset(self) -> None:
        self.table = InstanceTable(self.channels.count)
        self.stuff_regions = {}
        self.pairs = PairStats()
