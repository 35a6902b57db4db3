"""Throughput of dataset reading, bag writing/reading and PLY I/O (results go to BENCHMARKS.md).

References measured in the same process: decoding the 7-Scenes folder (PIL JPEG + PNG) for the
bag numbers, and Open3D's PLY reader/writer on the same mesh for the PLY numbers.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/dataset_bag_io.py [--frames 100]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from panoptic_mapper.core.io.bag import read_bag, write_bag
from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.io.ply import read_ply, write_ply
from panoptic_mapper.core.types import PanopticMesh

SHARED = Path(os.environ.get("PANOPTIC_MAPPER_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def best_of(repeats: int, function) -> float:
    """Fastest of ``repeats`` wall-clock runs, seconds (the machine is shared and noisy)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def bag_numbers(frames: int, work: Path) -> None:
    dataset = open_dataset(SHARED / "7scenes_redkitchen_stride4", max_frames=frames)
    decode_s = best_of(3, lambda: sum(1 for _ in dataset))
    print(f"7-Scenes folder decode: {frames / decode_s:7.1f} frames/s (reference)")
    samples = list(dataset)
    for storage in ("mcap", "sqlite3"):
        bag = work / storage

        def write_once() -> None:
            shutil.rmtree(bag, ignore_errors=True)
            write_bag(bag, samples, dataset.intrinsics, storage=storage, progress=False)

        write_s = best_of(3, write_once)
        size_mb = sum(f.stat().st_size for f in bag.iterdir()) / 1e6
        read_s = best_of(3, lambda: sum(1 for _ in read_bag(bag)))
        shutil.rmtree(bag)
        print(f"{storage:8s} write: {frames / write_s:7.1f} frames/s "
              f"({decode_s / write_s:4.2f}x decode) | read: {frames / read_s:7.1f} frames/s "
              f"({decode_s / read_s:4.2f}x decode) | {size_mb / frames:.2f} MB/frame")


def ply_numbers(work: Path) -> None:
    import open3d as o3d

    rng = np.random.default_rng(0)
    n = 1_000_000
    mesh = PanopticMesh(rng.random((n, 3)), rng.integers(0, n, (2 * n, 3)),
                        rng.integers(0, 256, (n, 3)), rng.integers(0, 23, n),
                        rng.integers(0, 50, n))
    ours, theirs = work / "ours.ply", work / "o3d.ply"
    o3d_mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices_m),
                                         o3d.utility.Vector3iVector(mesh.triangles))
    o3d_mesh.vertex_colors = o3d.utility.Vector3dVector(mesh.colors / 255.0)
    write_s = best_of(3, lambda: write_ply(ours, mesh))
    o3d_write_s = best_of(3, lambda: o3d.io.write_triangle_mesh(str(theirs), o3d_mesh))
    read_s = best_of(3, lambda: read_ply(ours))
    o3d_read_s = best_of(3, lambda: o3d.io.read_triangle_mesh(str(ours)))
    print(f"PLY 1M vertices / 2M triangles: write {write_s * 1e3:6.0f} ms "
          f"({o3d_write_s / write_s:4.1f}x faster than Open3D), read {read_s * 1e3:6.0f} ms "
          f"({o3d_read_s / read_s:4.1f}x faster than Open3D on the same file)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bag_numbers(args.frames, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        ply_numbers(Path(tmp))


if __name__ == "__main__":
    main()
