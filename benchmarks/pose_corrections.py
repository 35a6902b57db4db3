"""Loop corrections (issue 14, part 2): what the map wins back, and what a correction costs.

(a) Quality. For each scene (``make-scene --pose-drift vio``, generated into ``--scenes-dir`` when
missing: ``s<seed>_vio``), ``panoptic-mapper eval`` runs the instant map three times, offline
(core, every frame, no ROS graph): at the true poses, at the drifting SLAM estimate without the
loop corrections (``--corrections ignore``), and with them (``--corrections apply``: the map is
rebuilt from its kept frames at the corrected poses when each correction is published); and a
fourth run that isolates what the rebuild itself loses: true poses, plus one "correction" that
leaves every frame where it is, published with the last frame (the map is rebuilt from its kept,
half-resolution frames at their true poses). Reported:
scene PQ (PQ_th / PQ_st), Chamfer-L1 and F1@5cm of the mesh against the scene's ground-truth
mesh (the observed part), thing instances, and per correction its duration, frames fused and
the largest keyframe shift.

(b) Cost. For 3 map sizes (the first N frames of one scene, fed at the estimate), a fresh process
integrates N frames through a map session that keeps its frames, then applies one correction
covering the keyframes so far (every 5th frame, at its true pose): the correction's wall time,
frames fused, frame-store size, and the process's RSS (``VmRSS`` before and after, ``VmHWM``:
the peak) from ``/proc/self/status``.

Run (from the repository root; about 10 min on 2 shared cores once the scenes exist):
    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/pose_corrections.py \\
        --scenes-dir /tmp/pc_bench --seeds 0 1 2 --out /tmp/pc_bench/pose_corrections.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYFRAME_EVERY = 5
"""Cost runs: the correction carries every this-many-th frame's pose."""


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_scene(folder: Path, seed: int, frames: int, noise: str, preset: str) -> None:
    if (folder / "loop_corrections.json").is_file():
        return
    cmd = [sys.executable, "-m", "panoptic_mapper.tools.cli", "make-scene", str(folder),
           "--seed", str(seed), "--noise", noise, "--frames", str(frames), "--rate", "10",
           "--workers", "1", "--pose-drift", preset, "--no-bag", "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def identity_correction(folder: Path):
    """A correction that keeps every frame but the last at its true pose, published with the
    last frame."""
    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.types import LoopCorrection

    stamps = open_dataset(folder).stamps_ns
    n = len(stamps)
    poses = np.stack([np.loadtxt(folder / "pose" / f"{i}.txt") for i in range(n - 1)])
    return LoopCorrection(loop_index=n - 2, matched_index=0, publish_index=n - 1,
                          stamp_ns=int(stamps[-1]), keyframe_indices=np.arange(n - 1),
                          keyframe_stamps_ns=stamps[:-1], T_world_keyframe=poses)


QUALITY_ROWS = (("true", "true", "ignore"), ("estimate, ignore", "estimated", "ignore"),
                ("estimate, apply", "estimated", "apply"),
                ("true, rebuilt at the end", "true", "apply"))


def quality(folder: Path, row_names: list[str]) -> dict:
    from panoptic_mapper.core.eval.runner import EvalConfig, MethodSpec, evaluate, open_source

    rows = {}
    for name, poses, corrections in QUALITY_ROWS:
        if name not in row_names:
            continue
        config = EvalConfig(poses=poses, corrections=corrections)
        start = time.perf_counter()
        source = open_source(folder, config)
        if name == "true, rebuilt at the end":
            source.corrections = [identity_correction(folder)]
        result = evaluate(source, [MethodSpec("instant")], config)
        r = result.methods["instant"]
        rows[name] = {
            "pq": r.panoptic.pq, "pq_th": r.panoptic.pq_th, "pq_st": r.panoptic.pq_st,
            "chamfer_l1_cm": r.geometry.chamfer_l1_cm, "f1": r.geometry.f1,
            "things": r.num_thing_instances, "instances": r.num_instances,
            "gt_things_observed": r.coverage_3d.num_gt_instances if r.coverage_3d else None,
            "depth_median_cm": r.depth.median_abs_error_cm,
            "integrate_ms_median": r.timing.integrate_ms_median,
            "corrections": r.corrections, "eval_s": time.perf_counter() - start}
        print(f"  {folder.name} {name}: PQ {r.panoptic.pq:.1f}, C-L1 "
              f"{r.geometry.chamfer_l1_cm:.2f} cm, {len(r.corrections)} corrections "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def cost_one(folder: Path, frames: int) -> dict:
    """Integrate ``frames`` frames, apply one correction; runs in a fresh process."""
    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.mapping.base import create_map
    from panoptic_mapper.core.mapping.pose_corrections import KeyframeCorrection
    from panoptic_mapper.runtime.corrected_map import CorrectedMap

    dataset = open_dataset(folder, max_frames=frames)
    estimate = dataset.slam_estimate
    registry = dataset.registry
    corrected = CorrectedMap(lambda: create_map("instant", registry), registry)
    stamps, truth = [], []
    start = time.perf_counter()
    for sample in dataset:
        f = sample.frame
        corrected.integrate_frame(f.replace(T_world_cam=estimate.pose_at(f.stamp_ns)),
                                  sample.segmentation)
        stamps.append(f.stamp_ns)
        truth.append(f.T_world_cam)
    integrate_s = time.perf_counter() - start
    corrected.update_mesh()
    keep = slice(0, len(stamps), KEYFRAME_EVERY)
    correction = KeyframeCorrection(stamps[-1] + 1, np.array(stamps[keep], np.int64),
                                    np.stack(truth[keep]))
    rss_before, peak_before = _status_mb("VmRSS"), _status_mb("VmHWM")
    record = corrected.apply_correction(correction)
    corrected.update_mesh()
    return {"frames": len(stamps), "keyframes": correction.num_keyframes,
            "integrate_s": integrate_s, **record,
            "rss_before_mb": rss_before, "rss_after_mb": _status_mb("VmRSS"),
            "peak_before_mb": peak_before, "peak_after_mb": _status_mb("VmHWM")}


def cost(folder: Path, sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--cost-one", str(folder), str(n)],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  cost {n} frames: {rows[-1]['duration_s']:.1f} s", flush=True)
    return rows


def print_tables(report: dict) -> None:
    print("\n| scene | poses fed to the map | PQ | PQ_th | PQ_st | C-L1 (cm) | F1@5cm | things "
          "(GT observed) | corrections: frame, duration, frames fused, max shift |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scene, rows in report["quality"].items():
        for name, r in rows.items():
            corr = "; ".join(f"{c['position']}: {c.get('duration_s', 0):.1f} s, "
                             f"{c.get('frames_fused', 0)} fr, "
                             f"{100 * c.get('max_shift_m', 0):.1f} cm"
                             if "error" not in c else f"{c['position']}: refused"
                             for c in r["corrections"]) or "-"
            print(f"| {scene} | {name} | **{r['pq']:.1f}** | {r['pq_th']:.1f} | "
                  f"{r['pq_st']:.1f} | **{r['chamfer_l1_cm']:.2f}** | {r['f1']:.1f} | "
                  f"{r['things']} ({r['gt_things_observed']}) | {corr} |")
    if report["quality"]:
        print("\n| mean over scenes | PQ | PQ_th | PQ_st | C-L1 (cm) | F1@5cm | things |")
        print("|---|---|---|---|---|---|---|")
        names = next(iter(report["quality"].values())).keys()
        for name in names:
            rows = [s[name] for s in report["quality"].values()]
            mean = {k: float(np.mean([r[k] for r in rows]))
                    for k in ("pq", "pq_th", "pq_st", "chamfer_l1_cm", "f1", "things")}
            print(f"| {name} | {mean['pq']:.1f} | {mean['pq_th']:.1f} | {mean['pq_st']:.1f} | "
                  f"{mean['chamfer_l1_cm']:.2f} | {mean['f1']:.1f} | {mean['things']:.1f} |")
    if report["cost"]:
        print("\n| frames integrated | keyframes in the correction | frames fused | duration (s) "
              "| ms per fused frame | store (MB) | RSS before -> after (MB) | peak RSS (MB) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in report["cost"]:
            print(f"| {r['frames']} | {r['keyframes']} | {r['frames_fused']} | "
                  f"{r['duration_s']:.1f} | {1e3 * r['duration_s'] / r['frames_fused']:.0f} | "
                  f"{r['store_mb']:.0f} | {r['rss_before_mb']:.0f} -> {r['rss_after_mb']:.0f} | "
                  f"{r['peak_before_mb']:.0f} -> {r['peak_after_mb']:.0f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes-dir", default="/tmp/pose_corrections_scenes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=300, help="frames per scene (>= 300: "
                        "the walk closes its loop after about 200)")
    parser.add_argument("--noise", default="medium", help="emulator level")
    parser.add_argument("--preset", default="vio", help="pose drift preset")
    parser.add_argument("--cost-sizes", type=int, nargs="*", default=[100, 200, 300],
                        help="map sizes (frames) of the cost runs (none: skip them)")
    parser.add_argument("--rows", nargs="*", default=[r[0] for r in QUALITY_ROWS],
                        help="quality runs (none: skip them)")
    parser.add_argument("--out", default="pose_corrections.json", help="JSON output")
    parser.add_argument("--cost-one", nargs=2, metavar=("SCENE", "FRAMES"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cost_one:
        print(json.dumps(cost_one(Path(args.cost_one[0]), int(args.cost_one[1]))))
        return 0

    scenes_dir = Path(args.scenes_dir)
    scenes_dir.mkdir(parents=True, exist_ok=True)
    folders = [scenes_dir / f"s{seed}_{args.preset}" for seed in args.seeds]
    for seed, folder in zip(args.seeds, folders):
        make_scene(folder, seed, args.frames, args.noise, args.preset)
    from panoptic_mapper.core.mapping.frame_store import FrameStoreConfig

    report = {"args": {k: v for k, v in vars(args).items() if k != "cost_one"},
              "frame_store": FrameStoreConfig().to_dict(), "quality": {}, "cost": []}
    print(f"frame store (the map's kept frames): {report['frame_store']}", flush=True)
    if args.rows:
        for folder in folders:
            report["quality"][folder.name] = quality(folder, args.rows)
    if args.cost_sizes:
        report["cost"] = cost(folders[0], args.cost_sizes)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print_tables(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
