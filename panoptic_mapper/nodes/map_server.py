"""How a mapping node serves its map: planner API, latched map topics, the refresh worker,
publishing, save on shutdown, and the diagnostics values of the served snapshot.

Both mapping nodes serve a session the same way (``runtime/map_session.py`` for the instant
map, ``runtime/refined_session.py`` for the refined layer): the refresh worker (a thread of its
own, at a lower scheduling priority, within ``output.max_refresh_share`` of the time) publishes
new snapshots, a timer sends them on the map topics, the planner services answer from them.
Under ``planner_api.namespace`` when the node serves the API, else under the node's private
namespace; if the API is withdrawn (another node serves it), the topics move to the private
namespace.

Owns: :class:`MapServer`. Does not own: the session, the topics' messages (``map_outputs``) or
the services (``planner_api``).
"""
from __future__ import annotations

from typing import Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup

from panoptic_mapper.core.errors import PanopticMapperError
from panoptic_mapper.nodes.map_outputs import MapOutputs
from panoptic_mapper.nodes.node_base import PanopticLifecycleNode, quietly
from panoptic_mapper.nodes.planner_api import PlannerApi, PlannerApiConflict
from panoptic_mapper.runtime.node_config import MapOutputConfig, PlannerApiConfig
from panoptic_mapper.runtime.workers import PeriodicWorker

REFRESH_NICE = 5
"""The refresh worker's nice increment: the kernel prefers integration when both want a core."""


class MapServer:
    """Serves a map session for a node (see the module docstring).

    Args:
        node: the node (its timers, workers, stats and logger are used).
        session: a ``MapSession`` or ``RefinedSession``.
        output: what to publish and how often.
        api: the planner API settings.
        map_frame: frame of the outputs.
        source: ``PanopticMesh.source`` (``"instant"`` or ``"refined"``).
        voxel_size_m: resolution of the published mesh.
        frames_waiting: frames waiting for integration (a refresh is put off while
            ``output.defer_refresh_backlog_frames`` or more wait).
    """

    def __init__(self, node: PanopticLifecycleNode, session, output: MapOutputConfig,
                 api: PlannerApiConfig, map_frame: str, source: str, voxel_size_m: float,
                 frames_waiting: Callable[[], int] = lambda: 0):
        self.node = node
        self._frames_waiting = frames_waiting
        self.session = session
        self._output_config = output
        self._frame, self._source, self._voxel = map_frame, source, voxel_size_m
        self.api: PlannerApi | None = None
        self.outputs: MapOutputs | None = None
        self.refresh_worker: PeriodicWorker | None = None
        self._saved = False
        if api.serve:
            self.api = PlannerApi(node, session, api, on_withdraw=self._on_api_withdrawn,
                                  callback_group=ReentrantCallbackGroup())
            try:
                self.api.advertise()
            except PlannerApiConflict as exc:
                node.get_logger().error(f"planner API not served: {exc}")
                self.api = None
        self._make_outputs(api.namespace if self.api else "~")

    @property
    def namespace(self) -> str:
        """Where the map topics are published."""
        return self.outputs.namespace if self.outputs is not None else "~"

    def start(self) -> None:
        """Start the refresh worker and the publishing timer (with the node's streaming)."""
        output = self._output_config
        backlog = output.defer_refresh_backlog_frames
        self.refresh_worker = PeriodicWorker(
            "refresh", 1.0 / output.rate_hz, output.max_refresh_share, self._refresh,
            self.node.worker_error, nice=REFRESH_NICE,
            defer=(lambda: self._frames_waiting() >= backlog) if backlog else None,
            max_defer_s=output.max_refresh_delay_s)
        self.node.start_worker(self.refresh_worker)
        self.node.add_timer(1.0 / output.rate_hz, self._publish,
                            MutuallyExclusiveCallbackGroup())

    def set_color_mode(self, mode: str) -> None:
        if self.outputs is not None:
            self.outputs.set_color_mode(mode)

    def save_on_shutdown(self, path: str) -> None:
        """Save the whole map to ``path`` once (``save_on_shutdown_path``), logging the result."""
        if not path or self._saved:
            return
        try:
            written = self.session.save(path)
            self._saved = True
            self.node.get_logger().info(f"map saved to {written} "
                                        f"({self.session.snapshot.num_frames} frames served)")
        except (PanopticMapperError, OSError) as exc:
            self.node.get_logger().error(f"saving the map on shutdown failed: {exc}")

    def release(self) -> None:
        """Withdraw the services and the topics (idempotent)."""
        if self.api is not None:
            quietly(self.api.withdraw)
            self.api = None
        if self.outputs is not None:
            quietly(self.outputs.destroy)
            self.outputs = None

    def diagnostics_values(self) -> dict[str, object]:
        """What is served now (the snapshot) and the refresh worker's work."""
        snapshot = self.session.snapshot
        worker = self.refresh_worker
        return {"snapshot_stamp_s": f"{snapshot.stamp_ns / 1e9:.3f}",
                "snapshot_frames": snapshot.num_frames,
                "map_instances": len(snapshot.instances),
                "mesh_vertices": snapshot.mesh.num_vertices,
                "refresh_busy_s": f"{worker.busy_s:.1f}" if worker is not None else "0",
                "planner_api": "served" if self.api else "not served"}

    # ---- workers and timers --------------------------------------------------------------------
    def _refresh(self) -> None:
        """The refresh worker: a new snapshot when what is served changed."""
        snapshot = self.session.refresh()
        if snapshot is None:
            return
        self.node.stats.time("refresh", snapshot.refresh_ms / 1e3)
        if self.session.query_table_error:
            self.node.problem("query_table", "query_objects answers from the previous instance "
                              f"table: {self.session.query_table_error}")

    def _publish(self) -> None:
        if self.outputs is None:
            return
        report = self.outputs.publish(self.session.snapshot)
        if report is not None:
            self.node.stats.time("publish", report.build_ms / 1e3)

    def _make_outputs(self, namespace: str) -> None:
        self.outputs = MapOutputs(self.node, self.session.registry, self._output_config,
                                  namespace, self._frame, self._source, self._voxel)

    def _on_api_withdrawn(self, reason: str) -> None:
        self.api = None
        if self.outputs is not None:
            self.outputs.destroy()
        self._make_outputs("~")
        self.session.refresh(force=True)
