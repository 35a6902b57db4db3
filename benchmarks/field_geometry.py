"""Geometry from the field: the refined map's TSDF mesh against the field's SDF surface.

For every scene the refined map (an instant map plus the PanopticRecon++ field, trained offline
by ``finalize()``) runs once through ``core.eval.runner.evaluate``; the same trained map is then
scored again with ``mesh_source = "field"`` for each field-mesh variant asked for (grid spacing,
iso level, observed margin), so all rows share one field. Geometry is the runner's own scoring:
Chamfer-L1 (cm) and F1 at 5 cm against the ground-truth mesh, on the ground-truth surface some
frame observed. PQ of the raycast renders is printed beside it (the labels follow the mesh).

Scenes: synthetic ones (``make-scene --noise medium --frames 300``, generated into ``--scenes``
when missing) and the 4-frame Replica office0 fixture (``--replica``; no 2D segmentation there,
so only its geometry means anything).

Example (the docs/refined_map.md numbers):
  PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/field_geometry.py --scenes /tmp/field_geo \\
      --seeds 0 1 --replica --variants 0.02:0:0.06 0.01:0:0.04 --out /tmp/field_geo/results.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPLICA = REPO.parent / "shared" / "data" / "replica_office0_nvblox_fixture"


class _Recording:
    """The refined map of the run; remembers its integration reports for the variants."""

    def __init__(self, inner):
        self.inner = inner
        self.reports = {}

    def integrate_frame(self, frame, segmentation):
        report = self.inner.integrate_frame(frame, segmentation)
        self.reports[frame.stamp_ns] = report
        return report

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _FieldSurface:
    """The run's trained refined map serving its field's surface with ``grid`` (set at
    ``finalize``, after the TSDF row was scored: the runner scores methods in order)."""

    def __init__(self, owner: _Recording, grid):
        self.owner, self.grid = owner, grid
        self.extract_s = 0.0

    def integrate_frame(self, frame, segmentation):
        from panoptic_mapper.core.mapping.base import IntegrationReport

        report = self.owner.reports[frame.stamp_ns]
        return IntegrationReport(report.accepted, report.reason)

    def finalize(self):
        refined = self.owner.inner
        if not refined.is_ready:
            return
        refined.config.mesh_source = "field"
        refined.config.field_mesh = self.grid
        start = time.perf_counter()
        refined.layer.publish_field(refined.layer.trainer)
        self.extract_s = time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self.owner.inner, name)


def _ensure_scene(root: Path, seed: int, frames: int) -> Path:
    path = root / f"s{seed}_medium"
    if not (path / "scene.json").is_file():
        print(f"generating {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "panoptic_mapper.tools.cli", "make-scene",
                        "--seed", str(seed), "--noise", "medium", "--frames", str(frames),
                        "--no-bag", "--no-progress", str(path)], check=True)
    return path


def _parse_variant(text: str):
    from panoptic_mapper.core.field.field_mesh import FieldMeshConfig

    voxel, iso, margin = (float(v) for v in text.split(":"))
    return FieldMeshConfig(voxel_size_m=voxel, iso_level_m=iso, observed_margin_m=margin)


def _config(replica: bool, steps: int, max_s: float):
    from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig

    config = RefinedMapConfig(finalize_max_s=max_s)
    if steps:
        config.training.trainer.total_steps = steps
    if replica:  # 4 consecutive frames: keep them all
        config.keyframes.min_translation_m = 0.0
        config.keyframes.min_rotation_deg = 0.0
    return config


def run_scene(path: Path, replica: bool, variants, steps: int, max_s: float) -> dict:
    from panoptic_mapper.core.eval.runner import EvalConfig, MethodSpec, evaluate
    from panoptic_mapper.core.mapping.refined_map import RefinedPanopticMap

    maps = {}

    def refined(registry):
        maps["tsdf"] = _Recording(RefinedPanopticMap(registry, _config(replica, steps, max_s)))
        return maps["tsdf"]

    def surface(name, grid):
        def build(registry):
            maps[name] = _FieldSurface(maps["tsdf"], grid)
            return maps[name]
        return build

    names = [f"field {g.voxel_size_m * 100:g}cm iso{g.iso_level_m * 100:+g}cm "
             f"margin{g.observed_margin_m * 100:g}cm" for g in variants]
    methods = [MethodSpec("tsdf", method="refined", factory=refined)] + [
        MethodSpec(name, method="refined", factory=surface(name, grid))
        for name, grid in zip(names, variants)]
    start = time.perf_counter()
    result = evaluate(path, methods, EvalConfig())
    trainer = maps["tsdf"].inner.trainer
    rows = {}
    for name, method in result.methods.items():
        geometry = method.geometry
        rows[name] = {
            "chamfer_l1_cm": None if geometry is None else geometry.chamfer_l1_cm,
            "accuracy_cm": None if geometry is None else geometry.accuracy_cm,
            "completion_cm": None if geometry is None else geometry.completion_cm,
            "f1": None if geometry is None else geometry.f1,
            "pq": None if method.panoptic is None else method.panoptic.pq,
            "vertices": method.mesh_vertices,
            "extract_s": getattr(maps.get(name), "extract_s", 0.0), "notes": method.notes}
    return {"scene": result.scene, "rows": rows, "steps": trainer.step_count,
            "ready": maps["tsdf"].inner.is_ready, "wall_s": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, default=Path("/tmp/field_geometry"))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--replica", action="store_true", help="also the Replica fixture")
    parser.add_argument("--variants", nargs="+", default=["0.02:0:0.06"],
                        help="field meshes as VOXEL_M:ISO_M:MARGIN_M")
    parser.add_argument("--steps", type=int, default=0, help="step budget (0: the default)")
    parser.add_argument("--max-s", type=float, default=240.0, help="finalize time budget, s")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    variants = [_parse_variant(v) for v in args.variants]
    scenes = [(_ensure_scene(args.scenes, seed, args.frames), False) for seed in args.seeds]
    if args.replica:
        scenes.append((REPLICA, True))
    results = []
    print("| scene | steps | mesh | Chamfer-L1 (cm) | acc / comp (cm) | F1@5cm | PQ | vertices "
          "| extract (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path, replica in scenes:
        scene = run_scene(path, replica, variants, args.steps, args.max_s)
        results.append(scene)
        for name, row in scene["rows"].items():
            if row["chamfer_l1_cm"] is None:
                print(f"| {scene['scene']} | {scene['steps']} | {name} | - | - | - | - | "
                      f"{row['vertices']} | {'; '.join(row['notes'])} |")
                continue
            pq = "-" if row["pq"] is None else f"{row['pq']:.1f}"
            print(f"| {scene['scene']} | {scene['steps']} | {name} | {row['chamfer_l1_cm']:.2f} "
                  f"| {row['accuracy_cm']:.2f} / {row['completion_cm']:.2f} | {row['f1']:.1f} "
                  f"| {pq} | {row['vertices']} | {row['extract_s']:.1f} |", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
