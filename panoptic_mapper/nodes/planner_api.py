"""The planner-facing services, under one namespace, served by exactly one node of a graph.

Services (default namespace ``/panoptic_mapper``):

=================  =============================  ===============================================
name               type                           answer
=================  =============================  ===============================================
query_objects      panoptic_mapper/QueryObjects   instances matching free text, best first
list_instances     panoptic_mapper/ListInstances  instances, optionally of one label / things only
save_map           panoptic_mapper/SaveMap        writes the full map state
load_map           panoptic_mapper/LoadMap        replaces the map with a saved one
export_mesh        panoptic_mapper/ExportMesh     writes the mesh as PLY (colour mode, ids)
reset              std_srvs/Trigger               empties the map
=================  =============================  ===============================================

**One endpoint for planners.** Whichever nodes run, planners call the same names. The
``planner_api.serve`` parameter says which node serves them; the launch files set it to the
instant semantics node when no mapper_node runs and to the mapper_node when it does. As a
guard against a misconfigured graph, :class:`PlannerApi` refuses to advertise when another node
already serves the namespace, and if two nodes started at the same moment, the one whose fully
qualified name sorts last withdraws after ``discovery_wait_s``; so never two nodes answer.

Every handler answers ``success=False`` with a message naming the field and value instead of
raising: an exception escaping a service callback would stop the node's executor.

Owns: service names, request validation, srv <-> core translation, the single-server guard.
Does not own: the map (``map_session``) or the matching behind ``query_objects`` (the backend).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

from rclpy.callback_groups import CallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from std_srvs.srv import Trigger

from panoptic_mapper.core.errors import InvalidInputError, PanopticMapperError
from panoptic_mapper.core.query.engine import QueryResult
from panoptic_mapper.core.types import MapInstance
from panoptic_mapper.runtime.map_session import ExportResult, MapSnapshot
from panoptic_mapper.runtime.node_config import PlannerApiConfig
from panoptic_mapper.ros.panoptic_conversions import map_instance_msg_from_core
from panoptic_mapper.srv import ExportMesh, ListInstances, LoadMap, QueryObjects, SaveMap

SERVICE_TYPES = {
    "query_objects": QueryObjects, "list_instances": ListInstances, "save_map": SaveMap,
    "load_map": LoadMap, "export_mesh": ExportMesh, "reset": Trigger,
}
"""Service name (relative to the API namespace) -> type."""


class PlannerBackend(Protocol):
    """What the services need from the node's map (``MapSession`` provides it)."""

    @property
    def snapshot(self) -> MapSnapshot: ...

    def query_objects(self, query: str, max_results: int, min_score: float) -> QueryResult: ...

    def list_instances(self, label: str = "", things_only: bool = False
                       ) -> list[MapInstance]: ...

    def save(self, path: str | Path) -> Path: ...

    def load(self, path: str | Path) -> None: ...

    def export_mesh(self, path: str | Path, color_mode: str = "rgb") -> ExportResult: ...

    def reset(self) -> None: ...


class PlannerApiConflict(PanopticMapperError):
    """Another node already serves the planner API namespace."""


def service_name(namespace: str, name: str) -> str:
    """Absolute name of one planner service, e.g. ``/panoptic_mapper/query_objects``."""
    return f"{namespace.rstrip('/')}/{name}"


def servers_of(node: Node, name: str) -> list[str]:
    """Fully qualified names of the nodes (other than ``node``) that serve service ``name``."""
    own = node.get_fully_qualified_name()
    servers = []
    for node_name, namespace in node.get_node_names_and_namespaces():
        fqn = f"{namespace.rstrip('/')}/{node_name}"
        if fqn == own:
            continue
        try:
            services = node.get_service_names_and_types_by_node(node_name, namespace)
        except Exception:  # noqa: BLE001 - the node left the graph between the two calls
            continue
        if any(service == name for service, _ in services):
            servers.append(fqn)
    return sorted(servers)


class PlannerApi:
    """The six planner services of one node (see the module docstring).

    Services run in their own callback group, so with a MultiThreadedExecutor they are
    answered while the node integrates frames in its worker.
    """

    def __init__(self, node: Node, backend: PlannerBackend, config: PlannerApiConfig,
                 on_withdraw: Callable[[str], None] | None = None,
                 callback_group: CallbackGroup | None = None):
        self._node = node
        self._backend = backend
        self._config = config
        self._on_withdraw = on_withdraw
        self._group = callback_group or ReentrantCallbackGroup()
        self._services: list = []
        self._guard_timer = None
        self._handlers = {
            "query_objects": self._query_objects, "list_instances": self._list_instances,
            "save_map": self._save_map, "load_map": self._load_map,
            "export_mesh": self._export_mesh, "reset": self._reset,
        }

    @property
    def namespace(self) -> str:
        return self._config.namespace

    @property
    def active(self) -> bool:
        return bool(self._services)

    def names(self) -> list[str]:
        """Absolute names of the services."""
        return [service_name(self.namespace, n) for n in SERVICE_TYPES]

    def advertise(self, wait_s: float | None = None) -> None:
        """Create the services, unless another node serves them already.

        Args:
            wait_s: how long to let discovery find another server first (default: the
                config's ``discovery_wait_s``).

        Raises:
            PlannerApiConflict: another node serves the namespace.
        """
        wait_s = self._config.discovery_wait_s if wait_s is None else wait_s
        probe = service_name(self.namespace, "query_objects")
        others = _wait_for_servers(self._node, probe, wait_s)
        if others:
            raise PlannerApiConflict(
                f"{others} already serve{'s' if len(others) == 1 else ''} {self.namespace}; "
                f"{self._node.get_fully_qualified_name()} will not (only one node of a graph "
                "may set planner_api.serve)")
        for name, srv_type in SERVICE_TYPES.items():
            self._services.append(self._node.create_service(
                srv_type, service_name(self.namespace, name), self._handlers[name],
                callback_group=self._group))
        if wait_s > 0:
            self._guard_timer = self._node.create_timer(wait_s, self._check_conflict,
                                                        callback_group=self._group)

    def withdraw(self) -> None:
        """Destroy the services (idempotent)."""
        if self._guard_timer is not None:
            self._node.destroy_timer(self._guard_timer)
            self._guard_timer = None
        for service in self._services:
            self._node.destroy_service(service)
        self._services = []

    def _check_conflict(self) -> None:
        """One-shot tie-break for two servers that advertised at the same moment."""
        self._node.destroy_timer(self._guard_timer)
        self._guard_timer = None
        others = servers_of(self._node, service_name(self.namespace, "query_objects"))
        own = self._node.get_fully_qualified_name()
        if others and own > min(others):
            reason = (f"{others} also serve {self.namespace}; {own} withdraws (only one node "
                      "of a graph may set planner_api.serve)")
            self._node.get_logger().error(reason)
            self.withdraw()
            if self._on_withdraw is not None:
                self._on_withdraw(reason)

    # ---- handlers ------------------------------------------------------------------------------
    def _answer(self, response, action: Callable[[], str]):
        """Run ``action`` (which fills ``response`` and returns a message) and never raise."""
        try:
            response.message = action()
            response.success = True
        except (PanopticMapperError, OSError, ValueError) as exc:
            response.success = False
            response.message = str(exc)
        except Exception as exc:  # noqa: BLE001 - must not stop the executor
            response.success = False
            response.message = f"internal error: {type(exc).__name__}: {exc}"
            self._node.get_logger().error(f"planner service failed: {response.message}")
        return response

    def _query_objects(self, request: QueryObjects.Request, response: QueryObjects.Response):
        def action() -> str:
            if not request.query.strip():
                raise InvalidInputError("query", request.query, "must not be empty",
                                        kind="request")
            result = self._backend.query_objects(request.query, int(request.max_results),
                                                 float(request.min_score))
            response.instances = _instance_msgs(result.instances)
            notes = "".join(f"; {note}" for note in result.notes)
            return (f"{len(result.matches)} instance(s) for '{request.query}' with score >= "
                    f"{result.min_score:g} (map as of stamp {self._backend.snapshot.stamp_ns} "
                    f"ns){notes}")
        return self._answer(response, action)

    def _list_instances(self, request: ListInstances.Request,
                        response: ListInstances.Response):
        def action() -> str:
            found = self._backend.list_instances(request.label, bool(request.things_only))
            response.instances = _instance_msgs(found)
            return f"{len(found)} instance(s)"
        return self._answer(response, action)

    def _save_map(self, request: SaveMap.Request, response: SaveMap.Response):
        def action() -> str:
            path = self._backend.save(request.path)
            snapshot = self._backend.snapshot
            return (f"saved {snapshot.num_frames} frame(s), {len(snapshot.instances)} "
                    f"instance(s) to {path}")
        return self._answer(response, action)

    def _load_map(self, request: LoadMap.Request, response: LoadMap.Response):
        def action() -> str:
            self._backend.load(request.path)
            snapshot = self._backend.snapshot
            return (f"loaded {request.path}: {len(snapshot.instances)} instance(s), "
                    f"{snapshot.mesh.num_vertices} mesh vertices")
        return self._answer(response, action)

    def _export_mesh(self, request: ExportMesh.Request, response: ExportMesh.Response):
        def action() -> str:
            result = self._backend.export_mesh(request.path, request.color_mode or "rgb")
            response.num_vertices = result.num_vertices
            response.num_triangles = result.num_triangles
            return (f"wrote {result.path} ({result.num_vertices} vertices, "
                    f"{result.num_triangles} triangles)")
        return self._answer(response, action)

    def _reset(self, request: Trigger.Request, response: Trigger.Response):
        def action() -> str:
            self._backend.reset()
            return "map reset"
        return self._answer(response, action)


def _wait_for_servers(node: Node, name: str, wait_s: float) -> list[str]:
    """Other nodes serving ``name``, polling the graph for up to ``wait_s``."""
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        others = servers_of(node, name)
        if others or time.monotonic() >= deadline:
            return others
        time.sleep(0.1)


def _instance_msgs(instances: Sequence[MapInstance]) -> list:
    return [map_instance_msg_from_core(i) for i in instances]
