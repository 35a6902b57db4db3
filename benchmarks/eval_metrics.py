"""Cost of the evaluation itself: panoptic metrics on a realistic number of scored pixels, and
the 3D steps (surface sampling, visibility, point-to-mesh distances) on the Replica fixture mesh.

References measured in the same process: ``np.unique`` of the same number of int64 keys (the
sort a naive PQ needs at least once) and ``scipy.spatial.cKDTree`` nearest-vertex queries for
the same points.

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/eval_metrics.py
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from panoptic_mapper.core.eval.metrics import (ConfusionMatrix, PanopticImage,
                                               image_wise_panoptic_quality, scene_panoptic_quality)
from panoptic_mapper.core.eval.surface import (VisibilityAccumulator, closest_surface_points,
                                               point_to_mesh_distance_m, sample_surface)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPLICA = SHARED_DATA / "replica_office0_nvblox_fixture"
THINGS = set(range(10, 23))


def best_of(repeats: int, fn) -> float:
    """Best wall-clock time of ``repeats`` calls, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def synthetic_frames(frames: int, height: int, width: int, seed: int = 0):
    """Blocky label/instance images (5 stuff + 13 thing labels, ~60 instances) and a noisy
    prediction whose instance ids are renumbered."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(frames):
        blocks = rng.integers(0, 60, size=(height // 16 + 1, width // 16 + 1))
        instance = np.kron(blocks, np.ones((16, 16), np.int64))[:height, :width]
        label = np.where(instance < 12, instance % 5 + 1, 10 + instance % 13)
        label[rng.random(label.shape) < 0.02] = 0
        gt_instance = np.where(label >= 10, instance, 0)
        noise = rng.random(label.shape) < 0.1
        pred_label = np.where(noise, rng.choice([0, 1, 10, 11], label.shape), label)
        pred_instance = np.where(noise, rng.integers(1, 100, label.shape), gt_instance * 7 + 3)
        gts.append(PanopticImage(label.astype(np.int32), gt_instance.astype(np.int32)))
        preds.append(PanopticImage(pred_label.astype(np.int32), pred_instance.astype(np.int32)))
    return gts, preds


def panoptic_section(frames: int, height: int, width: int, repeats: int) -> None:
    gts, preds = synthetic_frames(frames, height, width)
    pixels = frames * height * width
    keys = np.concatenate([(g.label_ids.astype(np.int64) << 32) + p.instance_ids
                           for g, p in zip(gts, preds)]).ravel()
    t_ref = best_of(repeats, lambda: np.unique(keys))
    t_scene = best_of(repeats, lambda: scene_panoptic_quality(gts, preds, THINGS))
    t_image = best_of(repeats, lambda: image_wise_panoptic_quality(gts, preds, THINGS))

    def confusion():
        matrix = ConfusionMatrix()
        for g, p in zip(gts, preds):
            matrix.add(g.label_ids, p.label_ids)
        return matrix.scores()

    t_cm = best_of(repeats, confusion)
    print(f"\n{frames} frames of {width}x{height} = {pixels / 1e6:.1f} M pixels "
          f"(best of {repeats})\n")
    print("| what | time | vs np.unique of the same number of int64 keys |")
    print("|---|---|---|")
    print(f"| np.unique (reference) | {1e3 * t_ref:.0f} ms | 1.00x |")
    for name, t in (("scene_panoptic_quality", t_scene),
                    ("image_wise_panoptic_quality", t_image),
                    ("ConfusionMatrix (2D mIoU/mAcc)", t_cm)):
        print(f"| {name} | {1e3 * t:.0f} ms | {t / t_ref:.2f}x |")


def surface_section(samples: int, repeats: int) -> None:
    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.io.ply import read_ply

    dataset = open_dataset(REPLICA)
    mesh = read_ply(dataset.gt_mesh_path)
    frames = list(dataset)
    points = sample_surface(mesh.vertices_m, mesh.triangles, samples, seed=0)
    t_sample = best_of(repeats, lambda: sample_surface(mesh.vertices_m, mesh.triangles,
                                                       samples, seed=0))

    def visibility():
        accumulator = VisibilityAccumulator(mesh, points)
        for sample in frames:
            accumulator.observe(sample.frame.depth_m, sample.frame.T_world_cam,
                                sample.frame.intrinsics)
        return accumulator

    t_visibility = best_of(repeats, visibility)
    observed = int(visibility().observed.sum())
    t_distance = best_of(repeats, lambda: point_to_mesh_distance_m(
        points.points_m, mesh.vertices_m, mesh.triangles))
    t_closest = best_of(repeats, lambda: closest_surface_points(
        points.points_m, mesh.vertices_m, mesh.triangles))
    from scipy.spatial import cKDTree

    t_kdtree = best_of(repeats, lambda: cKDTree(mesh.vertices_m).query(points.points_m))
    width, height = frames[0].frame.intrinsics.width, frames[0].frame.intrinsics.height
    print(f"\nReplica office0 fixture mesh ({mesh.num_triangles} triangles), {samples} surface "
          f"samples, {len(frames)} frames of {width}x{height} (best of {repeats}); "
          f"{observed} samples observed\n")
    print("| what | time | vs cKDTree nearest vertex, same points |")
    print("|---|---|---|")
    print(f"| cKDTree build + query (reference) | {1e3 * t_kdtree:.0f} ms | 1.00x |")
    for name, t in (("sample_surface", t_sample),
                    (f"VisibilityAccumulator, {len(frames)} frames", t_visibility),
                    ("point_to_mesh_distance_m", t_distance),
                    ("closest_surface_points", t_closest)):
        print(f"| {name} | {1e3 * t:.0f} ms | {t / t_kdtree:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    panoptic_section(args.frames, args.height, args.width, args.repeats)
    if REPLICA.is_dir():
        surface_section(args.samples, args.repeats)
    else:
        print(f"\n(Replica fixture not found at {REPLICA}: 3D section skipped)")


if __name__ == "__main__":
    main()
