"""Applying loop-closure corrections to a live map session, beside integration.

:meth:`MapCorrector.submit` checks a correction at once (``core/mapping/pose_corrections``:
malformed, out of order, matching no fused frame, or a map loaded from a file whose frames are not
kept) and raises :class:`InvalidInputError` without changing anything; a valid one is queued
(the newest replaces one not started yet: each carries all keyframe poses). The correction
worker then

1. takes the pose history and the kept frames (``core/mapping/frame_store``) and the corrected
   pose of each (under the session's write lock, briefly);
2. fuses the kept frames at their corrected poses into a fresh map (``core/mapping/map_rebuild``)
   *without* the write lock: integration of new frames into the live map goes on, and the store
   keeps every frame that arrives meanwhile; before each frame the rebuild waits while live
   frames queue up (so on 2 cores the live input rate is kept and the rebuild takes longer);
3. fuses those newer frames too (their live poses are already in the corrected frame: a SLAM
   system streams poses in its corrected map after a loop closure), the last few under the
   write lock, gives the rebuilt instances the ids the planner saw (``inherit_instance_ids``),
   moves the stored poses, and swaps the rebuilt map in; the next refresh serves it;
4. tells the session's correction listeners (a co-located refined layer moves its keyframes)
   the corrected poses.

ROS-free. Owns: :class:`MapCorrector`, :class:`CorrectionStats`. Does not own: the map
(``MapSession``), the pose arithmetic or the rebuild (``core/mapping``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.mapping.map_rebuild import (RebuildReport, inherit_instance_ids,
                                                      rebuild_map)
from panoptic_mapper.core.mapping.pose_corrections import (KeyframeCorrection,
                                                           check_correction, corrected_poses)
from panoptic_mapper.runtime.map_session import MapSession
from panoptic_mapper.runtime.sync import KeepLatestQueue
from panoptic_mapper.runtime.workers import ErrorHandler, QueueWorker

CATCH_UP_UNDER_LOCK_FRAMES = 3
"""Frames that arrived during a rebuild are fused outside the write lock until this few remain."""
YIELD_BACKLOG_FRAMES = 1
"""The rebuild waits before its next frame while this many live frames wait for integration
(or are in it): on 2 cores, and one GIL, live integration comes first, so none is dropped ..."""
MAX_YIELD_S = 5.0
"""... but never longer than this per rebuilt frame, so that a correction always finishes."""
YIELD_POLL_S = 0.02


@dataclass
class CorrectionStats:
    """What the corrector did (diagnostics)."""

    received: int = 0
    applied: int = 0
    rejected: int = 0
    superseded: int = 0
    last_error: str = ""
    last_stamp_ns: int = -1
    """Publication stamp of the newest applied correction (-1: none)."""
    last_duration_s: float = 0.0
    """Wall time of the newest applied correction, from its start to the swap."""
    last_lock_s: float = 0.0
    """Of that, time integration waited for the write lock."""
    last_frames_fused: int = 0
    last_max_shift_m: float = 0.0
    last_ids_kept: int = 0
    last_ids_merged: int = 0
    store_mb: float = 0.0


class MapCorrector:
    """Applies corrections to ``session`` (module docstring); the session needs a frame store.

    Args:
        session: the live map session.
        on_error: called with an exception the worker raised (it goes on).
        frames_waiting: live frames waiting for (or in) integration; the rebuild yields to
            them (``YIELD_BACKLOG_FRAMES``).
    """

    def __init__(self, session: MapSession, on_error: ErrorHandler | None = None,
                 frames_waiting: Callable[[], int] | None = None):
        if session.frame_store is None:
            raise ValueError("the map session keeps no frames (frame_store is None)")
        self.session = session
        self._frames_waiting = frames_waiting
        self.stats = CorrectionStats()
        self._queue: KeepLatestQueue[KeyframeCorrection] = KeepLatestQueue(1)
        self.worker = QueueWorker("corrections", self._queue, self._apply_queued, on_error)
        self._lock = threading.Lock()

    @property
    def pending(self) -> bool:
        """A correction waits or is being applied."""
        return self.worker.pending

    # ---- input ---------------------------------------------------------------------------------
    def submit(self, correction: KeyframeCorrection) -> None:
        """Check ``correction`` and queue it for the worker.

        Raises:
            InvalidInputError: it cannot be applied (the map is unchanged).
        """
        self.stats.received += 1
        try:
            self._check(correction)
        except InvalidInputError as exc:
            self.note_refused(exc)
            raise
        if self._queue.put(correction) is not None:
            self.stats.superseded += 1

    def apply(self, correction: KeyframeCorrection) -> RebuildReport:
        """Check and apply ``correction`` now, in the calling thread (offline use).

        Raises:
            InvalidInputError: it cannot be applied (the map is unchanged).
        """
        self.stats.received += 1
        try:
            return self._apply(correction)
        except InvalidInputError as exc:
            self.note_refused(exc)
            raise

    def note_refused(self, error: InvalidInputError) -> None:
        """Count a correction refused before it got here (e.g. a message in the wrong frame)."""
        self.stats.rejected += 1
        self.stats.last_error = str(error)

    def _check(self, correction: KeyframeCorrection):
        session = self.session
        if session.frames_from_file:
            raise InvalidInputError("correction", correction.stamp_ns,
                                    "the map was loaded from a file and its frames are not kept: "
                                    "corrections apply to maps built in this run (reset first)",
                                    kind="correction")
        stamps, poses = session.frame_store.get_pose_history()
        return check_correction(correction, stamps, poses, self.stats.last_stamp_ns)

    # ---- the worker ----------------------------------------------------------------------------
    def _apply_queued(self, correction: KeyframeCorrection) -> None:
        try:
            self._apply(correction)
        except InvalidInputError as exc:  # e.g. a reset meanwhile: say so, keep going
            self.note_refused(exc)
            raise

    def _apply(self, correction: KeyframeCorrection) -> RebuildReport:
        with self._lock:  # one correction at a time
            start = time.perf_counter()
            session, store = self.session, self.session.frame_store
            with session.write_lock:
                matched = self._check(correction)
                stamps, poses = store.get_pose_history()
                frames, frame_poses = store.get_frames()
                old_map = session.map
                store.keep_all = True
            try:
                new_history = corrected_poses(matched, stamps, poses)
                new_frame_poses = corrected_poses(
                    matched, np.array([f.stamp_ns for f in frames], np.int64), frame_poses)
                rebuilt = session.new_map()
                report, votes = rebuild_map(rebuilt, frames, new_frame_poses, old_map,
                                            self._yield_to_live)
                done = len(frames)
                while True:  # frames that arrived meanwhile: live poses, already corrected
                    newer, newer_poses = store.get_frames()
                    if len(newer) - done <= CATCH_UP_UNDER_LOCK_FRAMES:
                        break
                    done = self._fuse_more(rebuilt, newer[done:], newer_poses[done:], report,
                                           votes, done)
                locked = time.perf_counter()
                with session.write_lock:
                    if session.map is not old_map:
                        raise InvalidInputError("correction", correction.stamp_ns,
                                                "the map was reset or loaded meanwhile",
                                                kind="correction")
                    newer, newer_poses = store.get_frames()
                    # under the lock: nothing to yield to
                    more, more_votes = rebuild_map(rebuilt, newer[done:], newer_poses[done:])
                    report.frames_fused += more.frames_fused
                    report.frames_rejected += more.frames_rejected
                    votes.extend(more_votes)
                    report.ids = inherit_instance_ids(old_map, rebuilt, newer, votes)
                    store.set_poses(stamps, new_history, new_frame_poses)
                    session.swap_map(rebuilt)
                    lock_s = time.perf_counter() - locked
            finally:
                store.keep_all = False
            moved = {int(s): T for s, T in zip(stamps, new_history)}  # noqa: N806
            self._record(correction, matched.max_shift_m, report, time.perf_counter() - start,
                         lock_s)
            session.notify_poses_corrected(moved)
            return report

    def _yield_to_live(self) -> None:
        """Before each rebuilt frame: wait while live frames wait (bounded)."""
        if self._frames_waiting is None:
            return
        deadline = time.monotonic() + MAX_YIELD_S
        while (self._frames_waiting() >= YIELD_BACKLOG_FRAMES
               and time.monotonic() < deadline):
            time.sleep(YIELD_POLL_S)

    def _fuse_more(self, rebuilt, frames, poses, report: RebuildReport,
                   votes: list[np.ndarray], done: int) -> int:
        more, more_votes = rebuild_map(rebuilt, frames, poses,
                                       before_frame=self._yield_to_live)
        report.frames_fused += more.frames_fused
        report.frames_rejected += more.frames_rejected
        votes.extend(more_votes)
        return done + len(frames)

    def _record(self, correction: KeyframeCorrection, shift_m: float, report: RebuildReport,
                duration_s: float, lock_s: float) -> None:
        stats = self.stats
        stats.applied += 1
        stats.last_stamp_ns = int(correction.stamp_ns)
        stats.last_duration_s = duration_s
        stats.last_lock_s = lock_s
        stats.last_frames_fused = report.frames_fused
        stats.last_max_shift_m = shift_m
        stats.last_ids_kept = len(report.ids.kept)
        stats.last_ids_merged = len(report.ids.merged)
        stats.store_mb = self.session.frame_store.nbytes / 2**20
