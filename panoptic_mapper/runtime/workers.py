"""The threads a node runs beside its executor: a queue worker and a periodic worker.

* :class:`QueueWorker`: takes items from a :class:`KeepLatestQueue` and handles them one at a
  time (the integration worker, the segmenter's model worker). It only does that: the item's
  handler must never wait for anything but the item.
* :class:`PeriodicWorker`: runs a task every ``period_s`` (the map refresh); when the task takes
  long, the next run waits until the task's time is at most ``max_share`` of the wall time, so
  a slow refresh can never starve the queue worker on a 2-core machine; a run is also put off
  while ``defer()`` says so (a backlog of frames), for at most ``max_defer_s``. On Linux the
  thread also lowers its own scheduling priority (``nice``), so that the kernel prefers
  integration whenever both want a core.

Both measure their busy time (``busy_s``), which the node reports as a CPU share.

ROS-free. Owns: thread lifecycles, pacing, busy accounting.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Generic, TypeVar

from panoptic_mapper.runtime.sync import KeepLatestQueue

T = TypeVar("T")

ErrorHandler = Callable[[str, BaseException], None]
"""Called with the worker's name and the exception when a handler or task raised (the worker
goes on with the next item or run)."""


class _Worker:
    """Thread plumbing shared by the workers."""

    JOIN_TIMEOUT_S = 30.0

    def __init__(self, name: str, on_error: ErrorHandler | None, nice: int = 0):
        self.name = name
        self._on_error = on_error
        self._nice = int(nice)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy_lock = threading.Lock()
        self._busy_s = 0.0
        self._busy_since: float | None = None

    @property
    def busy_s(self) -> float:
        """Seconds spent working since the start (including the item or run in progress)."""
        with self._busy_lock:
            running = 0.0 if self._busy_since is None else time.perf_counter() - self._busy_since
            return self._busy_s + running

    @property
    def is_busy(self) -> bool:
        """An item or run is in progress."""
        return self._busy_since is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Ask the thread to stop after its current item or run, and wait for it."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=self.JOIN_TIMEOUT_S if timeout_s is None else timeout_s)
            self._thread = None

    def _wake(self) -> None:
        """Interrupt a wait of the thread (subclasses)."""

    def _main(self) -> None:
        if self._nice:
            lower_thread_priority(self._nice)
        self._loop()

    def _loop(self) -> None:
        raise NotImplementedError

    def _run_timed(self, action: Callable[[], object]) -> object:
        with self._busy_lock:
            self._busy_since = time.perf_counter()
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - a worker must outlive a failing item
            if self._on_error is not None:
                self._on_error(self.name, exc)
            return None
        finally:
            with self._busy_lock:
                self._busy_s += time.perf_counter() - self._busy_since
                self._busy_since = None


class QueueWorker(_Worker, Generic[T]):
    """Handles the items of a queue one at a time, in its own thread (module docstring)."""

    def __init__(self, name: str, queue: KeepLatestQueue[T], handle: Callable[[T], object],
                 on_error: ErrorHandler | None = None, poll_s: float = 0.2):
        super().__init__(name, on_error)
        self.queue = queue
        self._handle = handle
        self._poll_s = poll_s

    @property
    def pending(self) -> bool:
        """Items wait, or one is being handled."""
        return self.is_busy or len(self.queue) > 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout_s=self._poll_s)
            if item is None:
                continue
            self._run_timed(lambda: self._handle(item))


class PeriodicWorker(_Worker):
    """Runs ``task`` every ``period_s`` in its own thread, within ``max_share`` of the time.

    Args:
        name: thread name.
        period_s: time between the starts of two runs when the task is quick.
        max_share: after a run of ``d`` seconds the next starts no earlier than
            ``d / max_share`` after this one started.
        task: the work; returns anything (ignored).
        nice: added to the thread's nice value on Linux (0: unchanged).
        defer: while it returns True, a due run waits (polled every ``DEFER_POLL_S``)...
        max_defer_s: ...but never longer than this after it was due.
    """

    DEFER_POLL_S = 0.05

    def __init__(self, name: str, period_s: float, max_share: float, task: Callable[[], object],
                 on_error: ErrorHandler | None = None, nice: int = 0,
                 defer: Callable[[], bool] | None = None, max_defer_s: float = 5.0):
        super().__init__(name, on_error, nice)
        self.period_s = float(period_s)
        self.max_share = float(max_share)
        self._task = task
        self._defer = defer
        self._max_defer_s = float(max_defer_s)
        self._wake_event = threading.Event()

    def trigger(self) -> None:
        """Run as soon as the share allows (e.g. after a load)."""
        self._wake_event.set()

    def _wake(self) -> None:
        self._wake_event.set()

    def _loop(self) -> None:
        next_run = time.monotonic() + self.period_s
        earliest = 0.0
        while not self._stop.is_set():
            self._wake_event.wait(timeout=max(0.0, next_run - time.monotonic()))
            if self._stop.is_set():
                return
            now = time.monotonic()
            if now < earliest:  # triggered early but the share is used up: wait
                self._wake_event.wait(timeout=earliest - now)
                if self._stop.is_set():
                    return
            self._wake_event.clear()
            due = time.monotonic()
            while (self._defer is not None and self._defer() and not self._stop.is_set()
                   and time.monotonic() - due < self._max_defer_s):
                time.sleep(self.DEFER_POLL_S)
            start = time.monotonic()
            self._run_timed(self._task)
            took = time.monotonic() - start
            earliest = start + took / self.max_share
            next_run = max(start + self.period_s, earliest)


def lower_thread_priority(nice: int) -> bool:
    """Raise the calling thread's nice value by ``nice`` (Linux: threads are tasks); False
    where the platform does not support it."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
        return True
    except (AttributeError, OSError):
        return False
