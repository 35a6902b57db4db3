"""Keyframes of the refined map: selection, compact storage and ray sampling for training.

A keyframe keeps, downsampled by ``KeyframeConfig.image_scale``: depth, the per-pixel semantic
class and the per-pixel index of its 2D thing mask (per-frame ids, not associated across frames),
plus the pose and scaled intrinsics. Rays are drawn from keyframes as world-frame origin,
direction and observed range (distance along the ray, not z-depth).

Owns: :class:`KeyframeSelector`, :class:`Keyframe`, :class:`KeyframeStore` (thread-safe) and
:class:`RayBatch`. Does not own: what the rays are used for (``trainer.py``).
"""
from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import KeyframeConfig
from panoptic_mapper.core.geometry.camera import world_rays
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import (NO_SEGMENT_ID, CameraIntrinsics,
                                        PanopticSegmentation2D, RgbdFrame)

NO_MASK = -1
"""Thing-mask index of pixels outside every thing mask."""


@dataclass
class KeyframeSelector:
    """Keyframe policy: enough translation, rotation or time since the last keyframe."""

    config: KeyframeConfig
    last_T_world_cam: np.ndarray | None = None
    """Pose of the last keyframe (None before the first)."""
    last_stamp_ns: int = 0
    """Stamp of the last keyframe."""

    def is_keyframe(self, T_world_cam: np.ndarray, stamp_ns: int) -> bool:  # noqa: N803
        """Whether a frame at this pose and time should be kept (does not change state)."""
        if self.last_T_world_cam is None:
            return True
        moved = float(np.linalg.norm(T_world_cam[:3, 3] - self.last_T_world_cam[:3, 3]))
        turned = rotation_angle_deg(self.last_T_world_cam[:3, :3], T_world_cam[:3, :3])
        waited = (stamp_ns - self.last_stamp_ns) * 1e-9
        return (moved >= self.config.min_translation_m or turned >= self.config.min_rotation_deg
                or waited >= self.config.max_interval_s)

    def accept(self, T_world_cam: np.ndarray, stamp_ns: int) -> None:  # noqa: N803
        """Record that a frame was kept."""
        self.last_T_world_cam = np.array(T_world_cam, np.float64)
        self.last_stamp_ns = int(stamp_ns)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:  # noqa: N803
    """Angle of the relative rotation between two rotation matrices, degrees."""
    cos = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))


@dataclass
class Keyframe:
    """One stored training view (downsampled)."""

    stamp_ns: int
    T_world_cam: np.ndarray
    """[4, 4] float64 camera-to-world."""
    intrinsics: CameraIntrinsics
    """Intrinsics of the stored (downsampled) images."""
    depth_m: np.ndarray
    """[h, w] float32 z-depth, metres (0 = invalid)."""
    semantic_class: np.ndarray
    """[h, w] int16 semantic class index (0 = unlabelled or unknown label)."""
    thing_mask: np.ndarray
    """[h, w] int16 index into ``thing_classes`` of the pixel's 2D thing mask, or NO_MASK."""
    thing_classes: np.ndarray
    """[L] int64 token class (1..T) of each 2D thing mask."""
    has_segmentation: bool
    """False when the frame came without a 2D segmentation (geometry only)."""
    rgb: np.ndarray | None = None
    """[h, w, 3] uint8, only with ``KeyframeConfig.keep_rgb``."""
    score: np.ndarray | None = None
    """[h, w] uint8 detection score of the pixel's segment times 255 (None: all 1)."""
    _valid: np.ndarray | None = field(default=None, repr=False)
    _segments: list[np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def from_frame(cls, frame: RgbdFrame, segmentation: PanopticSegmentation2D | None,
                   classes: ClassSpace, registry: LabelRegistry, config: KeyframeConfig,
                   ) -> tuple["Keyframe", list[str]]:
        """Downsample a frame and its segmentation; returns the keyframe and warnings.

        Segments whose label is unknown to the registry become unlabelled (with a warning); the
        registry, not the segment, decides thing or stuff.

        Raises:
            InvalidInputError: the segmentation's size differs from the frame's.
        """
        if segmentation is not None and segmentation.shape != frame.intrinsics.shape:
            raise InvalidInputError("segmentation", list(segmentation.shape),
                                    f"segmentation size differs from the frame "
                                    f"{list(frame.intrinsics.shape)}", kind="size_mismatch")
        warnings: list[str] = []
        intrinsics = frame.intrinsics.scaled(config.image_scale)
        rows, cols = _nearest_source_pixels(frame.intrinsics, intrinsics)
        depth = frame.depth_m[rows[:, None], cols[None, :]].astype(np.float32)
        height, width = depth.shape
        semantic = np.zeros((height, width), np.int16)
        thing = np.full((height, width), NO_MASK, np.int16)
        score = np.zeros((height, width), np.uint8)
        thing_classes: list[int] = []
        if segmentation is not None:
            ids = segmentation.segment_ids[rows[:, None], cols[None, :]]
            lut_class = np.zeros(int(ids.max(initial=0)) + 1, np.int16)
            lut_thing = np.full(len(lut_class), NO_MASK, np.int16)
            lut_score = np.zeros(len(lut_class), np.uint8)
            for seg in segmentation.segments:
                if seg.id >= len(lut_class):
                    continue
                if seg.label_id not in registry:
                    warnings.append(f"segment {seg.id}: label_id={seg.label_id} ('{seg.label}') "
                                    "is unknown to the label registry; its pixels are ignored")
                    continue
                semantic_class = int(classes.label_to_semantic_class(np.array([seg.label_id]))[0])
                lut_class[seg.id] = semantic_class
                lut_score[seg.id] = int(round(255 * seg.score))
                token_class = int(classes.semantic_to_token_class(np.array([semantic_class]))[0])
                if token_class > 0:
                    lut_thing[seg.id] = len(thing_classes)
                    thing_classes.append(token_class)
            lut_class[NO_SEGMENT_ID] = 0
            lut_thing[NO_SEGMENT_ID] = NO_MASK
            lut_score[NO_SEGMENT_ID] = 0
            semantic = lut_class[ids]
            thing = lut_thing[ids]
            score = lut_score[ids]
        rgb = frame.rgb[rows[:, None], cols[None, :]].copy() if config.keep_rgb else None
        keyframe = cls(frame.stamp_ns, frame.T_world_cam.copy(), intrinsics, depth, semantic,
                       thing, np.asarray(thing_classes, np.int64), segmentation is not None, rgb,
                       score)
        return keyframe, warnings

    @property
    def num_masks(self) -> int:
        """L: number of 2D thing masks."""
        return len(self.thing_classes)

    def valid_pixels(self, near_m: float) -> np.ndarray:
        """Flat indices of pixels with depth >= ``near_m`` (cached)."""
        if self._valid is None:
            self._valid = np.flatnonzero(self.depth_m.reshape(-1) >= near_m)
        return self._valid

    def segment_pixels(self, near_m: float) -> list[np.ndarray]:
        """Flat valid-pixel indices per 2D segment: thing masks, then stuff classes (cached)."""
        if self._segments is None:
            valid = self.valid_pixels(near_m)
            thing = self.thing_mask.reshape(-1)[valid]
            semantic = self.semantic_class.reshape(-1)[valid]
            groups = [valid[thing == m] for m in range(self.num_masks)]
            stuff = (thing == NO_MASK) & (semantic > 0)
            groups += [valid[stuff & (semantic == c)] for c in np.unique(semantic[stuff])]
            self._segments = [g for g in groups if len(g)]
        return self._segments

    def camera_rays(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World origins [R, 3], unit directions [R, 3] and observed ranges [R] of flat pixels."""
        v, u = np.divmod(pixels, self.intrinsics.width)
        origins, directions, range_per_depth = world_rays(self.T_world_cam, self.intrinsics,
                                                          u, v)
        return origins, directions, self.depth_m.reshape(-1)[pixels] * range_per_depth

    def surface_points(self, pixels: np.ndarray) -> np.ndarray:
        """[R, 3] world points observed at flat pixels (depth back-projected)."""
        origins, directions, ranges = self.camera_rays(pixels)
        return origins + directions * ranges[:, None]

    def nbytes(self) -> int:
        """Memory held by the images."""
        arrays = [self.depth_m, self.semantic_class, self.thing_mask]
        arrays += [a for a in (self.rgb, self.score) if a is not None]
        return int(sum(a.nbytes for a in arrays))


def _nearest_source_pixels(source: CameraIntrinsics,
                           target: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Source row and column of each target pixel centre (pixel-centre convention)."""
    sy = target.height / source.height
    sx = target.width / source.width
    rows = np.clip(np.round((np.arange(target.height) + 0.5) / sy - 0.5), 0, source.height - 1)
    cols = np.clip(np.round((np.arange(target.width) + 0.5) / sx - 0.5), 0, source.width - 1)
    return rows.astype(np.int64), cols.astype(np.int64)


@dataclass
class RayBatch:
    """Rays drawn from keyframes, with their supervision (all first dimensions R)."""

    origins_m: torch.Tensor
    """[R, 3]."""
    directions: torch.Tensor
    """[R, 3] unit."""
    observed_range_m: torch.Tensor
    """[R] range to the observed surface, metres."""
    semantic_class: torch.Tensor
    """[R] int64 target semantic class (0 = ignore)."""
    thing_mask: torch.Tensor
    """[R] int64 index of the frame's 2D thing mask, or NO_MASK."""
    score: torch.Tensor
    """[R] float32 detection score of the pixel's segment (1 without scores)."""

    @property
    def num_rays(self) -> int:
        return int(self.origins_m.shape[0])

    def to(self, device: torch.device) -> "RayBatch":
        """The same rays on ``device`` (``self`` when already there)."""
        if self.origins_m.device == device:
            return self
        return RayBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def surface_points(self) -> torch.Tensor:
        """[R, 3] observed surface points."""
        return self.origins_m + self.directions * self.observed_range_m[:, None]


def make_ray_batch(keyframe: Keyframe, pixels: np.ndarray) -> RayBatch:
    """The rays of ``pixels`` (flat indices) of one keyframe."""
    origins, directions, ranges = keyframe.camera_rays(pixels)
    score = (np.ones(len(pixels), np.float32) if keyframe.score is None
             else keyframe.score.reshape(-1)[pixels].astype(np.float32) / 255.0)
    return RayBatch(
        torch.from_numpy(np.ascontiguousarray(origins, np.float32)),
        torch.from_numpy(np.ascontiguousarray(directions, np.float32)),
        torch.from_numpy(ranges.astype(np.float32)),
        torch.from_numpy(keyframe.semantic_class.reshape(-1)[pixels].astype(np.int64)),
        torch.from_numpy(keyframe.thing_mask.reshape(-1)[pixels].astype(np.int64)),
        torch.from_numpy(score))


def concat_ray_batches(batches: list[RayBatch]) -> RayBatch:
    """One batch of all rays, in order."""
    return RayBatch(*(torch.cat([getattr(b, name) for b in batches]) for name in
                      ("origins_m", "directions", "observed_range_m", "semantic_class",
                       "thing_mask", "score")))


class KeyframeStore:
    """The keyframes, shared between the integrating thread and the training thread."""

    def __init__(self, config: KeyframeConfig, near_m: float):
        self.config = config
        self.near_m = near_m
        self._keyframes: list[Keyframe] = []
        self._lock = threading.Lock()
        self.version = 0
        """Incremented whenever the set of keyframes changes."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._keyframes)

    def add(self, keyframe: Keyframe) -> int | None:
        """Store a keyframe; returns the position of an evicted one when the store was full."""
        keyframe.valid_pixels(self.near_m)
        keyframe.segment_pixels(self.near_m)
        with self._lock:
            evicted = None
            if len(self._keyframes) >= self.config.max_keyframes:
                evicted = _most_redundant(self._keyframes)
                del self._keyframes[evicted]
            self._keyframes.append(keyframe)
            self.version += 1
            return evicted

    def snapshot(self) -> list[Keyframe]:
        """The current keyframes (a new list; keyframes themselves are never modified)."""
        with self._lock:
            return list(self._keyframes)

    def move_keyframes(self, T_world_cam_by_stamp: dict[int, np.ndarray]) -> int:  # noqa: N803
        """Give the keyframes with these stamps new poses (a loop correction); returns how
        many moved. Keyframes are replaced, not modified (readers hold snapshots)."""
        with self._lock:
            moved = 0
            for i, keyframe in enumerate(self._keyframes):
                T = T_world_cam_by_stamp.get(keyframe.stamp_ns)  # noqa: N806
                if T is not None:
                    self._keyframes[i] = dataclasses.replace(
                        keyframe, T_world_cam=np.array(T, np.float64),
                        _valid=keyframe._valid, _segments=keyframe._segments)
                    moved += 1
            if moved:
                self.version += 1
            return moved

    def replace_all(self, keyframes: list[Keyframe]) -> None:
        """Swap in a complete set (used by ``load``)."""
        for keyframe in keyframes:
            keyframe.valid_pixels(self.near_m)
            keyframe.segment_pixels(self.near_m)
        with self._lock:
            self._keyframes = list(keyframes)
            self.version += 1


def _most_redundant(keyframes: list[Keyframe]) -> int:
    """Index of the keyframe whose camera is closest to another keyframe's camera."""
    centres = np.stack([k.T_world_cam[:3, 3] for k in keyframes])
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    return int(np.argmin(distance.min(axis=1)))


def sample_geometry_rays(keyframes: list[Keyframe], num_rays: int, near_m: float,
                         rng: np.random.Generator) -> RayBatch:
    """``num_rays`` rays with valid depth, from keyframes drawn uniformly at random."""
    usable = [k for k in keyframes if len(k.valid_pixels(near_m))]
    counts = np.bincount(rng.integers(0, len(usable), num_rays), minlength=len(usable))
    batches = []
    for keyframe, count in zip(usable, counts):
        if count:
            valid = keyframe.valid_pixels(near_m)
            batches.append(make_ray_batch(keyframe, valid[rng.integers(0, len(valid), count)]))
    return concat_ray_batches(batches)


def sample_segmentation_pixels(keyframe: Keyframe, num_rays: int, balanced_fraction: float,
                               near_m: float, rng: np.random.Generator) -> np.ndarray:
    """Flat pixels of one keyframe: a share spread equally over its 2D segments (so small masks
    get rays), the rest uniform over pixels with valid depth."""
    valid = keyframe.valid_pixels(near_m)
    segments = keyframe.segment_pixels(near_m)
    num_balanced = int(round(num_rays * balanced_fraction)) if segments else 0
    parts = [valid[rng.integers(0, len(valid), num_rays - num_balanced)]]
    if num_balanced:
        per_segment = np.bincount(rng.integers(0, len(segments), num_balanced),
                                  minlength=len(segments))
        parts += [seg[rng.integers(0, len(seg), n)] for seg, n in zip(segments, per_segment) if n]
    return np.concatenate(parts)
