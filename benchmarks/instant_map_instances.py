"""How well the instant map's instance boxes and colours describe the objects: compared with the
scene generator's ground truth on synthetic scenes (results go to BENCHMARKS.md).

Each map is built exactly as ``query_benchmark.py --source instant`` builds it (a 150-frame, 10 Hz
rendered walk at half resolution, shaded colours and depth noise, the Grounded-SAM emulator at
level ``clean``), and its things are matched to GT things by the same geometric rule
(``query_benchmark.instant_map_table``: the GT box grown by 5 cm that holds the centroid,
nearest centre first, else the nearest GT centre within 0.3 m). Per matched thing:

* boxes: tilt (angle between the up axis and the nearest box axis), and the errors of the box's
  world-frame bottom and top heights against the GT box (what "on the table" tests);
* colour: CIE76 Delta-E in L*a*b* between the reported ``mean_color_rgb`` and the GT object's
  true colour, the primary albedo of its dominant material (at least half its area; things
  without one are left out), and whether the query engine's colour model names it with the
  benchmark's hand-assigned reference name (``query_benchmark.HAND_COLOR_NAMES``; the name or an
  accepted alternative counts as right).

Maps are cached (``--cache DIR``, outside the repository): a second run with other map-reading
code reloads the same maps, so before/after numbers come from identical voxels.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/instant_map_instances.py \\
      [--scenes 5] [--first-seed 0] [--cache /tmp/instant_maps]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from query_benchmark import reference_color  # noqa: E402

from panoptic_mapper.core.labels import LabelRegistry  # noqa: E402
from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap  # noqa: E402
from panoptic_mapper.core.query.colors import ColorNamingModel, srgb_to_lab  # noqa: E402
from panoptic_mapper.core.scene.generator import (SceneConfig, SyntheticScene,  # noqa: E402
                                                  generate_scene)
from panoptic_mapper.core.types import MapInstance, OrientedBox  # noqa: E402

UP = np.array([0.0, 0.0, 1.0])
"""The synthetic scenes are z-up."""
CONTACT_TOLERANCE_M = 0.05
"""The query engine's default ON tolerance (``query.spatial.on_tolerance_m``)."""


def build_map(scene: SyntheticScene, frames: int, scale: float, cache: Path | None
              ) -> InstantPanopticMap:
    """The instant map of a rendered walk through ``scene`` (from the cache when present)."""
    registry = scene.registry
    mapper = InstantPanopticMap.from_config(None, registry)
    path = cache / f"seed{scene.config.seed}_f{frames}_s{scale}.npz" if cache else None
    if path is not None and path.is_file():
        mapper.load(path)
        return mapper
    from panoptic_mapper.core.scene import (RenderConfig, TrajectoryConfig, generate_trajectory,
                                            render_sequence)
    from panoptic_mapper.core.scene.renderer import CameraConfig
    from panoptic_mapper.core.segmentation.emulator import GroundedSamEmulator, emulator_preset

    trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=frames, rate_hz=10.0))
    emulator = GroundedSamEmulator(emulator_preset("clean"), registry)
    render = RenderConfig(camera=CameraConfig().scaled(scale))
    for sample in render_sequence(scene, trajectory, render, emulator):
        mapper.integrate_frame(sample.frame, sample.segmentation)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        mapper.save(path)
    return mapper


def match_to_gt(scene: SyntheticScene, instances: list[MapInstance]) -> dict[int, int]:
    """Map thing id -> GT instance id (the rule of ``query_benchmark.instant_map_table``)."""
    gt = scene.instances
    centers = np.array([g.bbox.center_m for g in gt])
    grown = [OrientedBox(g.bbox.center_m, g.bbox.R_world_box, g.bbox.size_m + 0.1) for g in gt]
    out: dict[int, int] = {}
    for inst in instances:
        if not inst.is_thing:
            continue
        dist = np.linalg.norm(centers - inst.centroid_m, axis=1)
        inside = [k for k, box in enumerate(grown) if box.contains(inst.centroid_m[None])[0]]
        if inside:
            out[inst.id] = gt[min(inside, key=lambda k: dist[k])].id
        elif dist.min() <= 0.3:
            out[inst.id] = gt[int(dist.argmin())].id
    return out


def true_color(scene: SyntheticScene, gt_id: int) -> np.ndarray | None:
    """[3] sRGB 0-255 primary albedo of the dominant material of a GT thing, or None."""
    sel = scene.triangle_instance_ids == gt_id
    v, tri = scene.vertices_m, scene.triangles[sel]
    areas = 0.5 * np.linalg.norm(np.cross(v[tri[:, 1]] - v[tri[:, 0]],
                                          v[tri[:, 2]] - v[tri[:, 0]]), axis=1)
    per_material = np.bincount(scene.triangle_material_ids[sel], weights=areas)
    dominant = int(per_material.argmax())
    if per_material[dominant] < 0.5 * per_material.sum():
        return None
    return np.asarray(scene.materials.materials[dominant].albedo) * 255.0


def vertical_extent(box: OrientedBox) -> tuple[float, float]:
    heights = box.corners_m() @ UP
    return float(heights.min()), float(heights.max())


def tilt_deg(box: OrientedBox) -> float:
    cos = np.abs(box.R_world_box.T @ UP).max()
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def scene_rows(scene: SyntheticScene, mapper: InstantPanopticMap, names: ColorNamingModel
               ) -> list[dict]:
    instances = mapper.get_instances()
    to_gt = match_to_gt(scene, instances)
    gt = scene.instance_by_id()
    rows = []
    for inst in instances:
        if inst.id not in to_gt:
            continue
        truth = gt[to_gt[inst.id]]
        lo, hi = vertical_extent(inst.bbox)
        gt_lo, gt_hi = vertical_extent(truth.bbox)
        row = {"tilt": tilt_deg(inst.bbox), "bottom": lo - gt_lo, "top": hi - gt_hi}
        albedo = true_color(scene, truth.id)
        sel = scene.triangle_instance_ids == truth.id
        v, tri = scene.vertices_m, scene.triangles[sel]
        areas = np.zeros(len(scene.triangles))
        areas[sel] = 0.5 * np.linalg.norm(np.cross(v[tri[:, 1]] - v[tri[:, 0]],
                                                   v[tri[:, 2]] - v[tri[:, 0]]), axis=1)
        name, alternatives = reference_color(scene, sel, areas)
        color = np.asarray(inst.mean_color_rgb, float)
        if albedo is not None:
            row["delta_e"] = float(np.linalg.norm(srgb_to_lab(color) - srgb_to_lab(albedo)))
        if name is not None:
            said = names.name_of(color[None])[0]
            row["name_ok"] = said == name or said in alternatives
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=5, help="number of scenes")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first scene")
    parser.add_argument("--frames", type=int, default=150, help="frames per walk (10 Hz)")
    parser.add_argument("--scale", type=float, default=0.5, help="image scale of 640x480")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the built maps (reused when present)")
    args = parser.parse_args()
    print("load average at start (1, 5, 15 min): %.1f %.1f %.1f" % os.getloadavg())
    registry = LabelRegistry.default()
    names = ColorNamingModel()
    rows: list[dict] = []
    for seed in range(args.first_seed, args.first_seed + args.scenes):
        t0 = time.perf_counter()
        scene = generate_scene(SceneConfig(seed=seed), registry)
        mapper = build_map(scene, args.frames, args.scale, args.cache)
        scene_part = scene_rows(scene, mapper, names)
        rows += scene_part
        print(f"seed {seed}: {len(scene_part)} matched things ({time.perf_counter() - t0:.1f} s)")
    tilt = np.array([r["tilt"] for r in rows])
    bottom = np.abs([r["bottom"] for r in rows])
    top = np.abs([r["top"] for r in rows])
    delta_e = np.array([r["delta_e"] for r in rows if "delta_e" in r])
    name_ok = np.array([r["name_ok"] for r in rows if "name_ok" in r])
    print(f"\n{len(rows)} matched things")
    print("| tilt median / p90 / max (deg) | bottom err median / p90 (cm) | bottom within 5 cm "
          "| top err median / p90 (cm) | colour dE median / p90 (n) | colour named right (n) |")
    print("|---|---|---|---|---|---|")
    print(f"| {np.median(tilt):.1f} / {np.percentile(tilt, 90):.1f} / {tilt.max():.1f} "
          f"| {np.median(bottom) * 100:.1f} / {np.percentile(bottom, 90) * 100:.1f} "
          f"| {(bottom <= CONTACT_TOLERANCE_M).mean() * 100:.0f} % "
          f"| {np.median(top) * 100:.1f} / {np.percentile(top, 90) * 100:.1f} "
          f"| {np.median(delta_e):.1f} / {np.percentile(delta_e, 90):.1f} ({delta_e.size}) "
          f"| {name_ok.mean() * 100:.0f} % ({name_ok.size}) |")
    print("load average at end (1, 5, 15 min): %.1f %.1f %.1f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
