"""Cost of building, serialising and reading the big messages of the ROS graph.

Measures, on synthetic data of the given size:
  * PanopticMesh message from a core mesh (numpy -> array.array by memcpy), against the
    reference way of filling the same fields from Python lists, measured in the same process;
  * CDR serialisation / deserialisation of that message and the conversion back to a core mesh;
  * the RViz TRIANGLE_LIST marker of the same mesh (per-vertex Point/ColorRGBA objects);
  * a 640x480 rgb8 and 16UC1 image message in both directions.

Run: ``cd /work/main && PYTHONPATH=$PWD .venv/bin/python benchmarks/ros_conversions.py``
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message

from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import PanopticMesh
from panoptic_mapper.msg import PanopticMesh as PanopticMeshMsg
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros import markers
from panoptic_mapper.ros import panoptic_conversions as pconv


def grid_mesh(num_vertices: int, seed: int = 0) -> PanopticMesh:
    """A square grid with about ``num_vertices`` vertices, 2 triangles per cell, labels 0..22."""
    side = int(np.sqrt(num_vertices))
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    vertices = np.stack([u * 0.02, v * 0.02, rng.random(u.shape) * 0.01], -1).reshape(-1, 3)
    idx = np.arange(side * side).reshape(side, side)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:], idx[1:, 1:]
    triangles = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                                np.stack([b, d, c], -1).reshape(-1, 3)])
    n = len(vertices)
    return PanopticMesh(vertices, triangles, rng.integers(0, 256, (n, 3)),
                        rng.integers(0, 23, n), rng.integers(0, 200, n))


def list_based_mesh_msg(mesh: PanopticMesh, stamp_ns: int, frame_id: str) -> PanopticMeshMsg:
    """The reference: the same message filled from Python lists (what naive code does)."""
    msg = PanopticMeshMsg(header=conv.header_msg(stamp_ns, frame_id), source="instant")
    msg.vertices = mesh.vertices_m.reshape(-1).tolist()
    msg.triangles = mesh.triangles.reshape(-1).tolist()
    msg.colors = mesh.colors.reshape(-1).tolist()
    msg.label_ids = mesh.label_ids.tolist()
    msg.instance_ids = mesh.instance_ids.tolist()
    return msg


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertices", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    mesh = grid_mesh(args.vertices)
    print(f"mesh: {mesh.num_vertices} vertices, {mesh.num_triangles} triangles")
    msg = pconv.mesh_msg_from_core(mesh, 0, "map")
    raw = serialize_message(msg)
    rows = [
        ("mesh msg from core (memcpy)", timed(lambda: pconv.mesh_msg_from_core(mesh, 0, "map"),
                                              args.repeats)),
        ("mesh msg from Python lists (reference)",
         timed(lambda: list_based_mesh_msg(mesh, 0, "map"), args.repeats)),
        (f"serialize_message ({len(raw) / 1e6:.1f} MB)",
         timed(lambda: serialize_message(msg), args.repeats)),
        ("deserialize_message", timed(lambda: deserialize_message(raw, PanopticMeshMsg),
                                      args.repeats)),
        ("core mesh from msg", timed(lambda: pconv.mesh_from_msg(msg), args.repeats)),
    ]
    registry = LabelRegistry.default()
    marker = markers.mesh_marker(mesh, 0, "map")
    rows += [
        ("TRIANGLE_LIST marker (rgb colours)",
         timed(lambda: markers.mesh_marker(mesh, 0, "map"), max(1, args.repeats // 2))),
        ("TRIANGLE_LIST marker (semantic colours)",
         timed(lambda: markers.mesh_marker(mesh, 0, "map", "semantic", registry),
               max(1, args.repeats // 2))),
        ("serialize_message(marker)", timed(lambda: serialize_message(marker), 1)),
    ]
    rgb = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = np.random.default_rng(2).random((480, 640)).astype(np.float32) * 5
    rgb_msg = conv.image_msg_from_rgb(rgb, 0, "cam")
    depth_msg = conv.image_msg_from_depth(depth, 0, "cam")
    rows += [
        ("640x480 rgb8 msg from numpy", timed(lambda: conv.image_msg_from_rgb(rgb, 0, "cam"),
                                             20)),
        ("640x480 rgb8 msg to numpy", timed(lambda: conv.rgb_from_image_msg(rgb_msg), 20)),
        ("640x480 16UC1 msg from metres",
         timed(lambda: conv.image_msg_from_depth(depth, 0, "cam"), 20)),
        ("640x480 16UC1 msg to metres", timed(lambda: conv.depth_from_image_msg(depth_msg), 20)),
    ]
    reference = rows[1][1]
    print(f"{'operation':45s} {'median ms':>10s}")
    for name, ms in rows:
        print(f"{name:45s} {ms:10.2f}")
    print(f"list-based / memcpy mesh message build: {reference / rows[0][1]:.0f}x")


if __name__ == "__main__":
    main()
