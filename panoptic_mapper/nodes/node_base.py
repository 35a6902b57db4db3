"""What every panoptic_mapper node shares: lifecycle, parameters, counters, diagnostics,
worker threads, and the process plumbing (init, executor, autostart, clean shutdown).

The nodes are ``rclpy.lifecycle.LifecycleNode``\\ s: parameters are declared at construction
(``ConfigParameters``: one config dataclass, 1:1 ROS parameters), models and maps are built in
``on_configure``, streaming starts in ``on_activate`` and everything is released in
``on_cleanup``/``on_shutdown``. With ``autostart`` (the default) the process configures and
activates itself, as nav2's lifecycle manager would; without it a lifecycle manager (or
``ros2 lifecycle set``) drives the transitions.

Concurrency contract: callbacks only enqueue or answer from snapshots; heavy work runs in the
node's workers (``runtime/workers.py``: the integration or model worker, the refresh worker,
the training worker), which :class:`PanopticLifecycleNode` starts and stops with the node. Each
subscription has its own mutually exclusive callback group (a topic in order, topics in
parallel); services get a reentrant group of their own.

Bad input is logged once per kind and then only counted (``runtime/node_stats.py``); the
counters, timings and problems go to ``/diagnostics`` every ``diagnostics_period_s``.

SIGINT/SIGTERM: rclpy's signal handler shuts the context down, the executor returns, and
:func:`run_nodes` releases the nodes (stop the workers, save the map when configured) in the
reverse order of their start before the process exits.

Owns: the base class and ``main()`` plumbing. Does not own: any node's behaviour.
"""
from __future__ import annotations

import sys
import threading
from typing import Callable, Iterable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.diagnostics import (DIAGNOSTICS_TOPIC, diagnostic_array, node_status,
                                             timing_values)
from panoptic_mapper.ros.params import ConfigParameters
from panoptic_mapper.runtime.node_config import QosConfig
from panoptic_mapper.runtime.node_stats import NodeStats
from panoptic_mapper.runtime.sync import LatePartnerReport, SyncDrop

EXECUTOR_THREADS = 4
"""Executor threads per node of a process: sensor callbacks, publishing timers and services
each get one to spare (the heavy work runs in the nodes' own workers)."""


class PanopticLifecycleNode(LifecycleNode):
    """Base of the package's nodes (see the module docstring).

    Args:
        node_name: default node name (a launch may remap it).
        config_class: root config dataclass of the node's parameters.
        timings: names of the rolling timings the node reports.
        dynamic: parameters that may change while the node runs.
    """

    WORKER_JOIN_TIMEOUT_S = 30.0
    """How long deactivation waits for a worker's current item (a frame, a model call)."""

    def __init__(self, node_name: str, config_class: type, timings: tuple[str, ...] = (),
                 dynamic: tuple[str, ...] = (), **kwargs):
        super().__init__(node_name, **kwargs)
        self._params = ConfigParameters(self, config_class, dynamic=dynamic)
        self.stats = NodeStats(timings)
        self._subscriptions: list = []
        self._timers: list = []
        self._workers: list = []
        self._release_lock = threading.Lock()
        self._diagnostics_pub = None
        self.server = None
        """The ``MapServer`` of a mapping node (None in the segmenter and while unconfigured)."""

    @property
    def api(self):
        """The planner API when this node serves it, else None."""
        return self.server.api if self.server is not None else None

    @property
    def outputs(self):
        """The published map products (topics) of a mapping node, else None."""
        return self.server.outputs if self.server is not None else None

    @property
    def config(self):
        """The node's configuration (its config dataclass, from the parameters)."""
        return self._params.config

    @property
    def autostart(self) -> bool:
        """Configure and activate right after construction (the node's parameter)."""
        return self.config.autostart

    # ---- reporting -----------------------------------------------------------------------------
    def count(self, name: str, increment: int = 1) -> None:
        self.stats.count(name, increment)

    def problem(self, kind: str, message: str) -> None:
        """Count a problem; log it the first time its kind occurs."""
        if self.stats.problems.record(kind, message):
            self.get_logger().warning(f"[{kind}] {message} (logged once; further ones are "
                                      "counted in the diagnostics)")

    def received_stamp_ns(self, stream: str, msg) -> int | None:
        """Count a message received on ``stream`` and return its header stamp in ns, or None
        (a problem counted and logged) when the stamp is invalid."""
        self.count(f"received_{stream}")
        try:
            return conv.stamp_ns_from_time_msg(msg.header.stamp, f"{stream}.header.stamp")
        except InvalidInputError as exc:
            self.problem(exc.kind, str(exc))
            return None

    def info_once(self, key: str, message: str) -> None:
        if self.stats.first_time(key):
            self.get_logger().info(message)

    def report_drop(self, drop: SyncDrop, late_report: LatePartnerReport | None,
                    expected: Iterable[str] = ()) -> None:
        """A synchroniser drop: expected kinds are counted (info once), late partners warned
        about again at a limited rate (a stream that is always late starves the map), others
        counted as problems."""
        message = (f"{drop.stream} at {drop.stamp_ns / 1e9:.3f} s dropped by the synchroniser: "
                   f"{drop.detail}")
        if drop.kind in expected:
            self.count(f"sync_{drop.kind}")
            self.info_once(f"drop.{drop.kind}", f"[{drop.kind}] {message} (normal when the "
                           "segmenter skips frames; counted in the diagnostics)")
            return
        if drop.kind.startswith("late_") and late_report is not None:
            self.stats.problems.record(drop.kind, message)
            warning = late_report.record(drop)
            if warning:
                self.get_logger().warning(f"[{drop.kind}] {warning}")
            return
        self.problem(drop.kind, message)

    def worker_error(self, worker: str, exc: BaseException) -> None:
        """A worker's item or run raised: counted and logged once; the worker goes on."""
        self.count(f"{worker}_errors")
        self.problem(f"worker_error.{worker}", f"{type(exc).__name__}: {exc}")

    def publish_diagnostics(self, values: dict[str, object]) -> None:
        """Counters, ``values``, timings and problems as this node's ``/diagnostics`` status;
        a summary of new problems goes to the log."""
        values = {**self.stats.counters(), **values}
        for name, timing in self.stats.timings.items():
            values.update(timing_values(name, timing))
        if self._diagnostics_pub is not None:
            status = node_status(self.get_name(), self.get_fully_qualified_name(), values,
                                 self.stats.problems)
            self._diagnostics_pub.publish(diagnostic_array(
                self.get_clock().now().nanoseconds, [status]))
        if self.stats.problems.changed_since_last_summary():
            self.get_logger().info(f"input problems so far: {self.stats.problems.summary()}")

    # ---- streaming -----------------------------------------------------------------------------
    def subscribe(self, msg_type, topic: str, callback, qos) -> None:
        """A subscription in a mutually exclusive group of its own (released on deactivate)."""
        self._subscriptions.append(self.create_subscription(
            msg_type, topic, callback, qos, callback_group=MutuallyExclusiveCallbackGroup()))

    def add_timer(self, period_s: float, callback, group=None) -> None:
        """A timer (released on deactivate)."""
        self._timers.append(self.create_timer(
            period_s, callback, callback_group=group or MutuallyExclusiveCallbackGroup()))

    def start_worker(self, worker) -> None:
        """Start a worker (``runtime/workers.py``) that stops with the streaming."""
        worker.start()
        self._workers.append(worker)

    def create_diagnostics_publisher(self) -> None:
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)

    def _stop_streaming(self) -> None:
        """Drop the subscriptions and timers, then stop the workers after their current item."""
        for sub in self._subscriptions:
            quietly(lambda s=sub: self.destroy_subscription(s))
        self._subscriptions = []
        for timer in self._timers:
            quietly(lambda t=timer: self.destroy_timer(t))
        self._timers = []
        for worker in reversed(self._workers):
            worker.stop(self.WORKER_JOIN_TIMEOUT_S)
        self._workers = []

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking input: unsubscribe, stop the timers and the workers."""
        self._stop_streaming()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Release everything (no save)."""
        self.release(save=False)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release(save=True)
        return TransitionCallbackReturn.SUCCESS

    def release(self, save: bool = True) -> None:
        """Stop streaming and free resources, saving first when configured and ``save`` is
        set. Idempotent; works after the ROS context was shut down (SIGINT)."""
        with self._release_lock:
            self._stop_streaming()
            self._release_resources(save)
            if self._diagnostics_pub is not None:
                quietly(lambda: self.destroy_publisher(self._diagnostics_pub))
                self._diagnostics_pub = None

    def _release_resources(self, save: bool) -> None:
        """The node's own part of :meth:`release` (after streaming stopped)."""


def set_torch_threads(count: int) -> None:
    """torch's CPU thread count for the whole process (0: leave torch's default)."""
    if count:
        import torch

        torch.set_num_threads(int(count))


def load_registry(label_file: str) -> LabelRegistry:
    """The label registry of ``label_file``, or the shipped default when empty."""
    return LabelRegistry.from_yaml(label_file) if label_file else LabelRegistry.default()


def sensor_qos(config: QosConfig) -> QoSProfile:
    """Subscription QoS of sensor topics from a node's ``qos`` parameters."""
    reliability = (ReliabilityPolicy.RELIABLE if config.reliability == "reliable"
                   else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(depth=config.depth, reliability=reliability)


def quietly(action: Callable[[], object]) -> None:
    """Run a teardown step that may fail once the ROS context is gone (after SIGINT)."""
    try:
        action()
    except Exception:  # noqa: BLE001 - teardown must go on
        pass


def autostart(node: PanopticLifecycleNode) -> bool:
    """Configure then activate ``node``; False (and an error log) if a transition fails."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().error("configure failed; the node stays unconfigured "
                                "(see the errors above)")
        return False
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().error("activate failed (see the errors above)")
        return False
    return True


def run_nodes(factories: list[Callable[[], PanopticLifecycleNode]],
              args: list[str] | None = None) -> int:
    """Create the nodes in order (each autostarted before the next is created, when
    configured), spin them in one executor until shutdown, release them in reverse order.

    Returns the process exit code: 0 after a clean stop, 1 when an autostart failed.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    nodes: list[PanopticLifecycleNode] = []
    code = 0
    try:
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS * len(factories))
        for factory in factories:
            node = factory()
            nodes.append(node)
            executor.add_node(node)
            if node.autostart and not autostart(node):
                code = 1
                break
        if code == 0:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # rclpy race: when the signal handler shuts the context down between two waits, the
        # executor fails building its next wait set (RCLError "context is not valid") instead
        # of raising ExternalShutdownException; seen with use_sim_time. That is the shutdown.
        if rclpy.ok():
            raise
    finally:
        for node in reversed(nodes):
            node.release(save=True)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def run_node(factory: Callable[[], PanopticLifecycleNode], args: list[str] | None = None) -> int:
    """:func:`run_nodes` for a process with one node."""
    return run_nodes([factory], args)

