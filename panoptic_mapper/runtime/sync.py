"""Stamp synchronisation of a node's input streams, and the keep-latest hand-off to a worker.

ROS-free: items are opaque payloads (rclpy messages in the nodes, anything in tests) that arrive
with a stamp in nanoseconds. ``message_filters`` is not available from PyPI; this module gives
the matching rules the nodes need instead of its Exact/ApproximateTime synchronisers:

* one **key** stream defines the frames (the RGB image);
* **nearest** streams contribute the item closest in time to the key stamp within a tolerance
  (0 = exact): depth, segmentation, the pose. A nearest match is decided as soon as an item at
  or after the key stamp has arrived, because no later item can be closer;
* **latest** streams contribute the most recently received item, whatever its stamp (the
  camera info, which may be latched and old);
* frames are emitted in stamp order. A frame is dropped as soon as a stream has moved past
  it without a match (e.g. an RGB frame the segmenter skipped while it was busy), or once the
  key stream has run ``max_wait_s`` ahead of it in message time *and* it has waited
  ``max_wait_s`` of wall time (an input that never came; the wall-time condition keeps a
  callback that runs late on a loaded machine from losing frames when a bag plays fast);
  items older than the last emitted frame are stale. Every discarded item or frame is reported as a
  :class:`SyncDrop` with a stable ``kind``;
* an item that arrives for a frame already dropped while waiting for that very stream is
  reported as ``late_<stream>`` with its delay, so a partner that is always slower than
  ``max_wait_s`` / ``max_pending`` allow (a segmenter taking 40 s per frame on a CPU) is named
  instead of starving the map silently (:class:`LatePartnerReport` words the advice).

A stamp far behind the last emitted frame (a bag played in a loop, a restarted sensor) resets
the synchroniser instead of rejecting everything from then on.

Owns: matching, expiry, stale-stamp rejection, late-partner detection, the drop report;
:class:`KeepLatestQueue`.
Does not own: decoding or validating the payloads (``panoptic_mapper.ros.conversions``), or what
a node does with a matched frame.
"""
from __future__ import annotations

import bisect
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Literal, Sequence, TypeVar

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError

NS_PER_S = 1_000_000_000
EXPIRED_HISTORY_MIN = 4096
"""Frames dropped for missing partners remembered at least (more with a larger max_pending),
to recognise their partners arriving late: 2 min of a 30 Hz camera."""
LATE_WARNING_PERIOD_S = 30.0
"""Least wall time between two late-partner warnings of a :class:`LatePartnerReport`."""

StreamPolicy = Literal["key", "nearest", "latest"]


@dataclass
class SyncLimitsConfig(ConfigBase):
    """Buffer bounds of a :class:`StampSynchronizer` (all streams matched by equal stamps)."""

    max_wait_s: float = 2.0
    """How far the RGB stream may run ahead of an incomplete frame before that frame is dropped
    as missing its other inputs, seconds (message time, so it scales with playback rate)."""
    max_pending: int = 60
    """Most frames buffered while waiting for their partners (streams buffer 8x as many
    items)."""
    time_jump_back_s: float = 5.0
    """A stamp this many seconds older than the last emitted frame resets the synchroniser
    (a bag played in a loop, a restarted sensor) instead of being rejected as stale."""

    def validate(self) -> None:
        require(self.max_wait_s > 0.0, "max_wait_s", self.max_wait_s, "must be > 0")
        require(self.max_pending >= 1, "max_pending", self.max_pending, "must be >= 1")
        require(self.time_jump_back_s > self.max_wait_s, "time_jump_back_s",
                self.time_jump_back_s, "must be larger than max_wait_s")


@dataclass
class SyncConfig(SyncLimitsConfig):
    """Matching tolerances and buffer bounds of the mapper's RGB-D synchroniser."""

    depth_tolerance_s: float = 0.0
    """Largest |depth stamp - RGB stamp| accepted, seconds (0 = equal stamps, as with
    registered/aligned depth)."""
    segmentation_tolerance_s: float = 0.0
    """Largest |segmentation stamp - RGB stamp|, seconds (0: segmenters copy the RGB stamp)."""
    pose_tolerance_s: float = 0.02
    """Largest |pose stamp - RGB stamp|, seconds; the nearest pose within it is used."""

    def validate(self) -> None:
        super().validate()
        for name in ("depth_tolerance_s", "segmentation_tolerance_s", "pose_tolerance_s"):
            value = getattr(self, name)
            require(0.0 <= value <= 10.0, name, value, "must be in [0, 10] seconds")


@dataclass(frozen=True)
class StreamSpec:
    """How one input stream takes part in a frame."""

    name: str
    policy: StreamPolicy
    tolerance_ns: int = 0
    """For ``nearest``: largest |stamp - key stamp| accepted (0 = exact)."""
    per_frame: bool = True
    """For ``nearest``: one item per frame is expected, so an item that no key item ever came
    for is reported (``missing_<key>``). False for streams faster than the frames (a pose)."""


@dataclass(frozen=True)
class SyncDrop:
    """An item or an incomplete frame the synchroniser discarded, and why.

    Kinds: ``stale_stamp`` (older than the last emitted frame, or not newer than the previous
    item of its stream), ``missing_<stream>`` (a frame that could not get that input, or an
    item whose key item never came), ``overflow`` (buffer bound exceeded),
    ``time_jump_back`` (the synchroniser was reset), ``late_<stream>`` (an item for a frame
    that was already dropped while waiting for it: the stream is slower than the limits).
    """

    kind: str
    stream: str
    stamp_ns: int
    detail: str = ""
    delay_s: float = 0.0
    """For ``late_<stream>``: wall time from the frame's key item to this item, seconds."""
    frames_behind: int = 0
    """For ``late_<stream>``: key items received after the frame's own until this item came
    (the ``max_pending`` that would have kept the frame)."""


@dataclass
class MatchedFrame:
    """One frame's items: the key item plus the matched item of every other stream."""

    stamp_ns: int
    """Stamp of the key item."""
    items: dict[str, Any]
    """Stream name -> payload."""
    stamps_ns: dict[str, int]
    """Stream name -> stamp of the payload used."""


@dataclass
class SyncResult:
    """What one :meth:`StampSynchronizer.add` call produced."""

    frames: list[MatchedFrame] = field(default_factory=list)
    """Frames completed by this item, oldest first."""
    drops: list[SyncDrop] = field(default_factory=list)


class StampSynchronizer:
    """Matches items of several streams into frames by stamp (see the module docstring).

    Thread-safe: subscription callbacks of different callback groups may call :meth:`add`
    concurrently.
    """

    def __init__(self, streams: Sequence[StreamSpec], max_wait_s: float = 2.0,
                 max_pending: int = 60, time_jump_back_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        """Args:
            streams: the streams; exactly one with policy ``key``.
            max_wait_s: how long an incomplete frame waits (message and wall time).
            max_pending: bound on pending frames (and 8x on buffered items per stream).
            time_jump_back_s: a stamp this far behind the last frame resets everything.
            clock: wall clock in seconds (tests pass a fake one).
        """
        keys = [s for s in streams if s.policy == "key"]
        if len(keys) != 1:
            raise ConfigError("streams", [s.name for s in keys], "exactly one key stream needed")
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise ConfigError("streams", names, "stream names must be unique")
        self._key = keys[0].name
        self._specs = {s.name: s for s in streams}
        self._max_wait_ns = _to_ns(max_wait_s)
        self._max_wait_s = float(max_wait_s)
        self._clock = clock
        self._max_pending = int(max_pending)
        self._expired_history = max(EXPIRED_HISTORY_MIN, 8 * self._max_pending)
        self._jump_back_ns = _to_ns(time_jump_back_s)
        self._lock = threading.Lock()
        self._reset_state()

    @classmethod
    def for_rgbd(cls, config: SyncConfig, with_segmentation: bool = True,
                 with_pose: bool = True, clock: Callable[[], float] = time.monotonic
                 ) -> "StampSynchronizer":
        """The mapper's streams: rgb (key), depth, camera_info, and optionally pose (absent
        when poses come from tf) and segmentation (absent for geometry-only mapping)."""
        streams = [
            StreamSpec("rgb", "key"),
            StreamSpec("depth", "nearest", _to_ns(config.depth_tolerance_s)),
            StreamSpec("camera_info", "latest"),
        ]
        if with_pose:
            streams.append(StreamSpec("pose", "nearest", _to_ns(config.pose_tolerance_s),
                                      per_frame=False))
        if with_segmentation:
            streams.append(StreamSpec("segmentation", "nearest",
                                      _to_ns(config.segmentation_tolerance_s)))
        return cls(streams, config.max_wait_s, config.max_pending, config.time_jump_back_s,
                   clock)

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def _reset_state(self) -> None:
        # key stamp -> (item, arrival wall time, index among the key items)
        self._pending: dict[int, tuple[Any, float, int]] = {}
        # stream -> [(stamp, item, arrival wall time)], stamps increasing
        self._buffers: dict[str, list[tuple[int, Any, float]]] = {
            name: [] for name, s in self._specs.items() if s.policy == "nearest"}
        self._newest_ns: dict[str, int] = {}
        self._latest: dict[str, tuple[int, Any]] = {}
        self._last_emitted_ns = -1
        history = 8 * self._max_pending
        self._recent_keys: collections.deque[int] = collections.deque(maxlen=history)
        self._num_keys = 0
        # Frames dropped while waiting: [(key stamp, key arrival wall time, index among the key
        # items, nearest streams it waited for)], by stamp; a later item of such a stream is late.
        self._expired: list[tuple[int, float, int, tuple[str, ...]]] = []

    def reset(self) -> None:
        """Forget every buffered item (e.g. after the map was reset)."""
        with self._lock:
            self._reset_state()

    def add(self, stream: str, stamp_ns: int, item: Any) -> SyncResult:
        """Offer one item; returns the frames it completed and whatever was discarded."""
        if stream not in self._specs:
            raise ConfigError("stream", stream, f"unknown stream; known: {list(self._specs)}")
        stamp_ns = int(stamp_ns)
        result = SyncResult()
        with self._lock:
            spec = self._specs[stream]
            if (spec.policy != "latest" and self._last_emitted_ns >= 0
                    and stamp_ns < self._last_emitted_ns - self._jump_back_ns):
                result.drops.append(SyncDrop(
                    "time_jump_back", stream, stamp_ns,
                    f"{(self._last_emitted_ns - stamp_ns) / NS_PER_S:.3f} s before the last "
                    "frame; synchroniser reset"))
                latest = self._latest  # stamp-independent: still valid after the jump
                self._reset_state()
                self._latest = latest
            if self._accept(spec, stamp_ns, item, result):
                self._expire(result)
                self._emit_ready(result)
        return result

    # ---- internals (called with the lock held) -----------------------------------------------
    def _accept(self, spec: StreamSpec, stamp_ns: int, item: Any, result: SyncResult) -> bool:
        if spec.policy == "latest":
            self._latest[spec.name] = (stamp_ns, item)
            return True
        newest = self._newest_ns.get(spec.name, -1)
        if stamp_ns <= newest:
            result.drops.append(SyncDrop(
                "stale_stamp", spec.name, stamp_ns,
                "not newer than the previous item of this stream "
                f"({(newest - stamp_ns) / NS_PER_S:.3f} s older)"))
            return False
        self._newest_ns[spec.name] = stamp_ns
        if spec.policy == "nearest" and self._report_late(spec, stamp_ns, result):
            return False
        if self._last_emitted_ns >= 0 and stamp_ns <= self._last_emitted_ns - spec.tolerance_ns:
            result.drops.append(SyncDrop(
                "stale_stamp", spec.name, stamp_ns,
                f"{(self._last_emitted_ns - stamp_ns) / NS_PER_S:.3f} s older than the last "
                "emitted frame"))
            return False
        if spec.policy == "key":
            self._pending[stamp_ns] = (item, self._clock(), self._num_keys)
            self._num_keys += 1
            self._recent_keys.append(stamp_ns)
            if len(self._pending) > self._max_pending:
                oldest = min(self._pending)
                self._remember_expired(oldest, self._blocking(oldest))
                result.drops.append(SyncDrop("overflow", spec.name, oldest,
                                             f"more than {self._max_pending} frames pending"))
            return True
        buffer = self._buffers[spec.name]
        buffer.append((stamp_ns, item, self._clock()))  # stamps increase (checked above)
        if len(buffer) > 8 * self._max_pending:
            dropped_ns = buffer.pop(0)[0]
            result.drops.append(SyncDrop("overflow", spec.name, dropped_ns,
                                         f"more than {8 * self._max_pending} items buffered"))
        return True

    def _match(self, spec: StreamSpec, key_ns: int) -> tuple[str, int, Any]:
        """``("ok", stamp, item)``, ``("wait", ..)`` or ``("missing", ..)`` (nearest stream)."""
        if self._newest_ns.get(spec.name, -1) < key_ns:
            return ("wait", -1, None)  # a later item may still be closer
        buffer = self._buffers[spec.name]
        lo = bisect.bisect_left(buffer, key_ns - spec.tolerance_ns, key=_stamp_of)
        hi = bisect.bisect_right(buffer, key_ns + spec.tolerance_ns, key=_stamp_of)
        if lo == hi:
            return ("missing", -1, None)
        stamp, item, _ = min(buffer[lo:hi], key=lambda entry: abs(entry[0] - key_ns))
        return ("ok", stamp, item)

    def _emit_ready(self, result: SyncResult) -> None:
        for key_ns in sorted(self._pending):
            items: dict[str, Any] = {self._key: self._pending[key_ns][0]}
            stamps: dict[str, int] = {self._key: key_ns}
            missing: list[str] = []
            waiting = False
            for name, spec in self._specs.items():
                if spec.policy == "nearest":
                    state, stamp, item = self._match(spec, key_ns)
                    waiting |= state == "wait"
                    if state == "missing":
                        missing.append(name)
                elif spec.policy == "latest":
                    stamp, item = self._latest.get(name, (-1, None))
                    waiting |= item is None
                else:
                    continue
                items[name], stamps[name] = item, stamp
            if missing:
                del self._pending[key_ns]
                for name in missing:
                    result.drops.append(SyncDrop(
                        f"missing_{name}", name, key_ns,
                        f"no {name} within {self._specs[name].tolerance_ns / NS_PER_S:g} s "
                        "of the frame"))
                continue
            if waiting:
                # Decisions are monotone in time: a newer frame cannot be complete while this
                # one still waits, so frames leave in stamp order.
                break
            del self._pending[key_ns]
            self._last_emitted_ns = key_ns
            for name, spec in self._specs.items():
                if spec.policy == "nearest":
                    self._discard_older(name, key_ns - spec.tolerance_ns, result)
            result.frames.append(MatchedFrame(key_ns, items, stamps))

    def _expire(self, result: SyncResult) -> None:
        cutoff_ns = self._newest_ns.get(self._key, -1) - self._max_wait_ns
        arrived_before = self._clock() - self._max_wait_s
        for key_ns in sorted(self._pending):
            if key_ns >= cutoff_ns:
                break
            if self._pending[key_ns][1] > arrived_before:
                continue
            blocking = self._blocking(key_ns)
            self._remember_expired(key_ns, blocking)
            for name in blocking:
                result.drops.append(SyncDrop(
                    f"missing_{name}", name, key_ns,
                    f"none arrived within max_wait ({self._max_wait_ns / NS_PER_S:g} s)"))
        for name, spec in self._specs.items():
            if spec.policy == "nearest":
                self._discard_older(name, cutoff_ns - spec.tolerance_ns, result, arrived_before)

    def _blocking(self, key_ns: int) -> tuple[str, ...]:
        """Streams the pending frame ``key_ns`` still lacks."""
        return tuple(name for name, spec in self._specs.items()
                     if (spec.policy == "latest" and name not in self._latest)
                     or (spec.policy == "nearest" and self._match(spec, key_ns)[0] != "ok"))

    def _remember_expired(self, key_ns: int, blocking: tuple[str, ...]) -> None:
        """Drop the pending frame ``key_ns``, remembering which streams it waited for."""
        _, arrival, index = self._pending.pop(key_ns)
        waited_for = tuple(n for n in blocking if self._specs[n].policy == "nearest")
        if not waited_for:
            return
        bisect.insort(self._expired, (key_ns, arrival, index, waited_for))
        if len(self._expired) > self._expired_history:
            del self._expired[0]

    def _report_late(self, spec: StreamSpec, stamp_ns: int, result: SyncResult) -> bool:
        """True (and a ``late_<stream>`` drop) when ``stamp_ns`` belongs to a frame that was
        dropped while waiting for this stream."""
        expired = self._expired
        lo = bisect.bisect_left(expired, stamp_ns - spec.tolerance_ns, key=_stamp_of)
        hi = bisect.bisect_right(expired, stamp_ns + spec.tolerance_ns, key=_stamp_of)
        candidates = [i for i in range(lo, hi) if spec.name in expired[i][3]]
        if not candidates:
            return False
        i = min(candidates, key=lambda j: abs(expired[j][0] - stamp_ns))
        key_ns, arrival, index, waited_for = expired[i]
        remaining = tuple(n for n in waited_for if n != spec.name)
        if remaining:
            expired[i] = (key_ns, arrival, index, remaining)
        else:
            del expired[i]
        delay_s = self._clock() - arrival
        behind = self._num_keys - 1 - index
        result.drops.append(SyncDrop(
            f"late_{spec.name}", spec.name, stamp_ns,
            f"arrived {delay_s:.1f} s (wall time) and {behind} {self._key} frames after its "
            f"frame, which had been dropped after waiting max_wait_s ({self._max_wait_s:g} s) "
            f"or max_pending ({self._max_pending} frames)",
            delay_s=delay_s, frames_behind=behind))
        return True

    def _discard_older(self, name: str, floor_ns: int, result: SyncResult,
                       arrived_before: float | None = None) -> None:
        """Drop buffered items of ``name`` older than ``floor_ns`` (and, when given, received
        before the wall time ``arrived_before``), reporting orphans."""
        spec, buffer = self._specs[name], self._buffers[name]
        keep = bisect.bisect_left(buffer, floor_ns, key=_stamp_of)
        if arrived_before is not None:
            keep = next((i for i in range(keep) if buffer[i][2] > arrived_before), keep)
        if spec.per_frame:
            keys = sorted(self._recent_keys)
            for stamp_ns, _, _ in buffer[:keep]:
                lo = bisect.bisect_left(keys, stamp_ns - spec.tolerance_ns)
                if lo == len(keys) or keys[lo] > stamp_ns + spec.tolerance_ns:
                    result.drops.append(SyncDrop(f"missing_{self._key}", name, stamp_ns,
                                                 f"no {self._key} item with this stamp"))
        del buffer[:keep]


def _stamp_of(entry: tuple) -> int:
    return entry[0]


def _to_ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


class LatePartnerReport:
    """Counts ``late_<stream>`` drops and words a rate-limited warning naming the limits to raise.

    A stream that is always later than the synchroniser waits (a segmenter taking 40 s per
    frame) makes every frame expire: the map gets nothing while each drop on its own looks
    normal. The first late item is worth a warning, and one per ``period_s`` after that with
    the counts and the largest delay measured. Thread-safe.
    """

    def __init__(self, limits: SyncLimitsConfig, prefix: str = "sync.",
                 period_s: float = LATE_WARNING_PERIOD_S,
                 clock: Callable[[], float] = time.monotonic):
        """Args:
            limits: the synchroniser's limits (quoted in the warning).
            prefix: parameter prefix of ``limits`` in the node (``sync.``).
            period_s: least wall time between two warnings, seconds.
            clock: wall clock in seconds (tests pass a fake one).
        """
        self._limits = limits
        self._prefix = prefix
        self._period_s = float(period_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._next_warning_s = -float("inf")
        self.counts: dict[str, int] = {}
        """Stream -> late items so far."""
        self.max_delay_s = 0.0
        """Largest delay of a late item so far, seconds (wall time after its frame's key)."""
        self.max_frames_behind = 0
        """Most key frames received between a frame and its late item so far."""

    def record(self, drop: SyncDrop) -> str | None:
        """Count a ``late_<stream>`` drop; returns the warning to log now, or None."""
        with self._lock:
            self.counts[drop.stream] = self.counts.get(drop.stream, 0) + 1
            self.max_delay_s = max(self.max_delay_s, drop.delay_s)
            self.max_frames_behind = max(self.max_frames_behind, drop.frames_behind)
            now = self._clock()
            if now < self._next_warning_s:
                return None
            self._next_warning_s = now + self._period_s
            total = sum(self.counts.values())
            wait, pending = f"{self._prefix}max_wait_s", f"{self._prefix}max_pending"
            return (
                f"{drop.stream} arrives too late for the synchroniser: the one for the frame at "
                f"{drop.stamp_ns / NS_PER_S:.3f} s came {drop.delay_s:.1f} s and "
                f"{drop.frames_behind} frames after it, but a frame waits at most {wait} = "
                f"{self._limits.max_wait_s:g} s and {pending} = {self._limits.max_pending} "
                f"frames, so it had been dropped ({total} late so far: "
                f"{_counts_text(self.counts)}; largest delay {self.max_delay_s:.1f} s, "
                f"{self.max_frames_behind} frames). Frames whose {drop.stream} is late never "
                f"reach the map: raise {wait} above {self.max_delay_s:.1f} s (and "
                f"{self._prefix}time_jump_back_s above that) and {pending} above "
                f"{self.max_frames_behind}, or make the {drop.stream} faster (this warning "
                f"repeats at most every {self._period_s:g} s)")


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))


# --------------------------------------------------------------------------------------------
# Keep-latest queue
# --------------------------------------------------------------------------------------------
T = TypeVar("T")


class KeepLatestQueue(Generic[T]):
    """A bounded FIFO whose ``put`` never blocks: when full, the oldest item is dropped.

    Sits between subscription callbacks and a slow worker so that the worker always processes
    the most recent frames and a backlog can never grow (camera_calibration's ``BufferQueue``
    idea). Thread-safe; counts what it dropped.
    """

    def __init__(self, maxsize: int):
        if int(maxsize) < 1:
            raise ConfigError("queue_size", maxsize, "must be >= 1")
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = int(maxsize)
        self._cond = threading.Condition()
        self._closed = False
        self.num_put = 0
        """Items offered so far."""
        self.num_dropped = 0
        """Items discarded unprocessed because newer ones arrived while the queue was full."""

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> T | None:
        """Append ``item``; returns the item dropped to make room, if any."""
        with self._cond:
            if self._closed:
                raise RuntimeError("put() on a closed KeepLatestQueue")
            dropped = None
            if len(self._items) >= self._maxsize:
                dropped = self._items.popleft()
                self.num_dropped += 1
            self._items.append(item)
            self.num_put += 1
            self._cond.notify()
            return dropped

    def get(self, timeout_s: float | None = None) -> T | None:
        """The oldest item, waiting up to ``timeout_s``; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout_s):
                return None
            if self._items:
                return self._items.popleft()
            return None

    def clear(self) -> int:
        """Discard every queued item (counted as dropped); returns how many."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self.num_dropped += count
            return count

    def close(self) -> None:
        """Wake every waiting ``get`` (which then returns None); later ``put`` calls raise."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
