"""How the instant semantics node takes loop corrections: a ``nav_msgs/Path`` subscription that
hands each correction to a :class:`MapCorrector` (``runtime/map_corrections.py``).

The callback only converts and checks (a bad correction is reported by kind and the map is
unchanged); the rebuild runs in the corrector's own worker thread, beside integration. See
``docs/slam_poses.md`` for wiring a SLAM package.

Owns: the subscription, its log lines and diagnostics. Does not own: applying corrections.
"""
from __future__ import annotations

from nav_msgs.msg import Path

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.ros.conversions import keyframe_correction_from_path_msg
from panoptic_mapper.runtime.map_corrections import MapCorrector
from panoptic_mapper.runtime.map_session import MapSession


class CorrectionInput:
    """Subscribes ``topic`` for ``node`` and applies its corrections to ``session``."""

    def __init__(self, node, session: MapSession, topic: str, map_frame: str, qos,
                 frames_waiting):
        self.node = node
        self.topic = topic
        self.map_frame = map_frame
        self._qos = qos
        self.corrector = MapCorrector(session, node.worker_error, frames_waiting)
        session.add_correction_listener(self._on_applied)

    def subscribe(self) -> str:
        """Subscribe and start the correction worker; returns the topic."""
        self.node.subscribe(Path, self.topic, self._on_path, self._qos)
        self.node.start_worker(self.corrector.worker)
        return self.topic

    def _on_path(self, msg: Path) -> None:
        self.node.count("received_corrections")
        try:
            correction = keyframe_correction_from_path_msg(msg, self.map_frame)
        except InvalidInputError as exc:
            self.corrector.note_refused(exc)
            self.node.problem(exc.kind, f"loop correction on {self.topic} ignored, the map is "
                                        f"unchanged: {exc}")
            return
        try:
            self.corrector.submit(correction)
        except InvalidInputError as exc:
            self.node.problem(exc.kind, f"loop correction on {self.topic} ignored, the map is "
                                        f"unchanged: {exc}")
            return
        self.node.get_logger().info(
            f"loop correction with {correction.num_keyframes} keyframe poses queued")

    def _on_applied(self, moved) -> None:
        stats = self.corrector.stats
        self.node.get_logger().info(
            f"loop correction applied: {stats.last_frames_fused} frames fused again in "
            f"{stats.last_duration_s:.1f} s (integration waited {stats.last_lock_s:.2f} s), "
            f"keyframes moved up to {stats.last_max_shift_m:.2f} m, {stats.last_ids_kept} ids "
            f"kept, {stats.last_ids_merged} merged")

    def diagnostics_values(self) -> dict[str, object]:
        stats = self.corrector.stats
        return {"corrections_applied": stats.applied,
                "corrections_pending": int(self.corrector.pending),
                "corrections_rejected": stats.rejected,
                "last_correction_s": f"{stats.last_duration_s:.2f}",
                "last_correction_lock_s": f"{stats.last_lock_s:.2f}",
                "last_correction_frames": stats.last_frames_fused,
                "last_correction_shift_m": f"{stats.last_max_shift_m:.3f}",
                "correction_store_mb": f"{stats.store_mb:.0f}"}
