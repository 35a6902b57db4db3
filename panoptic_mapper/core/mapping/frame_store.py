"""The fused frames kept so that a loop-closure correction can fuse them again.

Every accepted frame leaves its stamp and fused pose (the pose history, 136 bytes a frame).
Frames that moved at least ``min_distance_m`` or turned ``min_angle_deg`` since the last kept one
(by default every frame of a moving camera; every frame while ``keep_all`` is set, during a
rebuild) also keep their images: depth (uint16 millimetres) and segment ids at full resolution,
compressed losslessly (zlib), and colour subsampled by ``color_stride_px``; their 2D segments;
and the map instance ids their pixels voted for (``instance_votes``: how a rebuilt map inherits
the ids the planner saw, ``map_rebuild``).

Why full-resolution depth and segments: a rebuild from half-resolution frames at the true poses
split 2 objects of a 300-frame scene that the same frames at full resolution kept whole (PQ 89.2
against 94.5, BENCHMARKS.md): the tracker's association is sensitive to the fused surface and the
masks at object edges. Colour only tints the mesh, so it is kept at half resolution.

ROS-free. Owns: :class:`FrameStoreConfig`, :class:`StoredFrame`, :class:`FrameStore`.
"""
from __future__ import annotations

import math
import threading
import zlib
from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.types import (CameraIntrinsics, PanopticSegmentation2D, RgbdFrame)

DEPTH_UNIT_M = 0.001
"""Stored depth is uint16 millimetres (0 = no depth; beyond 65.5 m is clipped)."""


@dataclass
class FrameStoreConfig(ConfigBase):
    """Which fused frames are kept for loop-closure corrections, and how."""

    enabled: bool = True
    """Keep frames (False: corrections cannot be applied; the pose history is still kept)."""
    color_stride_px: int = 2
    """Keep every n-th colour pixel in both directions (1: full resolution); depth and segment
    ids are always kept whole (compressed)."""
    min_distance_m: float = 0.01
    """Keep a frame's images once the camera moved this far since the last kept frame, m ...
    (the default keeps every frame of a moving camera: a rebuild from every 5 cm / 5 deg
    scored 3.6 PQ lower than from every frame on a 300-frame scene, BENCHMARKS.md)"""
    min_angle_deg: float = 1.0
    """... or turned this much, degrees."""
    max_frames: int = 3000
    """Most frames kept with images (5 min at 10 Hz); once reached, the older half is thinned
    to every second frame."""

    def validate(self) -> None:
        require(self.color_stride_px >= 1, "color_stride_px", self.color_stride_px,
                "must be >= 1")
        require(self.min_distance_m >= 0.0, "min_distance_m", self.min_distance_m,
                "must be >= 0")
        require(self.min_angle_deg >= 0.0, "min_angle_deg", self.min_angle_deg, "must be >= 0")
        require(self.max_frames >= 2, "max_frames", self.max_frames, "must be >= 2")


@dataclass
class StoredFrame:
    """One kept frame (see module docstring)."""

    stamp_ns: int
    rgb: np.ndarray
    """[h, w, 3] uint8, every ``color_stride``-th pixel."""
    color_stride: int
    depth_zlib: bytes
    """[H, W] uint16 millimetres, zlib-compressed."""
    intrinsics: CameraIntrinsics
    """Of the full-resolution images."""
    segment_ids_zlib: bytes | None
    """[H, W] int32 segment ids, zlib-compressed (None: the frame came without segmentation)."""
    segments: tuple
    """The 2D segments the ids refer to."""
    instance_votes: np.ndarray
    """[M, 3] int64 (segment id, map instance id as stored at fusion, samples)."""
    frame_id: str = "camera"

    @property
    def nbytes(self) -> int:
        return (self.rgb.nbytes + len(self.depth_zlib) + len(self.segment_ids_zlib or b"")
                + self.instance_votes.nbytes)

    @property
    def segmentation(self) -> PanopticSegmentation2D | None:
        """The 2D segmentation, decompressed."""
        if self.segment_ids_zlib is None:
            return None
        ids = np.frombuffer(zlib.decompress(self.segment_ids_zlib), np.int32)
        return PanopticSegmentation2D(ids.reshape(self.intrinsics.height, self.intrinsics.width),
                                      self.segments, self.stamp_ns)

    def to_frame(self, T_world_cam: np.ndarray) -> RgbdFrame:  # noqa: N803
        """The frame to fuse, at pose ``T_world_cam`` (colour upsampled by repetition)."""
        h, w = self.intrinsics.height, self.intrinsics.width
        depth = np.frombuffer(zlib.decompress(self.depth_zlib), np.uint16).reshape(h, w)
        s = self.color_stride
        rgb = self.rgb if s == 1 else np.repeat(np.repeat(self.rgb, s, 0), s, 1)[:h, :w]
        return RgbdFrame(stamp_ns=self.stamp_ns, rgb=np.ascontiguousarray(rgb),
                         depth_m=depth.astype(np.float32) * DEPTH_UNIT_M,
                         T_world_cam=T_world_cam, intrinsics=self.intrinsics,
                         frame_id=self.frame_id)


class FrameStore:
    """Pose history of all fused frames, images of the kept ones (module docstring).

    Thread safety: one writer (the map session's integration and rebuild, under its write
    lock); readers take :meth:`get_frames` and :meth:`get_pose_history` snapshots.
    """

    def __init__(self, config: FrameStoreConfig | None = None):
        self.config = config or FrameStoreConfig()
        self._lock = threading.Lock()
        self.keep_all = False
        """Keep every frame's images (while a rebuild runs, so it loses none)."""
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._stamps: list[int] = []
            self._poses: list[np.ndarray] = []
            self._frames: list[StoredFrame] = []
            self._frame_poses: list[np.ndarray] = []
            self._last_kept: np.ndarray | None = None

    # ---- writing -------------------------------------------------------------------------------
    def add(self, frame: RgbdFrame, segmentation: PanopticSegmentation2D | None,
            instance_votes: np.ndarray | None) -> bool:
        """Record a fused frame; True when its images were kept."""
        T = np.asarray(frame.T_world_cam, np.float64)  # noqa: N806
        with self._lock:
            self._stamps.append(int(frame.stamp_ns))
            self._poses.append(T)
            if not (self.config.enabled and (self.keep_all or self._moved_enough(T))):
                return False
            self._frames.append(self._compact(frame, segmentation, instance_votes))
            self._frame_poses.append(T)
            self._last_kept = T
            if len(self._frames) > self.config.max_frames and not self.keep_all:
                self._thin()
            return True

    def set_poses(self, stamps_ns: np.ndarray, T_world_cam: np.ndarray,  # noqa: N803
                  frame_poses: np.ndarray) -> None:
        """Replace the poses of the first ``len(stamps_ns)`` history entries and of the first
        ``len(frame_poses)`` kept frames (after a correction moved them)."""
        with self._lock:
            n = len(stamps_ns)
            assert self._stamps[:n] == [int(s) for s in stamps_ns], "history changed"
            self._poses[:n] = list(np.asarray(T_world_cam, np.float64))
            m = len(frame_poses)
            self._frame_poses[:m] = list(np.asarray(frame_poses, np.float64))
            if self._frame_poses:
                self._last_kept = self._frame_poses[-1]

    def _moved_enough(self, T: np.ndarray) -> bool:  # noqa: N803
        last = self._last_kept
        if last is None:
            return True
        cfg = self.config
        if np.linalg.norm(T[:3, 3] - last[:3, 3]) >= cfg.min_distance_m:
            return True
        cos_angle = (np.trace(last[:3, :3].T @ T[:3, :3]) - 1.0) / 2.0
        return math.degrees(math.acos(float(np.clip(cos_angle, -1.0, 1.0)))) >= cfg.min_angle_deg

    def _compact(self, frame: RgbdFrame, segmentation: PanopticSegmentation2D | None,
                 instance_votes: np.ndarray | None) -> StoredFrame:
        s = self.config.color_stride_px
        depth_mm = np.clip(np.nan_to_num(frame.depth_m, nan=0.0) / DEPTH_UNIT_M + 0.5,
                           0, 65535).astype(np.uint16)
        ids = None if segmentation is None else zlib.compress(
            np.ascontiguousarray(segmentation.segment_ids, np.int32), 1)
        votes = (np.zeros((0, 3), np.int64) if instance_votes is None
                 else np.asarray(instance_votes, np.int64).reshape(-1, 3))
        return StoredFrame(int(frame.stamp_ns), np.ascontiguousarray(frame.rgb[::s, ::s]), s,
                           zlib.compress(depth_mm, 1), frame.intrinsics, ids,
                           segmentation.segments if segmentation is not None else (), votes,
                           frame.frame_id)

    def _thin(self) -> None:
        """Drop every second kept frame of the older half (bounded memory on long runs)."""
        half = len(self._frames) // 2
        keep = list(range(0, half, 2)) + list(range(half, len(self._frames)))
        self._frames = [self._frames[i] for i in keep]
        self._frame_poses = [self._frame_poses[i] for i in keep]

    # ---- reading -------------------------------------------------------------------------------
    def get_pose_history(self) -> tuple[np.ndarray, np.ndarray]:
        """([N] int64 stamps, [N, 4, 4] poses) of every fused frame, in fusion order."""
        with self._lock:
            if not self._stamps:
                return np.zeros(0, np.int64), np.zeros((0, 4, 4))
            return np.asarray(self._stamps, np.int64), np.stack(self._poses)

    def get_frames(self) -> tuple[list[StoredFrame], np.ndarray]:
        """(kept frames, [K, 4, 4] their current poses), in fusion order."""
        with self._lock:
            poses = np.stack(self._frame_poses) if self._frame_poses else np.zeros((0, 4, 4))
            return list(self._frames), poses

    @property
    def num_frames(self) -> int:
        """Frames kept with images."""
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        """Memory held by the kept frames and the pose history, bytes."""
        with self._lock:
            return sum(f.nbytes for f in self._frames) + 136 * len(self._stamps)
