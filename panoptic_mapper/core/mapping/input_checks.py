"""Checks on a frame and its segmentation before a map touches them.

Frames are validated when they are built (``core/types.py``), but the arrays are mutable and a
map must never be corrupted by what reaches it, so the checks are repeated here, together with
the ones that need map context: enough valid depth in range, a segmentation of the same size,
labels known to the registry, and a pose that does not jump away from the previous one.

A jump is judged in velocity terms against the last accepted pose: the camera may have moved
``jump_tolerance_m + max_speed_m_s * dt`` and turned ``jump_tolerance_deg + max_turn_rate_deg_s *
dt``, where ``dt`` is the stamp time elapsed since that frame. So frames that a busy node skipped
in between (or a slow sensor) never turn normal motion into a rejection, while a pose that leaps
within one frame interval (a SLAM glitch) is still caught. If the camera really was relocated (a
SLAM re-localisation), frames keep arriving at the new place: once ``jump_recovery_frames``
consecutive rejected frames agree with each other (each within the per-frame tolerance of the
one before, scaled by their own stamp gap), the new place is accepted.

Owns: :class:`InputChecksConfig`, :class:`FrameChecker`. Does not own: integration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels.registry import LabelRegistry
from panoptic_mapper.core.types import (PanopticSegmentation2D, RgbdFrame, Segment,
                                        check_depth_values, validate_rigid_transform)


@dataclass
class InputChecksConfig(ConfigBase):
    """Thresholds that decide whether a frame is integrated."""

    min_valid_depth_fraction: float = 0.01
    """Reject frames where less than this share of pixels has depth in the integration range."""
    max_speed_m_s: float = 3.0
    """Fastest plausible camera speed, m/s: a frame whose camera moved more than
    ``jump_tolerance_m + max_speed_m_s * dt`` from the last accepted frame (``dt``: stamp time
    between them) is rejected as a pose jump. 3 m/s is above hand-held scanning (0.2-1 m/s) and
    indoor robots (<= 2 m/s)."""
    max_turn_rate_deg_s: float = 360.0
    """Fastest plausible camera turn rate, deg/s (same rule as ``max_speed_m_s``); one turn per
    second is beyond hand-held and robot motion."""
    jump_tolerance_m: float = 0.05
    """Motion allowed whatever the elapsed time, m (pose noise, stamp jitter)."""
    jump_tolerance_deg: float = 5.0
    """Rotation allowed whatever the elapsed time, deg."""
    jump_check_max_gap_s: float = 2.0
    """No jump check when the last accepted frame is older than this, s (0 = always check)."""
    jump_recovery_frames: int = 5
    """Accept a new place after this many consecutive rejected frames that agree with each
    other (a re-localised camera rather than a glitch)."""

    def validate(self) -> None:
        require(0.0 <= self.min_valid_depth_fraction <= 1.0, "min_valid_depth_fraction",
                self.min_valid_depth_fraction, "must be in [0, 1]")
        require(self.max_speed_m_s > 0.0, "max_speed_m_s", self.max_speed_m_s,
                "must be > 0 m/s")
        require(self.max_turn_rate_deg_s > 0.0, "max_turn_rate_deg_s",
                self.max_turn_rate_deg_s, "must be > 0 deg/s")
        require(self.jump_tolerance_m >= 0.0, "jump_tolerance_m", self.jump_tolerance_m,
                "must be >= 0 m")
        require(0.0 <= self.jump_tolerance_deg <= 180.0, "jump_tolerance_deg",
                self.jump_tolerance_deg, "must be in [0, 180] deg")
        require(self.jump_check_max_gap_s >= 0.0, "jump_check_max_gap_s",
                self.jump_check_max_gap_s, "must be >= 0 s")
        require(self.jump_recovery_frames >= 1, "jump_recovery_frames",
                self.jump_recovery_frames, "must be >= 1")


@dataclass
class CheckedInput:
    """Outcome of the checks for one frame."""

    reject_reason: str = ""
    """Empty when the frame may be integrated."""
    warnings: list[str] = field(default_factory=list)
    segments: tuple[Segment, ...] = ()
    """The usable segments (unknown labels removed, label and thing flag from the registry)."""
    segment_ids: np.ndarray | None = None
    """[H, W] int32 id image, with pixels of removed segments set to 0 (None: no input)."""
    depth_m: np.ndarray | None = None
    """[H, W] float32 depth with values outside the integration range set to 0."""

    @property
    def accepted(self) -> bool:
        return not self.reject_reason


def _rotation_angle_deg(R: np.ndarray) -> float:  # noqa: N803
    cos = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _motion(A: np.ndarray, B: np.ndarray) -> tuple[float, float]:  # noqa: N803
    """(translation m, rotation deg) between two camera poses."""
    return (float(np.linalg.norm(B[:3, 3] - A[:3, 3])),
            _rotation_angle_deg(A[:3, :3].T @ B[:3, :3]))


class FrameChecker:
    """Stateful checks (the pose-jump guard remembers the last accepted pose)."""

    def __init__(self, config: InputChecksConfig, registry: LabelRegistry,
                 depth_min_m: float, depth_max_m: float):
        self.config = config
        self.registry = registry
        self.depth_min_m = depth_min_m
        self.depth_max_m = depth_max_m
        self.last_pose: np.ndarray | None = None
        self.last_stamp_ns = 0
        self._pending: list[tuple[np.ndarray, int]] = []
        """Consecutive rejected poses (with stamps) that agree with each other."""

    def check(self, frame: RgbdFrame,
              segmentation: PanopticSegmentation2D | None) -> CheckedInput:
        """Run every check; never raises on bad input."""
        try:
            T = validate_rigid_transform(frame.T_world_cam, "T_world_cam")  # noqa: N806
            depth = np.asarray(frame.depth_m, np.float32)
            if depth.shape != frame.intrinsics.shape:
                raise InvalidInputError("depth_m", list(depth.shape),
                                        f"must match the camera {frame.intrinsics.shape}",
                                        kind="size_mismatch")
            check_depth_values(depth)
            rgb = np.asarray(frame.rgb)
            if rgb.dtype != np.uint8 or rgb.shape != depth.shape + (3,):
                raise InvalidInputError("rgb", f"{rgb.dtype}{list(rgb.shape)}",
                                        f"colour image must be uint8 {list(depth.shape) + [3]}",
                                        kind="encoding")
        except InvalidInputError as exc:
            return CheckedInput(reject_reason=str(exc))
        in_range = (depth >= self.depth_min_m) & (depth <= self.depth_max_m)
        fraction = float(in_range.mean()) if depth.size else 0.0
        if not in_range.any() or fraction < self.config.min_valid_depth_fraction:
            return CheckedInput(reject_reason=(
                f"depth_m: {fraction:.1%} of pixels have depth in "
                f"[{self.depth_min_m}, {self.depth_max_m}] m; need at least "
                f"{self.config.min_valid_depth_fraction:.1%} (no usable depth)"))
        jump = self._jump_reason(T, frame.stamp_ns)
        if jump:
            return CheckedInput(reject_reason=jump)
        result = CheckedInput(depth_m=np.where(in_range, depth, np.float32(0.0)))
        if segmentation is not None:
            if tuple(segmentation.segment_ids.shape) != tuple(depth.shape):
                result.reject_reason = (
                    f"segmentation.segment_ids: size {list(segmentation.segment_ids.shape)} "
                    f"differs from the depth image {list(depth.shape)}")
                return result
            self._check_segments(segmentation, result)
        return result

    def _check_segments(self, segmentation: PanopticSegmentation2D,
                        result: CheckedInput) -> None:
        usable: list[Segment] = []
        dropped: list[int] = []
        for seg in segmentation.segments:
            try:
                label = self.registry.resolve(seg.label, seg.label_id or None, seg.phrase)
            except InvalidInputError as exc:
                result.warnings.append(f"segment {seg.id} (label '{seg.label}', label_id "
                                       f"{seg.label_id}) skipped: {exc}")
                dropped.append(seg.id)
                continue
            if label.is_thing != seg.is_thing:
                result.warnings.append(
                    f"segment {seg.id}: is_thing={seg.is_thing} disagrees with the registry "
                    f"label '{label.name}' (is_thing={label.is_thing}); using the registry")
            if (seg.label, seg.label_id, seg.is_thing) == (label.name, label.id,
                                                            label.is_thing):
                usable.append(seg)
            else:
                usable.append(Segment(id=seg.id, label=label.name, label_id=label.id,
                                      is_thing=label.is_thing, score=seg.score,
                                      phrase=seg.phrase))
        ids = np.asarray(segmentation.segment_ids, np.int32)
        if dropped:
            ids = np.where(np.isin(ids, dropped), 0, ids).astype(np.int32)
        result.segments = tuple(usable)
        result.segment_ids = ids

    def _jump_reason(self, T: np.ndarray, stamp_ns: int) -> str:  # noqa: N803
        cfg = self.config
        if self.last_pose is None:
            return ""
        gap_s = abs(stamp_ns - self.last_stamp_ns) * 1e-9
        if cfg.jump_check_max_gap_s > 0 and gap_s > cfg.jump_check_max_gap_s:
            return ""
        moved, turned = _motion(self.last_pose, T)
        max_m, max_deg = self._allowed_motion(gap_s)
        if moved <= max_m and turned <= max_deg:
            return ""
        if self._pending:
            last_T, last_stamp = self._pending[-1]  # noqa: N806
            step_m, step_deg = _motion(last_T, T)
            allowed_m, allowed_deg = self._allowed_motion(abs(stamp_ns - last_stamp) * 1e-9)
            if step_m > allowed_m or step_deg > allowed_deg:
                self._pending = []
        self._pending.append((T, int(stamp_ns)))
        if len(self._pending) >= cfg.jump_recovery_frames:
            return ""
        return (f"T_world_cam: pose jumped {moved:.2f} m / {turned:.1f} deg in {gap_s:.3f} s "
                f"from the last accepted frame ({moved / max(gap_s, 1e-9):.2f} m/s, "
                f"{turned / max(gap_s, 1e-9):.0f} deg/s; allowed {max_m:.2f} m / "
                f"{max_deg:.1f} deg: jump_tolerance_m + max_speed_m_s * dt, "
                "jump_tolerance_deg + max_turn_rate_deg_s * dt)")

    def _allowed_motion(self, gap_s: float) -> tuple[float, float]:
        """(metres, degrees) the camera may move and turn in ``gap_s`` seconds."""
        cfg = self.config
        return (cfg.jump_tolerance_m + cfg.max_speed_m_s * gap_s,
                cfg.jump_tolerance_deg + cfg.max_turn_rate_deg_s * gap_s)

    def accept(self, frame: RgbdFrame) -> None:
        """Record an integrated frame as the new jump reference."""
        self.last_pose = np.asarray(frame.T_world_cam, np.float64).copy()
        self.last_stamp_ns = int(frame.stamp_ns)
        self._pending = []

    def to_dict(self) -> dict:
        return {"last_pose": None if self.last_pose is None else self.last_pose.tolist(),
                "last_stamp_ns": self.last_stamp_ns}

    def load_dict(self, data: dict) -> None:
        pose = data.get("last_pose")
        self.last_pose = None if pose is None else np.asarray(pose, np.float64)
        self.last_stamp_ns = int(data.get("last_stamp_ns", 0))
        self._pending = []

    def reset(self) -> None:
        self.last_pose = None
        self.last_stamp_ns = 0
        self._pending = []
