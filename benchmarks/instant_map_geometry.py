"""Geometry of the instant map on the Replica fixture: how close the fused mesh lies to the truth.

Fuses the 4 frames of ``shared/data/replica_office0_nvblox_fixture`` (1200x680 renders of a real
scan, with the ground-truth mesh ``office0_mesh.ply``) into the instant map, geometry only, at
several voxel sizes, extracts the mesh and measures the exact point-to-triangle distance from
every fused vertex to the ground-truth surface (``RaycastingScene.compute_distance``).

The renders are noise-free, so this checks the pipeline (poses, intrinsics, integration,
marching cubes), not robustness to sensor noise. The ground-truth mesh is a decimated copy
(50 000 faces), so its flat facets deviate slightly from the real surface.

Run (from the repository root):
    PYTHONPATH=. .venv/bin/python benchmarks/instant_map_geometry.py [--voxels 0.04 0.02 0.01]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "replica_office0_nvblox_fixture"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--voxels", type=float, nargs="+", default=[0.04, 0.02, 0.01],
                        help="voxel sizes, m")
    parser.add_argument("--threshold", type=float, default=0.02,
                        help="distance counted as 'on the surface', m")
    args = parser.parse_args(argv)

    import open3d as o3d
    import open3d.core as o3c

    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.labels import LabelRegistry
    from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap

    data = Path(args.data)
    gt = o3d.t.io.read_triangle_mesh(str(data / "office0_mesh.ply"))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3c.Tensor(gt.vertex.positions.numpy().astype(np.float32)),
                        o3c.Tensor(gt.triangle.indices.numpy().astype(np.uint32)))
    frames = [sample.frame for sample in open_dataset(data)]
    registry = LabelRegistry.default()
    print(f"{len(frames)} frames {frames[0].intrinsics.width}x{frames[0].intrinsics.height}, "
          f"ground truth {gt.triangle.indices.shape[0]} triangles; "
          f"share of fused vertices within {args.threshold * 100:.0f} cm of it:")
    print("| voxel | vertices | median (cm) | mean (cm) | within "
          f"{args.threshold * 100:.0f} cm | integrate ms/frame (mean) |")
    print("|---|---|---|---|---|---|")
    for voxel in args.voxels:
        mapper = InstantPanopticMap.from_config(
            {"tsdf": {"voxel_size_m": voxel, "block_count": 20000 if voxel < 0.015 else 6000},
             "mesh": {"weight_threshold": 1.0}}, registry)
        t0 = time.perf_counter()
        for frame in frames:
            report = mapper.integrate_frame(frame, None)
            if not report.accepted:
                print(f"frame {frame.index} rejected: {report.reason}")
        ms = (time.perf_counter() - t0) / len(frames) * 1e3
        mapper.update_mesh()
        vertices = mapper.get_mesh().vertices_m
        dist = scene.compute_distance(o3c.Tensor(vertices.astype(np.float32))).numpy()
        print(f"| {voxel * 100:.0f} cm | {vertices.shape[0]} | {np.median(dist) * 100:.2f} | "
              f"{dist.mean() * 100:.2f} | {(dist <= args.threshold).mean() * 100:.1f} % | "
              f"{ms:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
