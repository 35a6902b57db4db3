"""Free-text query benchmark on synthetic scenes: precision/recall at the default threshold,
and query latency for 1,000 instances (results go to BENCHMARKS.md).

Instance tables come from the scene generator's ground truth by default (one MapInstance per
thing, one per stuff label; bbox from the generator, centroid and mean colour from the GT mesh,
area-weighted, albedo colours without shading), or with ``--source instant`` from the instant map
built from a rendered walk through each scene (see :func:`instant_map_table`). Queries and their
reference answers are always defined on the ground truth:

* label: every registry label name, plus the held-out synonyms of ``query_sets`` -> all
  instances of that label (none when the label is absent from the scene);
* colour: "<colour> <thing label>" for every colour name and thing label present. An instance's
  reference colour is the hand-assigned name (:data:`HAND_COLOR_NAMES`) of the palette entry
  nearest to its dominant material (at least half of its surface); instances whose dominant
  material has the colour only as an accepted alternative, or that have no dominant material,
  are "don't care" (neither counted right nor wrong);
* relation: "<label> on the <label>" from the generator's support relation (what stands on
  what), for every (label, support label) pair present plus the same labels with other
  furniture as absent pairs;
* negatives: the held-out generic negatives -> nothing.

Scores are micro-averaged over (query, instance) pairs; "absent false alarms" counts queries with
no true answer that returned anything.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/query_benchmark.py [--scenes 5] \\
      [--source gt|instant]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from query_sets import HELDOUT_NEGATIVES, HELDOUT_SYNONYMS  # noqa: E402

from panoptic_mapper.core.labels import LabelRegistry  # noqa: E402
from panoptic_mapper.core.query import (ObjectQueryEngine, QueryConfig,  # noqa: E402
                                        QueryEngine, RegistryQueryEngine)
from panoptic_mapper.core.query.colors import COLOR_PROTOTYPES_SRGB  # noqa: E402
from panoptic_mapper.core.scene.furniture import PALETTES  # noqa: E402
from panoptic_mapper.core.scene.generator import (SceneConfig, SyntheticScene,  # noqa: E402
                                                  generate_scene)
from panoptic_mapper.core.types import MapInstance, OrientedBox  # noqa: E402

HAND_COLOR_NAMES: dict[tuple[float, float, float], tuple[str, tuple[str, ...]]] = {
    (0.72, 0.55, 0.36): ("brown", ("beige",)), (0.45, 0.29, 0.17): ("brown", ()),
    (0.82, 0.70, 0.52): ("beige", ("brown",)), (0.88, 0.87, 0.84): ("white", ("gray",)),
    (0.25, 0.25, 0.27): ("gray", ("black",)), (0.60, 0.66, 0.72): ("gray", ("blue",)),
    (0.25, 0.35, 0.60): ("blue", ()), (0.60, 0.22, 0.20): ("red", ()),
    (0.50, 0.50, 0.52): ("gray", ()), (0.30, 0.45, 0.30): ("green", ()),
    (0.76, 0.70, 0.58): ("beige", ("gray",)), (0.58, 0.59, 0.61): ("gray", ()),
    (0.15, 0.15, 0.16): ("black", ("gray",)), (0.12, 0.12, 0.13): ("black", ()),
    (0.85, 0.85, 0.85): ("white", ("gray",)), (0.20, 0.45, 0.75): ("blue", ()),
    (0.92, 0.92, 0.90): ("white", ()), (0.75, 0.15, 0.15): ("red", ()),
    (0.15, 0.35, 0.70): ("blue", ()), (0.90, 0.75, 0.20): ("yellow", ("orange",)),
    (0.66, 0.50, 0.32): ("brown", ()), (0.72, 0.58, 0.40): ("brown", ("beige",)),
    (0.20, 0.45, 0.15): ("green", ()), (0.30, 0.55, 0.20): ("green", ()),
    (0.70, 0.38, 0.25): ("brown", ("orange", "red")), (0.90, 0.90, 0.88): ("white", ()),
    (0.20, 0.20, 0.22): ("black", ("gray",)), (0.93, 0.89, 0.76): ("beige", ("white",)),
    (0.85, 0.30, 0.25): ("red", ("orange",)), (0.05, 0.07, 0.12): ("black", ()),
    (0.25, 0.17, 0.10): ("brown", ("black",)), (0.22, 0.12, 0.06): ("brown", ("black",)),
    (0.90, 0.90, 0.92): ("white", ()), (0.55, 0.65, 0.80): ("blue", ("gray",)),
    (0.85, 0.75, 0.60): ("beige", ()),
}
"""Palette albedo (linear RGB as in the generator) -> (colour name, accepted alternatives),
assigned by hand by reading the values; the reference for colour queries."""
MAX_PALETTE_DISTANCE = 0.2
"""A material farther than this (RGB L2, 0-1 units) from every palette entry is unlabelled."""
DOMINANT_FRACTION = 0.5
STUFF_ID_OFFSET = 10000
DEFAULT_TORCH_THREADS = torch.get_num_threads()
"""torch's own thread count in this process, before ``--threads`` sets it."""


@dataclass
class Truth:
    """Reference answer of one query: positive instance ids and don't-care ids."""

    positives: set[int]
    dont_care: set[int] = field(default_factory=set)


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    queries: int = 0
    absent_queries: int = 0
    absent_false_alarms: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, query: str, returned: set[int], truth: Truth) -> None:
        judged = returned - truth.dont_care
        self.tp += len(judged & truth.positives)
        self.fp += len(judged - truth.positives)
        self.fn += len(truth.positives - returned)
        self.queries += 1
        if not truth.positives:
            self.absent_queries += 1
            if judged:
                self.absent_false_alarms += 1
        if (judged - truth.positives or truth.positives - returned) and len(self.examples) < 6:
            self.examples.append(f"{query!r}: +{sorted(judged - truth.positives)} "
                                 f"-{sorted(truth.positives - returned)}")

    def line(self, name: str) -> str:
        precision = self.tp / max(self.tp + self.fp, 1)
        recall = self.tp / max(self.tp + self.fn, 1)
        return (f"| {name} | {self.queries} | {precision:.3f} | {recall:.3f} | "
                f"{self.absent_false_alarms}/{self.absent_queries} |")


def gt_instances(scene: SyntheticScene) -> tuple[list[MapInstance], dict[int, tuple]]:
    """MapInstances from the scene ground truth, and each thing's (colour, alternatives)."""
    mesh = scene.gt_mesh
    tri = scene.triangles
    v = scene.vertices_m
    areas = 0.5 * np.linalg.norm(np.cross(v[tri[:, 1]] - v[tri[:, 0]],
                                          v[tri[:, 2]] - v[tri[:, 0]]), axis=1)
    tri_color = mesh.colors[tri].astype(float).mean(axis=1)
    tri_center = v[tri].mean(axis=1)
    registry = scene.registry
    out: list[MapInstance] = []
    colors: dict[int, tuple] = {}
    for inst in scene.instances:
        sel = scene.triangle_instance_ids == inst.id
        w = areas[sel] / areas[sel].sum()
        out.append(MapInstance(
            id=inst.id, label=inst.label, label_id=inst.label_id, is_thing=True,
            confidence=1.0, centroid_m=(tri_center[sel] * w[:, None]).sum(axis=0),
            bbox=inst.bbox, num_observations=1, label_distribution={inst.label_id: 1.0},
            num_voxels=int(sel.sum()), mean_color_rgb=(tri_color[sel] * w[:, None]).sum(axis=0)))
        colors[inst.id] = reference_color(scene, sel, areas)
    for label in registry:
        sel = (scene.triangle_label_ids == label.id) & (scene.triangle_instance_ids == 0)
        if label.is_thing or not sel.any():
            continue
        w = areas[sel] / areas[sel].sum()
        pts = v[tri[sel]].reshape(-1, 3)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        out.append(MapInstance(
            id=STUFF_ID_OFFSET + label.id, label=label.name, label_id=label.id, is_thing=False,
            confidence=1.0, centroid_m=(tri_center[sel] * w[:, None]).sum(axis=0),
            bbox=OrientedBox((lo + hi) / 2, np.eye(3), hi - lo), num_observations=1,
            mean_color_rgb=(tri_color[sel] * w[:, None]).sum(axis=0)))
    return out, colors


def reference_color(scene: SyntheticScene, sel: np.ndarray, areas: np.ndarray) -> tuple:
    """(name, alternatives) of the dominant material's nearest palette entry, or (None, ())."""
    materials = scene.triangle_material_ids[sel]
    per_material = np.bincount(materials, weights=areas[sel])
    dominant = int(per_material.argmax())
    if per_material[dominant] < DOMINANT_FRACTION * per_material.sum():
        return (None, ())
    albedo = np.asarray(scene.materials.materials[dominant].albedo)
    entries = [e[0] for kind in PALETTES.values() for e in kind]
    dist = [np.linalg.norm(albedo - np.asarray(e)) for e in entries]
    nearest = tuple(entries[int(np.argmin(dist))])
    if min(dist) > MAX_PALETTE_DISTANCE or nearest not in HAND_COLOR_NAMES:
        return (None, ())
    return HAND_COLOR_NAMES[nearest]


def scene_queries(scene: SyntheticScene, instances: list[MapInstance],
                  colors: dict[int, tuple]) -> dict[str, dict[str, Truth]]:
    """Query category -> {query text: reference answer}."""
    registry = scene.registry
    by_label: dict[str, set[int]] = defaultdict(set)
    for inst in instances:
        by_label[inst.label].add(inst.id)
    queries: dict[str, dict[str, Truth]] = {"label": {}, "synonym": {}, "colour": {},
                                            "relation": {}, "negative": {}}
    for label in registry:
        queries["label"][label.name] = Truth(set(by_label.get(label.name, set())))
    for phrase, labels in HELDOUT_SYNONYMS.items():
        queries["synonym"][phrase] = Truth(set().union(*(by_label.get(n, set())
                                                         for n in labels)))
    present_things = sorted({i.label for i in instances if i.is_thing})
    for label in present_things:
        for color in COLOR_PROTOTYPES_SRGB:
            truth = Truth(set())
            for inst_id in by_label[label]:
                name, alternatives = colors[inst_id]
                if name == color:
                    truth.positives.add(inst_id)
                elif name is None or color in alternatives:
                    truth.dont_care.add(inst_id)
            queries["colour"][f"{color} {label}"] = truth
    support_of = {i.id: i.support_id for i in scene.instances}
    label_of = {i.id: i.label for i in instances}
    on_pairs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for inst_id, support in support_of.items():
        if support:
            on_pairs[(label_of[inst_id], label_of[support])].add(inst_id)
    supports = sorted({s for _, s in on_pairs})
    for target in sorted({t for t, _ in on_pairs}):
        for support in supports + ["floor"]:
            if support == "floor":
                ids = {i for i in by_label[target] if support_of[i] == 0}
            else:
                ids = on_pairs.get((target, support), set())
            queries["relation"][f"{target} on the {support}"] = Truth(ids)
    for phrase in HELDOUT_NEGATIVES:
        queries["negative"][phrase] = Truth(set())
    return queries


@dataclass
class SceneTable:
    """What the engine queries for one scene, and how its instances map to GT instance ids."""

    scene: SyntheticScene
    instances: list[MapInstance]
    to_gt: dict[int, int]
    """Table instance id -> GT instance id (missing: no GT object, any return of it is wrong)."""


def gt_table(scene: SyntheticScene) -> SceneTable:
    instances, _ = gt_instances(scene)
    return SceneTable(scene, instances, {i.id: i.id for i in instances})


def instant_map_table(scene: SyntheticScene, frames: int, scale: float) -> SceneTable:
    """Instances of the instant map built from a rendered walk through the scene.

    The 2D input is the Grounded-SAM emulator at its ``clean`` level. A map thing is matched to
    the GT thing whose box (grown by 5 cm) holds its centroid, nearest box centre first, else to
    the nearest GT centre within 0.3 m; labels play no part, so a mislabelled map instance is
    matched to the right object and its label errors show in the scores. Map stuff regions match
    the GT stuff region of their label.
    """
    from panoptic_mapper.core.mapping.base import create_map
    from panoptic_mapper.core.scene import (RenderConfig, TrajectoryConfig, generate_trajectory,
                                            render_sequence)
    from panoptic_mapper.core.scene.renderer import CameraConfig
    from panoptic_mapper.core.segmentation.emulator import GroundedSamEmulator, emulator_preset

    registry = scene.registry
    trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=frames, rate_hz=10.0))
    emulator = GroundedSamEmulator(emulator_preset("clean"), registry)
    render = RenderConfig(camera=CameraConfig().scaled(scale))
    instant = create_map("instant", registry, None)
    for sample in render_sequence(scene, trajectory, render, emulator):
        instant.integrate_frame(sample.frame, sample.segmentation)
    instances = instant.get_instances()
    gt = scene.instances
    centers = np.array([g.bbox.center_m for g in gt])
    to_gt: dict[int, int] = {}
    for inst in instances:
        if not inst.is_thing:
            if (scene.triangle_label_ids == inst.label_id).any():
                to_gt[inst.id] = STUFF_ID_OFFSET + inst.label_id
            continue
        dist = np.linalg.norm(centers - inst.centroid_m, axis=1)
        grown = [OrientedBox(g.bbox.center_m, g.bbox.R_world_box, g.bbox.size_m + 0.1)
                 for g in gt]
        inside = [k for k, box in enumerate(grown) if box.contains(inst.centroid_m[None])[0]]
        if inside:
            to_gt[inst.id] = gt[min(inside, key=lambda k: dist[k])].id
        elif dist.min() <= 0.3:
            to_gt[inst.id] = gt[int(dist.argmin())].id
    return SceneTable(scene, instances, to_gt)


def evaluate(engine: QueryEngine, tables: list[SceneTable]) -> dict[str, Tally]:
    tallies: dict[str, Tally] = defaultdict(Tally)
    for table in tables:
        gt, colors = gt_instances(table.scene)
        engine.update_instances(table.instances)
        for category, queries in scene_queries(table.scene, gt, colors).items():
            for text, truth in queries.items():
                # An instance with no GT object counts as its own (wrong) answer.
                returned = {table.to_gt.get(m.instance.id, -m.instance.id)
                            for m in engine.query_objects(text).matches}
                tallies[category].add(text, returned, truth)
                tallies["all"].add(text, returned, truth)
    return tallies


def latency_instances(scenes: list[SyntheticScene], count: int) -> list[MapInstance]:
    """``count`` instances: the scenes' GT instances repeated, shifted and re-numbered."""
    base = [inst for scene in scenes for inst in gt_instances(scene)[0]]
    out = []
    for k in range(count):
        src = base[k % len(base)]
        shift = np.array([20.0 * (k // len(base)), 0.0, 0.0])
        out.append(MapInstance(
            id=k + 1, label=src.label, label_id=src.label_id, is_thing=src.is_thing,
            confidence=1.0, centroid_m=src.centroid_m + shift,
            bbox=OrientedBox(src.bbox.center_m + shift, src.bbox.R_world_box, src.bbox.size_m),
            num_observations=1, label_distribution=dict(src.label_distribution),
            mean_color_rgb=src.mean_color_rgb))
    return out


def latency(engine: QueryEngine, instances: list[MapInstance], repeats: int) -> list[str]:
    started = time.perf_counter()
    engine.update_instances(instances)
    update_ms = (time.perf_counter() - started) * 1e3
    rows = [f"update_instances({len(instances)}): {update_ms:.1f} ms"]
    kinds = {
        "new phrase (text embedding computed)": [f"wooden object number {k}"
                                                 for k in range(repeats)],
        "repeated phrase (cached)": ["coffee mug"] * repeats,
        "colour + label": ["red box"] * repeats,
        "relation (mug on the table)": ["mug on the table"] * repeats,
    }
    engine.query_objects("warm up")
    embedder = getattr(engine.matcher, "embedder", None)
    if embedder is not None:
        kinds["reference: text-model embedding of one new phrase, no engine"] = [
            f"reference phrase number {k}" for k in range(repeats)]
        kinds["same, torch's default thread count"] = [
            f"threads phrase number {k}" for k in range(repeats)]
    for name, texts in kinds.items():
        times = []
        threads = torch.get_num_threads()
        if name.startswith("same"):
            torch.set_num_threads(DEFAULT_TORCH_THREADS)
        for text in texts:
            t0 = time.perf_counter()
            if name.startswith(("reference", "same")):
                embedder.encode([text])
            else:
                engine.query_objects(text)
            times.append((time.perf_counter() - t0) * 1e3)
        torch.set_num_threads(threads)
        rows.append(f"| {name} | {np.median(times):.1f} | {np.percentile(times, 95):.1f} | "
                    f"{max(times):.1f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=5, help="scenes (seeds 0..N-1)")
    parser.add_argument("--instances", type=int, default=1000, help="latency table size")
    parser.add_argument("--repeats", type=int, default=50, help="queries per latency row")
    parser.add_argument("--source", choices=("gt", "instant"), default="gt",
                        help="instance tables: scene ground truth, or the instant map of a "
                             "rendered walk (emulated clean Grounded SAM input)")
    parser.add_argument("--frames", type=int, default=150,
                        help="--source instant: frames rendered per scene (10 Hz walk)")
    parser.add_argument("--scale", type=float, default=0.5,
                        help="--source instant: image scale of the 640x480 camera")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency part")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (the nodes' setting: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("load average at start (1, 5, 15 min): %.1f %.1f %.1f" % os.getloadavg())
    registry = LabelRegistry.default()
    t0 = time.perf_counter()
    scenes = [generate_scene(SceneConfig(seed=s), registry) for s in range(args.scenes)]
    print(f"{len(scenes)} scenes generated in {time.perf_counter() - t0:.1f} s; "
          f"{sum(len(s.instances) for s in scenes)} thing instances")
    unlabelled = sum(1 for s in scenes for c in gt_instances(s)[1].values() if c[0] is None)
    print(f"things without a reference colour (mixed or unknown material): {unlabelled}")
    t0 = time.perf_counter()
    if args.source == "gt":
        tables = [gt_table(s) for s in scenes]
    else:
        tables = [instant_map_table(s, args.frames, args.scale) for s in scenes]
    things = [i for t in tables for i in t.instances if i.is_thing]
    matched = sum(1 for t in tables for i in t.instances if i.is_thing and i.id in t.to_gt)
    covered = sum(len({t.to_gt[i.id] for i in t.instances if i.is_thing and i.id in t.to_gt})
                  for t in tables)
    print(f"instance tables from {args.source} in {time.perf_counter() - t0:.1f} s: "
          f"{len(things)} things, {matched} matched to a GT thing, {covered} of "
          f"{sum(len(s.instances) for s in scenes)} GT things covered")
    t0 = time.perf_counter()
    engines = {"ObjectQueryEngine (MiniLM)": ObjectQueryEngine(QueryConfig(), registry),
               "RegistryQueryEngine": RegistryQueryEngine(registry=registry)}
    print(f"engines built in {time.perf_counter() - t0:.1f} s (text model load included)")
    for name, engine in engines.items():
        tallies = evaluate(engine, tables)
        print(f"\n{name}, min_score {engine.config.min_score}")
        print("| queries | count | precision | recall | absent false alarms |")
        print("|---|---|---|---|---|")
        for category in ("label", "synonym", "colour", "relation", "negative", "all"):
            print(tallies[category].line(category))
        for category in ("label", "synonym", "colour", "relation", "negative"):
            if tallies[category].examples:
                print(f"  {category} errors (first few): {tallies[category].examples}")
    instances = latency_instances(scenes, args.instances)
    for name, engine in ([] if args.no_latency else engines.items()):
        print(f"\nlatency, {name}, {len(instances)} instances, {args.repeats} queries per row")
        rows = latency(engine, instances, args.repeats)
        print(rows[0])
        print("| query | median ms | p95 ms | max ms |")
        print("|---|---|---|---|")
        print("\n".join(rows[1:]))
    print("load average at end (1, 5, 15 min): %.1f %.1f %.1f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
