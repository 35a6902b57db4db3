"""Run-time statistics of a node: problems counted per kind, and rolling timings.

A node that receives bad input keeps running: each rejected input is counted under a stable
``kind`` (``InvalidInputError.kind``, a synchroniser drop kind, ...). The first occurrence of a
kind is logged with its full message; later ones are only counted and reported in summaries and
diagnostics, so a misconfigured stream at 30 Hz does not flood the log.

ROS-free, thread-safe. Owns: counting, first-occurrence detection, summaries, timing windows,
and :class:`NodeStats`, which bundles them for a node. Does not own: logging or publishing (the
nodes and ``panoptic_mapper.ros.diagnostics``).
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import numpy as np


class ProblemCounter:
    """Counts problems per kind; :meth:`record` tells whether a kind is seen for the first time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._first_messages: dict[str, str] = {}
        self._reported_total = 0

    def record(self, kind: str, message: str) -> bool:
        """Count one problem of ``kind``; True when it is the first of its kind (log it)."""
        with self._lock:
            first = kind not in self._counts
            self._counts[kind] = self._counts.get(kind, 0) + 1
            if first:
                self._first_messages[kind] = message
            return first

    @property
    def counts(self) -> dict[str, int]:
        """Kind -> count so far (a copy)."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def first_message(self, kind: str) -> str:
        """The message recorded with the first problem of ``kind`` ("" if none)."""
        with self._lock:
            return self._first_messages.get(kind, "")

    def summary(self) -> str:
        """``"kind=count, ..."`` sorted by kind ("none" when empty)."""
        counts = self.counts
        return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"

    def changed_since_last_summary(self) -> bool:
        """True (once) when problems were counted since the previous call; for periodic logs."""
        with self._lock:
            total = sum(self._counts.values())
            changed = total != self._reported_total
            self._reported_total = total
            return changed


@dataclass
class TimingSummary:
    """Durations of the last ``count`` events of a :class:`RollingTiming`, milliseconds."""

    count: int
    mean_ms: float
    median_ms: float
    p95_ms: float
    max_ms: float
    last_ms: float


class RollingTiming:
    """Keeps the last ``window`` durations of an operation (thread-safe)."""

    def __init__(self, window: int = 100):
        self._lock = threading.Lock()
        self._values: collections.deque[float] = collections.deque(maxlen=int(window))
        self.total_count = 0
        """Durations recorded since creation."""

    def add(self, duration_s: float) -> None:
        with self._lock:
            self._values.append(float(duration_s) * 1000.0)
            self.total_count += 1

    def summary(self) -> TimingSummary | None:
        """Statistics of the window, or None before the first event."""
        with self._lock:
            if not self._values:
                return None
            values = np.fromiter(self._values, float)
            last = self._values[-1]
        return TimingSummary(count=len(values), mean_ms=float(values.mean()),
                             median_ms=float(np.median(values)),
                             p95_ms=float(np.percentile(values, 95)),
                             max_ms=float(values.max()), last_ms=float(last))


class NodeStats:
    """A node's counters, problems and timings (thread-safe), as its diagnostics report them.

    Args:
        timings: names of the rolling timings the node keeps (``RollingTiming`` each).
    """

    def __init__(self, timings: tuple[str, ...] = ()):
        self.problems = ProblemCounter()
        self.timings = {name: RollingTiming() for name in timings}
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()
        self._once: set[str] = set()

    def count(self, name: str, increment: int = 1) -> None:
        """Add ``increment`` to counter ``name``."""
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + increment

    def counters(self) -> dict[str, int]:
        """Counter name -> value (a copy)."""
        with self._lock:
            return dict(self._counters)

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is asked about (for log-once messages)."""
        with self._lock:
            if key in self._once:
                return False
            self._once.add(key)
            return True

    def time(self, name: str, duration_s: float) -> None:
        """Record one duration of timing ``name``."""
        self.timings[name].add(duration_s)
