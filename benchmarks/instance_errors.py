"""What kind of instance errors a served map makes: a census of a mesh against the scene's truth.

PQ says how much is wrong, not what. For a fetched mesh (``export_mesh``'s PLY, or any map mesh
with per-vertex ``label_id`` / ``instance_id``) and its scene, every mesh vertex takes the
ground-truth object of the closest ground-truth surface point
(``core.eval.mesh_scoring.ground_truth_labelled``), and the ground-truth things are counted as:

* **merged**: the object shares one map instance with other objects (each with at least
  ``--share`` of its vertices in it): under-segmentation, split into same class (two chairs as
  one) and other class (boxes in a shelf's instance);
* **split**: no map instance holds at least half of the object's vertices;
* **mislabelled**: the majority label of its vertices is not its class;
* **found**: one map instance holds at least half of it, alone, with the right majority label.

Counts are per vertex of the map's own geometry, not per rendered pixel, so they are a diagnosis
beside the PQ of ``graph_quality.py``, not a score. Things with fewer than ``--min-vertices``
vertices on the mesh are left out (they were hardly seen).

Example (the meshes of a graph_quality run):
  PYTHONPATH=. .venv/bin/python benchmarks/instance_errors.py --scene /work/bench/gq13/scenes/s0_hard_300f \\
      --mesh served=/work/bench/gq13/runs/s0_hard_300f_r1/served_end.ply \\
      --mesh refined=/work/bench/gq13/runs/s0_hard_300f_r1/served_refined.ply
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_mapper.core.eval.mesh_scoring import ground_truth_labelled
from panoptic_mapper.core.io.ply import read_ply
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import PanopticMesh


def census(mesh: PanopticMesh, gt_mesh: PanopticMesh, registry: LabelRegistry,
           share: float = 0.3, min_vertices: int = 50) -> dict[str, Any]:
    """Counts of found / merged / split / mislabelled ground-truth things (module docstring)."""
    truth = ground_truth_labelled(mesh, gt_mesh)
    is_thing = registry.is_thing_table()
    gt_ids = truth.instance_ids.astype(np.int64)
    keep = (gt_ids > 0) & is_thing[truth.label_ids]
    sizes = Counter(gt_ids[keep].tolist())
    things = {g for g, n in sizes.items() if n >= min_vertices}
    pairs = Counter(zip(gt_ids[keep].tolist(), mesh.instance_ids[keep].astype(np.int64).tolist()))
    gt_class = {g: int(np.bincount(truth.label_ids[gt_ids == g]).argmax()) for g in things}
    members: dict[int, list[int]] = defaultdict(list)
    best: dict[int, tuple[int, int]] = {}
    for (g, p), n in pairs.items():
        if g not in things or p <= 0:
            continue
        if n >= share * sizes[g]:
            members[p].append(g)
        if n > best.get(g, (0, 0))[1]:
            best[g] = (p, n)
    merged_same, merged_other = set(), set()
    for gs in members.values():
        if len(gs) < 2:
            continue
        for g in gs:
            others = [h for h in gs if h != g]
            (merged_same if any(gt_class[h] == gt_class[g] for h in others)
             else merged_other).add(g)
    split = {g for g in things if best.get(g, (0, 0))[1] < 0.5 * sizes[g]}
    mislabelled = {g for g in things
                   if int(np.bincount(mesh.label_ids[gt_ids == g]).argmax()) != gt_class[g]}
    merged = merged_same | merged_other
    found = things - merged - split - mislabelled
    by_class: dict[str, Counter] = defaultdict(Counter)
    for g in things:
        row = by_class[registry.by_id(gt_class[g]).name]
        row["things"] += 1
        row["found"] += g in found
        row["merged"] += g in merged
        row["split"] += g in split
        row["mislabelled"] += g in mislabelled
    return {"things": len(things), "found": len(found), "merged_same_class": len(merged_same),
            "merged_other_class": len(merged_other - merged_same), "split": len(split),
            "mislabelled": len(mislabelled),
            "map_instances": int(len(np.unique(mesh.instance_ids[mesh.instance_ids > 0]))),
            "by_class": {k: dict(v) for k, v in sorted(by_class.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, required=True,
                        help="scene folder with gt_mesh.ply and labels.yaml")
    parser.add_argument("--mesh", action="append", required=True, metavar="NAME=PLY")
    parser.add_argument("--share", type=float, default=0.3)
    parser.add_argument("--min-vertices", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    registry = LabelRegistry.from_yaml(args.scene / "labels.yaml")
    gt_mesh = read_ply(args.scene / "gt_mesh.ply")
    rows = {}
    print("| mesh | things | found | merged same class | merged other class | split | "
          "mislabelled | map instances |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.mesh:
        name, _, path = spec.partition("=")
        rows[name] = census(read_ply(Path(path)), gt_mesh, registry, args.share,
                            args.min_vertices)
        r = rows[name]
        print(f"| {name} | {r['things']} | {r['found']} | {r['merged_same_class']} | "
              f"{r['merged_other_class']} | {r['split']} | {r['mislabelled']} | "
              f"{r['map_instances']} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"scene": str(args.scene), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
