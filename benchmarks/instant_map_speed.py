"""Speed of the instant map on real sensor data, against bare Open3D TSDF integration.

Replays ``shared/data/7scenes_redkitchen_stride4`` (250 real Kinect frames, 640x480) through two
pipelines in one process, frame by frame (each frame goes through both before the next one is
decoded, so both see the same machine load); decoding and building the 2D input are not timed:

* reference: Open3D ``VoxelBlockGrid`` with tsdf/weight/color only; per frame
  ``compute_unique_block_coordinates`` + ``integrate`` (the same voxel size, truncation, depth
  range, preallocated blocks and float image inputs as the map uses);
* the instant map: ``integrate_frame`` (input checks, the same TSDF integration, sampling,
  semantic voting, instance association and instance votes), then ``update_mesh`` once.

7-Scenes has no labels, so the 2D input is synthetic but world-consistent (as in
``shared/reference/geometry-perf.md`` section 3): a pixel's class comes from a hash of the
0.5 m cell its 3D point falls in, its instance from the 0.3 m cell; each frame turns that into a
``PanopticSegmentation2D`` with per-frame ids shuffled, built before the frame's timing starts
(a segmenter hands its output over ready-made). This is a stress test for association: about
200 segments per frame, far more than a real segmenter gives.

Run (from the repository root):
    PYTHONPATH=. .venv/bin/python benchmarks/instant_map_speed.py [--frames 250] [--voxel 0.02]

Prints per-frame medians / p95 of both, their ratio, the map's total time for all frames plus
the final mesh extraction, and the peak RSS of the process. The ratio is the number to quote:
both sides run in the same process on the same frames, interleaved, which cancels most of the
machine's load noise.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "7scenes_redkitchen_stride4"


def synthetic_segmentation(frame, registry, rng):
    """World-consistent synthetic 2D panoptic input for one frame (see module docstring)."""
    from panoptic_mapper.core.geometry.camera import back_project_to_world
    from panoptic_mapper.core.types import PanopticSegmentation2D, Segment

    intr = frame.intrinsics
    depth = frame.depth_m
    v, u = np.mgrid[0:intr.height, 0:intr.width]
    world = back_project_to_world(frame.T_world_cam, intr, u, v, depth)
    labels = registry.labels
    cls_cell = np.floor(world / 0.5).astype(np.int64)
    inst_cell = np.floor(world / 0.3).astype(np.int64)
    primes = np.array([73856093, 19349663, 83492791])
    cls_hash = (cls_cell * primes).sum(-1) % len(labels)
    inst_hash = (inst_cell * primes).sum(-1) % 32
    valid = depth > 0
    key = np.where(valid, cls_hash * 32 + inst_hash + 1, 0)
    uniq, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(key.shape)
    new_ids = rng.permutation(uniq.size) + 1
    ids = np.where(key > 0, new_ids[inverse], 0).astype(np.int32)
    segments = []
    for k, value in enumerate(uniq):
        if value == 0:
            continue
        label = labels[int((value - 1) // 32)]
        segments.append(Segment(int(new_ids[k]), label.name, label.id, label.is_thing, 0.9))
    return PanopticSegmentation2D(ids, tuple(segments), frame.stamp_ns)


class BareReference:
    """Geometry-only VoxelBlockGrid integration, the reference of the speed ratio."""

    def __init__(self, voxel_size_m, block_count, trunc_voxels=4.0, depth_max_m=4.0):
        import open3d as o3d
        import open3d.core as o3c

        self.o3d, self.o3c = o3d, o3c
        self.trunc_voxels, self.depth_max_m = trunc_voxels, depth_max_m
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32,) * 3,
            attr_channels=(1, 1, 3), voxel_size=voxel_size_m, block_resolution=8,
            block_count=block_count, device=o3c.Device("CPU:0"))

    def integrate(self, frame) -> float:
        """Seconds to integrate one frame."""
        o3d, o3c = self.o3d, self.o3c
        t0 = time.perf_counter()
        K = o3c.Tensor(frame.intrinsics.K)
        extrinsic = o3c.Tensor(np.linalg.inv(frame.T_world_cam))
        depth = o3d.t.geometry.Image(o3c.Tensor.from_numpy(frame.depth_m))
        color = o3d.t.geometry.Image(o3c.Tensor.from_numpy(
            frame.rgb.astype(np.float32) * np.float32(1.0 / 255.0)))
        keys = self.vbg.compute_unique_block_coordinates(depth, K, extrinsic, 1.0,
                                                         self.depth_max_m, self.trunc_voxels)
        self.vbg.integrate(keys, depth, color, K, K, extrinsic, 1.0, self.depth_max_m,
                           self.trunc_voxels)
        return time.perf_counter() - t0

    def mesh(self) -> tuple[float, int]:
        """(seconds, triangles) of marching cubes."""
        t0 = time.perf_counter()
        mesh = self.vbg.extract_triangle_mesh(3.0)
        return time.perf_counter() - t0, int(mesh.triangle.indices.shape[0])


def run(dataset, registry, config, voxel_size_m, block_count):
    """Both pipelines frame by frame (the same load conditions for both), then both meshes."""
    from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap

    reference = BareReference(voxel_size_m, block_count)
    mapper = InstantPanopticMap.from_config(config, registry)
    rng = np.random.default_rng(0)
    ref_times, times, num_segments = [], [], []
    stages = {"geometry_ms": [], "voting_ms": [], "association_ms": []}
    for sample in dataset:
        seg = synthetic_segmentation(sample.frame, registry, rng)
        num_segments.append(len(seg.segments))
        ref_times.append(reference.integrate(sample.frame))
        t0 = time.perf_counter()
        report = mapper.integrate_frame(sample.frame, seg)
        times.append(time.perf_counter() - t0)
        if not report.accepted:
            print(f"  frame {sample.frame.index} rejected: {report.reason}")
        for key in stages:
            stages[key].append(report.stats.get(key, np.nan))
    ref_mesh = reference.mesh()
    t0 = time.perf_counter()
    update = mapper.update_mesh()
    mesh_s = time.perf_counter() - t0
    return {"ref": np.array(ref_times), "ref_mesh": ref_mesh, "map": np.array(times),
            "stages": stages, "mesh_s": mesh_s, "update": update, "mapper": mapper,
            "segments": float(np.mean(num_segments))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--voxel", type=float, default=0.02, help="voxel size, m")
    parser.add_argument("--block-count", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=1, help="repeat the whole run")
    args = parser.parse_args(argv)

    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.labels import LabelRegistry

    registry = LabelRegistry.default()
    dataset = open_dataset(args.data, max_frames=args.frames)
    config = {"tsdf": {"voxel_size_m": args.voxel, "block_count": args.block_count}}
    print(f"{len(dataset)} frames of {args.data}, voxel {args.voxel * 100:.0f} cm")
    for repeat in range(args.repeats):
        r = run(dataset, registry, config, args.voxel, args.block_count)
        ref, times = r["ref"], r["map"]
        print(f"run {repeat + 1}: ({r['segments']:.0f} segments per frame)")
        print(f"  bare VBG integrate   median {np.median(ref) * 1e3:6.1f} ms  "
              f"p95 {np.percentile(ref, 95) * 1e3:6.1f} ms  mean {ref.mean() * 1e3:6.1f} ms  "
              f"(mesh {r['ref_mesh'][0]:.2f} s, {r['ref_mesh'][1]} triangles)")
        print(f"  instant map          median {np.median(times) * 1e3:6.1f} ms  "
              f"p95 {np.percentile(times, 95) * 1e3:6.1f} ms  mean {times.mean() * 1e3:6.1f} ms")
        print("    stages (median ms): " + ", ".join(
            f"{k[:-3]} {np.nanmedian(v):.1f}" for k, v in r["stages"].items()))
        print(f"  ratio of medians     {np.median(times) / np.median(ref):.2f}x "
              f"(median of per-frame ratios {np.median(times / ref):.2f}x)")
        update, mapper = r["update"], r["mapper"]
        print(f"  map time, all frames + mesh {times.sum() + r['mesh_s']:.1f} s "
              f"(mesh {r['mesh_s']:.2f} s, {update.num_vertices} vertices, "
              f"{update.num_triangles} triangles, {mapper.grid.num_blocks} blocks, "
              f"{len(mapper.get_instances())} instances)")
        del r, mapper
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"peak RSS {peak_mb:.0f} MB (whole process, both grids; frames decoded one at a time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
