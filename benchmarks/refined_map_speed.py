"""Refined map speed on this machine: hash-grid throughput, training steps in both rendering
modes, publishing (vertex labelling) and label renders.

All timings come from the same process, interleaved (A, B, A, B, ...) so that a shared, noisy
machine affects both sides alike; ratios are reported next to absolute times.

1. Pure-PyTorch hash grid (``implementation="torch"``): points per second, forward only and
   forward + backward, for the SDF grid and the label grids of the default config.
2. One training step (panoptic phase) in ``depth_guided`` mode (the CPU default) and in the
   paper's ``volume`` mode, on the keyframes of a synthetic scene.
3. Publishing (labelling the prior's mesh vertices with the field) and ``render_labels``.

Example (the BENCHMARKS.md numbers):
  PYTHONPATH=. .venv/bin/python benchmarks/refined_map_speed.py /tmp/refined_bench/s0_medium \\
      --threads 2 --out /tmp/refined_bench/speed.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from panoptic_mapper.core.field.config import PanopticFieldConfig
from panoptic_mapper.core.field.encodings import HashGridEncoding
from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig, RefinedPanopticMap


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def hash_grid_throughput(points: int, repeats: int) -> dict:
    """Points per second of the torch hash grid for the default SDF and label grids."""
    defaults = PanopticFieldConfig()
    out = {}
    for name, grid in (("sdf", defaults.sdf_grid), ("semantic/instance", defaults.semantic_grid)):
        encoding = HashGridEncoding(grid.replace(implementation="torch"))
        x = torch.rand(points, 3, generator=torch.Generator().manual_seed(0))

        def forward():
            with torch.no_grad():
                encoding(x)

        def forward_backward():
            encoding.table().grad = None
            encoding(x).sum().backward()

        forward()
        fwd = statistics.median(_time(forward, repeats))
        both = statistics.median(_time(forward_backward, repeats))
        out[name] = {"grid": grid.to_dict(), "points": points,
                     "forward_points_per_s": points / fwd,
                     "forward_backward_points_per_s": points / both}
    return out


def _integrated_map(scene: Path, max_frames: int | None) -> RefinedPanopticMap:
    dataset = open_dataset(scene, max_frames=max_frames)
    refined = RefinedPanopticMap(dataset.registry, RefinedMapConfig())
    for sample in dataset.iter_samples():
        refined.integrate_frame(sample.frame, sample.segmentation)
    refined.prior.finalize()
    return refined


def training_steps(refined: RefinedPanopticMap, steps: int, rounds: int) -> dict:
    """ms per panoptic-phase step, depth-guided vs volume, interleaved in rounds."""
    trainer = refined.trainer
    trainer.step_count = int(0.5 * trainer.total_steps)  # panoptic phase, no maintenance due
    sampler = trainer.config.sampler
    modes = {"depth_guided": sampler, "volume": sampler.replace(mode="volume")}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, config in modes.items():
            trainer.config.sampler = config
            trainer.manager_state.window_start_step = trainer.step_count  # keep maintenance off
            start = time.perf_counter()
            trainer.train_steps(steps)
            times[name].append((time.perf_counter() - start) / steps)
    trainer.config.sampler = modes["depth_guided"]
    result = {name: {"ms_per_step_median": 1e3 * statistics.median(t),
                     "ms_per_step_all": [1e3 * v for v in t]} for name, t in times.items()}
    result["volume_over_depth_guided"] = (result["volume"]["ms_per_step_median"]
                                          / result["depth_guided"]["ms_per_step_median"])
    return result


def publishing(refined: RefinedPanopticMap, scene: Path, renders: int) -> dict:
    """Seconds to label the prior's mesh with the field; ms per label render, refined vs prior."""
    start = time.perf_counter()
    refined.layer._publish(refined.trainer)
    publish_s = time.perf_counter() - start
    dataset = open_dataset(scene, max_frames=renders)
    poses = [(s.frame.T_world_cam, s.frame.intrinsics) for s in dataset.iter_samples()]
    refined_ms, prior_ms = [], []
    for T, intrinsics in poses:  # noqa: N806
        refined_ms += [1e3 * t for t in _time(lambda: refined.render_labels(T, intrinsics), 1)]
        prior_ms += [1e3 * t for t in _time(lambda: refined.prior.render_labels(T, intrinsics),
                                            1)]
    return {"mesh_vertices": refined.get_mesh().num_vertices, "publish_s": publish_s,
            "render_ms_median": statistics.median(refined_ms[1:] or refined_ms),
            "prior_render_ms_median": statistics.median(prior_ms[1:] or prior_ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path, help="a synthetic scene folder (make-scene)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "hash_grid": hash_grid_throughput(65536, 5)}
    print(json.dumps(results["hash_grid"], indent=1), flush=True)
    refined = _integrated_map(args.scene, args.max_frames)
    refined.train_steps(1)
    results["keyframes"] = len(refined.store)
    results["training"] = training_steps(refined, args.steps, args.rounds)
    print(json.dumps(results["training"], indent=1), flush=True)
    results["publishing"] = publishing(refined, args.scene, 20)
    print(json.dumps(results["publishing"], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
