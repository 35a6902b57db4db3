"""``mapping_process``: the instant semantics node and the mapper node in one process.

When both mapping nodes run on one machine, ``panoptic-mapper launch`` and the launch file start
them here (launch argument ``colocate_mapper``, default true), in one executor: the instant node
first (it registers its map, ``runtime/shared_maps.py``), then the mapper, which derives its
refined layer from that map instead of integrating the stream a second time. Each node keeps
its own name, parameters (its section of the parameter file), topics, services and lifecycle.

Run it with ``--ros-args --params-file FILE`` (no ``__node`` remapping: it would rename both
nodes).
"""
from __future__ import annotations

import sys

from panoptic_mapper.nodes.instant_semantics_node import InstantSemanticsNode
from panoptic_mapper.nodes.mapper_node import MapperNode
from panoptic_mapper.nodes.node_base import run_nodes


def main(args: list[str] | None = None) -> int:
    """Console entry point: ``mapping_process --ros-args --params-file ...``."""
    return run_nodes([InstantSemanticsNode, MapperNode], args)


if __name__ == "__main__":
    sys.exit(main())
