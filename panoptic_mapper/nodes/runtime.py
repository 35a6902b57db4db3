"""How every panoptic_mapper node process runs: init, executor, autostart, clean shutdown.

The nodes are ``rclpy.lifecycle.LifecycleNode``\\ s: parameters are declared at construction,
models and maps are built in ``on_configure``, streaming starts in ``on_activate`` and
everything is released in ``on_cleanup``/``on_shutdown``. With ``autostart`` (the default) the
process configures and activates itself, as nav2's lifecycle manager would; without it a
lifecycle manager (or ``ros2 lifecycle set``) drives the transitions.

Concurrency contract: one ``MultiThreadedExecutor``; each node puts sensor callbacks, map
publishing and planner services in separate callback groups and integrates in its own worker
thread, so a service call is answered while a frame is being integrated.

SIGINT/SIGTERM: rclpy's signal handler shuts the context down, the executor returns, and
:func:`run_node` calls the node's :meth:`PanopticLifecycleNode.release` (stop the worker, save
the map when configured) before the process exits.

Owns: ``main()`` plumbing shared by the node modules. Does not own: any node's behaviour.
"""
from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.runtime.node_config import QosConfig
from panoptic_mapper.runtime.sync import KeepLatestQueue

EXECUTOR_THREADS = 4
"""Executor threads: sensor callbacks, publishing timers and services each get one to spare
(integration runs in the node's own worker thread)."""


class PanopticLifecycleNode(LifecycleNode):
    """Base of the package's nodes: ``autostart`` plus an idempotent :meth:`release`."""

    @property
    def autostart(self) -> bool:
        """Configure and activate right after construction (the node's parameter)."""
        raise NotImplementedError

    def release(self, save: bool = True) -> None:
        """Stop workers and free resources, saving first when configured and ``save`` is set.

        Must be idempotent and must work after the ROS context was shut down (SIGINT).
        """
        raise NotImplementedError

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release(save=True)
        return TransitionCallbackReturn.SUCCESS

    WORKER_JOIN_TIMEOUT_S = 30.0
    """How long deactivation waits for the worker's current item (a frame, a model call)."""

    def _stop_streaming(self) -> None:
        """Drop the input subscriptions and timers, stop the worker thread after its current
        item, and give the node a fresh queue if the old one was closed (so that it can be
        activated again). Uses the nodes' ``_subscriptions``, ``_timers``, ``_stop``,
        ``_queue`` and ``_worker`` attributes."""
        for sub in self._subscriptions:
            quietly(lambda s=sub: self.destroy_subscription(s))
        self._subscriptions = []
        for timer in self._timers:
            quietly(lambda t=timer: self.destroy_timer(t))
        self._timers = []
        self._stop.set()
        if self._queue is not None:
            self._queue.close()
        if self._worker is not None:
            self._worker.join(timeout=self.WORKER_JOIN_TIMEOUT_S)
            self._worker = None
        if self._queue is not None and self._queue.closed:
            self._queue = KeepLatestQueue(self.config.queue_size)


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


def run_node(factory: Callable[[], PanopticLifecycleNode], args: list[str] | None = None) -> int:
    """Create the node, autostart it if configured, spin until shutdown, release it.

    Returns the process exit code: 0 after a clean stop, 1 when autostart failed.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    code = 0
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(node)
        if node.autostart and not autostart(node):
            code = 1
        else:
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
        if node is not None:
            node.release(save=True)
            node.destroy_node()
        rclpy.try_shutdown()
    return code
