"""A client of a running mapping graph: planner service calls and the nodes' diagnostics.

Used by tools (``panoptic-mapper demo``) and tests to talk to the graph from another process:
one rclpy node in a private context, spun in a background thread.

Owns: service calls with timeouts, the latest diagnostics per node, waiting for integration to
finish. Does not own: the graph's processes (``tools/launch.py``).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor

from panoptic_mapper.ros.diagnostics import DIAGNOSTICS_TOPIC
from panoptic_mapper.runtime.node_config import DEFAULT_API_NAMESPACE


class GraphClient:
    """Calls the planner API and watches ``/diagnostics`` (see the module docstring)."""

    def __init__(self, name: str = "graph_client", api_namespace: str = DEFAULT_API_NAMESPACE):
        self.api_namespace = api_namespace
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        self.node = rclpy.create_node(name, context=self.context)
        self._lock = threading.Lock()
        self._diagnostics: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics,
                                      10)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            for status in msg.status:
                self._diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def diagnostics(self, node_name: str) -> dict[str, str]:
        """The latest diagnostics values of ``node_name`` ({} before the first message)."""
        with self._lock:
            return dict(self._diagnostics.get(node_name, {}))

    def call(self, srv_type, name: str, request, timeout_s: float = 30.0):
        """Call ``<api namespace>/<name>``; raises TimeoutError when it is not served/answered."""
        return call_service(self.node, srv_type, f"{self.api_namespace}/{name}", request,
                            timeout_s)

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float,
                   period_s: float = 0.2) -> bool:
        """Poll ``predicate`` until it holds or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(period_s)
        return predicate()

    def wait_for_idle(self, node_name: str, timeout_s: float, settle_s: float = 2.0,
                      stall_s: float = 60.0, input_node: str = "") -> bool:
        """Wait until the frames the graph matched were all handled (integrated, rejected,
        invalid or skipped), the snapshot ``node_name`` serves includes every integrated one,
        and no new frame came for ``settle_s``. The input counters are ``input_node``'s (by
        default the node's own, or, for a node without an input such as a mapper deriving from
        the instant map, ``instant_semantics_node``'s). False on timeout, or when nothing
        changed for ``stall_s`` without the graph being idle (e.g. no frame was integrated)."""
        deadline = time.monotonic() + timeout_s
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            served = self.diagnostics(node_name)
            source = input_node or (node_name if "frames_matched" in served
                                    else "instant_semantics_node")
            values = self.diagnostics(source)
            count = lambda key, v=values: int(v.get(key, 0))  # noqa: E731
            handled = sum(count(k) for k in ("frames_integrated", "frames_rejected",
                                             "frames_invalid", "frames_skipped_busy"))
            idle = (handled == count("frames_matched") and count("queue_length") == 0
                    and int(served.get("snapshot_frames", -1)) == count("frames_integrated") > 0)
            state = (count("frames_matched"), handled)
            if state != last:
                last, since = state, time.monotonic()
            elif idle and time.monotonic() - since >= settle_s:
                return True
            elif time.monotonic() - since >= stall_s:
                return False
            time.sleep(0.1)
        return False

    def shutdown(self) -> None:
        """Stop spinning and release the context (idempotent)."""
        self._executor.shutdown(timeout_sec=5)
        self._thread.join(timeout=5)
        self.node.destroy_node()
        self.context.try_shutdown()


def call_service(node, srv_type, service: str, request, timeout_s: float):
    """One service call from ``node`` (spun by another thread) with a temporary client.

    Raises:
        TimeoutError: ``service`` is not served, or does not answer, within ``timeout_s``.
    """
    client = node.create_client(srv_type, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"{service} is not served")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            raise TimeoutError(f"{service} did not answer in {timeout_s:g} s")
        return future.result()
    finally:
        node.destroy_client(client)
