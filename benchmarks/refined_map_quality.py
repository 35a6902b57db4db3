"""Refined map (PanopticRecon++) against the instant map on the synthetic benchmark, plus the
paper-style ablation (Table V: Gaussian prior, token adjustment, panoptic head).

For every (noise level, seed) the scene is generated with ``panoptic-mapper make-scene`` when
it is missing, then evaluated in one ``core.eval.runner.evaluate`` run with:

* ``instant``: the instant map;
* ``refined``: the refined map with its defaults, run as the mapper node runs it
  (``create_map("refined")``, ``runtime/streamed_refined.py``: frames at the pace of their
  stamps, integrated once into an instant map, the field trained by the background worker beside
  the stream, ``finalize()`` waiting for the step budget as the node does after a bag): what a
  user gets;
* with ``--long-steps N``: ``refined_N``, the defaults but N steps and no time limit (how far the
  field gets when it may converge), sharing the ``instant`` run's map as its prior;
* with ``--ceiling``: ``gt_labels``, the ``instant`` run's mesh with every vertex labelled from
  the closest point of the ground-truth mesh: the score of perfect labels on this geometry, an
  estimate of the ceiling that no labelling of the TSDF mesh (instant or refined) can pass;
  and ``gt_point_labels``, the same mesh's depth with every pixel labelled from the ground-truth
  surface point closest to its hit point (labels finer than the mesh's vertices: the ceiling of
  this geometry itself);
* with ``--ablations``: refined variants with a fixed step budget (no time limit, so that the
  variants compare at equal training, whatever the load of the machine) and labels purely from
  the field (no fallback to the prior, which would hide the differences), sharing the
  ``instant`` run's map as their prior (their integrate times therefore exclude the prior).

Prints a Markdown table (one row per scene and method, then means per noise level) and writes
everything to ``--out`` as JSON.

Example (the BENCHMARKS.md numbers):
  PYTHONPATH=. .venv/bin/python benchmarks/refined_map_quality.py --scenes /tmp/refined_bench \\
      --noise medium hard clean --seeds 0 1 2 --out /tmp/refined_bench/results.json
  PYTHONPATH=. .venv/bin/python benchmarks/refined_map_quality.py --scenes /tmp/refined_bench \\
      --noise medium --seeds 0 1 2 --ablations --steps 800 --out /tmp/refined_bench/ablation.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_mapper.core.eval.mesh_scoring import ground_truth_labelled
from panoptic_mapper.core.eval.oracle import MeshLabelRenderer
from panoptic_mapper.core.eval.runner import EvalConfig, MethodSpec, evaluate
from panoptic_mapper.core.eval.surface import closest_surface_points
from panoptic_mapper.core.geometry.camera import back_project_to_world
from panoptic_mapper.core.io.ply import read_ply
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, create_map
from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig, RefinedPanopticMap
from panoptic_mapper.core.types import LabelRender

# name -> (Gaussian prior, token adjustment, panoptic head, token class head); Table V rows.
ABLATIONS = {
    "prior_only": (True, False, False, False),
    "adjust_only": (False, True, False, False),
    "prior+adjust": (True, True, False, False),
    "prior+adjust+pan": (True, True, True, False),
    "full (+h_SI)": (True, True, True, True),
}


class _RecordingMap:
    """Wraps the instant map of the run and remembers its integration reports by stamp."""

    def __init__(self, inner):
        self.inner = inner
        self.reports: dict[int, IntegrationReport] = {}

    def integrate_frame(self, frame, segmentation):
        report = self.inner.integrate_frame(frame, segmentation)
        self.reports[frame.stamp_ns] = report
        return report

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _SharedPrior:
    """A read-only view of the run's instant map for the ablation variants: frames are not
    integrated twice, ``finalize`` is left to the instant run (scored first)."""

    def __init__(self, owner: _RecordingMap):
        self.owner = owner

    def integrate_frame(self, frame, segmentation):
        report = self.owner.reports[frame.stamp_ns]
        return IntegrationReport(report.accepted, report.reason)

    def finalize(self):
        pass

    def __getattr__(self, name):
        return getattr(self.owner.inner, name)


class _GroundTruthLabelsOnMap:
    """The ``instant`` run's geometry with ground-truth labels: at ``finalize`` every vertex of
    the instant map's mesh takes the label and instance of the closest ground-truth surface
    point; renders ray cast that mesh (as the maps' own renders do)."""

    def __init__(self, owner: _RecordingMap, gt_mesh_path: Path):
        self.owner = owner
        self.gt_mesh = read_ply(gt_mesh_path)
        self._renderer: MeshLabelRenderer | None = None

    def integrate_frame(self, frame, segmentation):
        report = self.owner.reports[frame.stamp_ns]
        return IntegrationReport(report.accepted, report.reason)

    def finalize(self):
        self.owner.inner.update_mesh()
        self._renderer = MeshLabelRenderer(ground_truth_labelled(self.owner.inner.get_mesh(),
                                                                 self.gt_mesh))

    def update_mesh(self):
        return self.owner.inner.update_mesh()

    def get_mesh(self):
        return self._renderer.mesh

    def render_labels(self, T_world_cam, intrinsics):  # noqa: N803
        return self._renderer.render(T_world_cam, intrinsics)

    def get_instances(self):
        """None: ground-truth labels come per vertex, without an instance table."""
        return []


class _GroundTruthLabelsPerPixel(_GroundTruthLabelsOnMap):
    """``_GroundTruthLabelsOnMap`` with labels per pixel: the ground-truth label of the surface
    point closest to where the pixel's ray hits the instant map's mesh."""

    def render_labels(self, T_world_cam, intrinsics):  # noqa: N803
        render = self._renderer.render(T_world_cam, intrinsics)
        h, w = intrinsics.shape
        v, u = np.mgrid[0:h, 0:w]
        depth_m = render.depth_m.astype(np.float64)
        hit = depth_m > 0
        points_world = back_project_to_world(T_world_cam, intrinsics, u[hit], v[hit],
                                             depth_m[hit])  # [N, 3]
        nearest = closest_surface_points(points_world, self.gt_mesh.vertices_m,
                                         self.gt_mesh.triangles).nearest_vertex
        label_ids = np.zeros((h, w), np.int32)
        instance_ids = np.zeros((h, w), np.int32)
        label_ids[hit] = self.gt_mesh.label_ids[nearest]
        instance_ids[hit] = self.gt_mesh.instance_ids[nearest]
        return LabelRender(label_ids, instance_ids, render.depth_m)


def _ensure_scene(root: Path, seed: int, noise: str, frames: int) -> Path:
    path = root / f"s{seed}_{noise}"
    if not (path / "scene.json").is_file():
        print(f"generating {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "panoptic_mapper.tools.cli", "make-scene",
                        "--seed", str(seed), "--noise", noise, "--frames", str(frames),
                        "--no-bag", "--no-progress", str(path)], check=True)
    return path


def _variant_config(flags: tuple[bool, bool, bool, bool], steps: int) -> RefinedMapConfig:
    gaussian, adjust, panoptic, token_class = flags
    config = RefinedMapConfig(auto_budget=False, finalize_max_s=0.0,
                              thing_label_from_token=token_class, prior_fallback_confidence=0.0)
    config.training.trainer.total_steps = steps
    config.training.tokens.gaussian_prior = gaussian
    config.training.token_manager.enabled = adjust
    config.training.schedule.panoptic_head = panoptic
    return config


def _methods(ablations: bool, steps: int, maps: dict[str, Any], default: bool = True,
             long_steps: int = 0, ceiling_gt_mesh: Path | None = None) -> list[MethodSpec]:
    def instant(registry: LabelRegistry):
        maps["instant"] = _RecordingMap(create_map("instant", registry))
        return maps["instant"]

    def refined(registry: LabelRegistry):
        maps["refined"] = create_map("refined", registry)
        return maps["refined"]

    methods = [MethodSpec("instant", factory=instant)]
    if default:
        methods.append(MethodSpec("refined", factory=refined))
    if long_steps:
        def long_run(registry: LabelRegistry):
            config = RefinedMapConfig(auto_budget=False, finalize_max_s=0.0)
            config.training.trainer.total_steps = long_steps
            maps[f"refined_{long_steps}"] = RefinedPanopticMap(
                registry, config, prior=_SharedPrior(maps["instant"]))
            return maps[f"refined_{long_steps}"]
        methods.append(MethodSpec(f"refined_{long_steps}", method="refined", factory=long_run))
    if ceiling_gt_mesh is not None:
        def ceiling(registry: LabelRegistry):
            maps["gt_labels"] = _GroundTruthLabelsOnMap(maps["instant"], ceiling_gt_mesh)
            return maps["gt_labels"]

        def pixel_ceiling(registry: LabelRegistry):
            maps["gt_point_labels"] = _GroundTruthLabelsPerPixel(maps["instant"], ceiling_gt_mesh)
            return maps["gt_point_labels"]
        methods += [MethodSpec("gt_labels", method="instant", factory=ceiling),
                    MethodSpec("gt_point_labels", method="instant", factory=pixel_ceiling)]
    for name, flags in (ABLATIONS.items() if ablations else ()):
        def variant(registry: LabelRegistry, name=name, flags=flags):
            maps[name] = RefinedPanopticMap(registry, _variant_config(flags, steps),
                                            prior=_SharedPrior(maps["instant"]))
            return maps[name]
        methods.append(MethodSpec(name, method="refined", factory=variant))
    return methods


def _row(scene: str, name: str, result, refined_map) -> dict[str, Any]:
    pq = result.panoptic
    row = {"scene": scene, "method": name,
           "pq": pq.pq if pq else None, "pq_th": pq.pq_th if pq else None,
           "pq_st": pq.pq_st if pq else None,
           "miou_3d": result.semantic_3d.miou if result.semantic_3d else None,
           "mcov": result.coverage_3d.mcov if result.coverage_3d else None,
           "finalize_s": result.timing.finalize_s,
           "integrate_ms_median": result.timing.integrate_ms_median}
    if isinstance(refined_map, RefinedPanopticMap):
        progress = refined_map.progress()
        row.update(steps=progress.step, total_steps=progress.total_steps,
                   tokens=progress.num_tokens, keyframes=progress.num_keyframes,
                   ready=refined_map.is_ready)
    elif hasattr(refined_map, "training"):  # the streamed map (runtime/streamed_refined.py)
        status = refined_map.training.status()
        progress = status.progress
        row.update(steps=progress.step, total_steps=progress.total_steps,
                   tokens=progress.num_tokens, keyframes=progress.num_keyframes,
                   ready=status.ready, field_restarts=progress.field_restarts,
                   training_wait_s=refined_map.finish_s)
    return row


def _fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scene | method | PQ | PQ_th | PQ_st | mIoU 3D | mCov | steps | finalize s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = f"{r['steps']}/{r['total_steps']}" if "steps" in r else "-"
        lines.append(f"| {r['scene']} | {r['method']} | {_fmt(r['pq'])} | {_fmt(r['pq_th'])} | "
                     f"{_fmt(r['pq_st'])} | {_fmt(r['miou_3d'])} | {_fmt(r['mcov'])} | {steps} | "
                     f"{_fmt(r['finalize_s'], 0)} |")
    return "\n".join(lines)


def _means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        noise = r["scene"].split("_", 1)[1]
        groups.setdefault((noise, r["method"]), []).append(r)
    out = []
    for (noise, method), members in groups.items():
        mean = {"scene": f"mean {noise} ({len(members)})", "method": method}
        for key in ("pq", "pq_th", "pq_st", "miou_3d", "mcov", "finalize_s"):
            values = [m[key] for m in members if m[key] is not None]
            mean[key] = sum(values) / len(values) if values else None
        out.append(mean)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", required=True, type=Path, help="folder of generated scenes")
    parser.add_argument("--noise", nargs="+", default=["medium", "hard"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--ablations", action="store_true", help="add the Table V variants")
    parser.add_argument("--steps", type=int, default=800, help="step budget of the variants")
    parser.add_argument("--long-steps", type=int, default=0,
                        help="add a refined map trained for this many steps without a time "
                             "limit (shares the instant run's map as prior)")
    parser.add_argument("--ceiling", action="store_true",
                        help="add gt_labels and gt_point_labels: ground-truth labels on the "
                             "instant map's mesh, per vertex and per pixel")
    parser.add_argument("--skip-default", action="store_true",
                        help="leave out the default refined map (ablation runs)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = parser.parse_args()
    args.scenes.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    start = time.monotonic()
    for noise in args.noise:
        for seed in args.seeds:
            scene = _ensure_scene(args.scenes, seed, noise, args.frames)
            maps: dict[str, Any] = {}
            methods = _methods(args.ablations, args.steps, maps, not args.skip_default,
                               args.long_steps, scene / "gt_mesh.ply" if args.ceiling else None)
            result = evaluate(scene, methods, EvalConfig())
            for name, method_result in result.methods.items():
                rows.append(_row(result.scene, name, method_result, maps.get(name)))
            print(_table(rows[-len(result.methods):]), flush=True)
            args.out.write_text(json.dumps({"rows": rows}, indent=1))
    table = _table(rows + _means(rows))
    print(table)
    args.out.write_text(json.dumps({"rows": rows, "means": _means(rows),
                                    "wall_s": time.monotonic() - start}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
