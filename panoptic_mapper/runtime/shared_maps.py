"""Maps shared between the nodes of one process: how a co-located mapper finds the instant map.

``panoptic-mapper launch`` (and the launch file) start the instant semantics node and the
mapper node in one process when both run on one machine. The instant node registers its map
session here under its node name when it is configured; the mapper node looks it up when it is
configured (``prior.source: auto`` or ``colocated``) and derives its refined layer from it, so
the stream is integrated once. Nothing crosses DDS between the two.

ROS-free, thread-safe. Owns: the per-process registry.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from panoptic_mapper.core.tracking.instance_geometry import InstanceSummaryConfig
from panoptic_mapper.runtime.map_session import MapSession


@dataclass(frozen=True)
class SharedInstantMap:
    """What an instant node shares with the layers derived from its map."""

    node_name: str
    session: MapSession
    frames_waiting: Callable[[], int]
    """Frames waiting for (or in) integration: background training and refreshes yield."""
    summary: InstanceSummaryConfig
    """Box and colour rules of the instant map's instances (derived instances follow them)."""
    voxel_size_m: float


_lock = threading.Lock()
_maps: dict[str, SharedInstantMap] = {}


def register(shared: SharedInstantMap) -> None:
    """Offer a map to the other nodes of this process (replaces one of the same name)."""
    with _lock:
        _maps[shared.node_name] = shared


def unregister(node_name: str, session: MapSession | None = None) -> None:
    """Withdraw a map (only if it is still ``session``, when given)."""
    with _lock:
        current = _maps.get(node_name)
        if current is not None and (session is None or current.session is session):
            del _maps[node_name]


def lookup(node_name: str) -> SharedInstantMap | None:
    """The map a node of this process registered under ``node_name``, or None."""
    with _lock:
        return _maps.get(node_name)
