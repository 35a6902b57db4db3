"""How crowded the procedural scenes are: things and touching pairs, ``dense`` vs ``spaced``.

For each seed and arrangement (``SceneConfig.arrangement``) generates the default one-room scene
and counts its things, the pairs of things whose boxes are within 1 cm of each other (same class /
different class; "on" = one stands on the other, the rest stand side by side), the chairs pushed
under a table or desk, and the deepest interpenetration of two boxes that should not overlap
(everything except an object and what it stands on, and a tucked chair and its table with what
stands on it). Also checks that a 300-frame camera walk still finds its paths.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/scene_contacts.py [--seeds 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from panoptic_mapper.core.scene import SceneConfig, TrajectoryConfig, generate_scene
from panoptic_mapper.core.scene import generate_trajectory
from panoptic_mapper.core.scene.contacts import box_gap_m, get_contact_pairs

TUCK_OVERLAP_M = 0.01
"""A chair whose box reaches this far into a table's/desk's box is pushed under it."""


def ancestors(scene) -> dict[int, set[int]]:
    """Per instance id, the ids of everything it stands on (directly or further down)."""
    by_id = scene.instance_by_id()
    out = {}
    for inst in scene.instances:
        chain, cur = set(), inst.support_id
        while cur:
            chain.add(cur)
            cur = by_id[cur].support_id
        out[inst.id] = chain
    return out


def tucked_chairs(scene) -> list[tuple[int, int]]:
    """(chair id, table/desk id) of chairs pushed under a top."""
    tops = [i for i in scene.instances if i.label in ("table", "desk")]
    return [(c.id, t.id) for c in scene.instances if c.label == "chair" and not c.support_id
            for t in tops if box_gap_m(c.bbox, t.bbox) < -TUCK_OVERLAP_M]


def worst_interpenetration_m(scene) -> float:
    """Deepest box overlap between things that should not overlap (0 if none overlaps)."""
    up = ancestors(scene)
    tucked = tucked_chairs(scene)
    worst = 0.0
    for pair in get_contact_pairs(scene.instances, 0.0):
        a, b = pair.id_a, pair.id_b
        if a in up[b] or b in up[a]:
            continue
        if any({a, b} == {c, t} or (a == c and t in up[b]) or (b == c and t in up[a])
               for c, t in tucked):
            continue
        worst = max(worst, -pair.gap_m)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print("| arrangement | seed | things | touching same-class (on) | touching other-class (on) "
          "| tucked chairs | worst overlap mm | walk | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals: dict[str, np.ndarray] = {}
    for arrangement in ("spaced", "dense"):
        for seed in range(args.seeds):
            started = time.perf_counter()
            scene = generate_scene(SceneConfig(seed=seed, arrangement=arrangement))
            up = ancestors(scene)
            pairs = get_contact_pairs(scene.instances)
            on = [p.id_a in up[p.id_b] or p.id_b in up[p.id_a] for p in pairs]
            same = sum(p.same_class for p in pairs)
            same_on = sum(p.same_class and o for p, o in zip(pairs, on))
            other_on = sum(not p.same_class and o for p, o in zip(pairs, on))
            tucked = len(tucked_chairs(scene))
            worst = worst_interpenetration_m(scene)
            try:
                generate_trajectory(scene, TrajectoryConfig(num_frames=300, seed=seed))
                walk = "ok"
            except Exception as exc:  # reported, not hidden: the table shows which seed failed
                walk = f"failed: {exc}"
            row = np.array([len(scene.instances), same, same_on, len(pairs) - same, other_on,
                            tucked])
            totals[arrangement] = totals.get(arrangement, 0) + row
            print(f"| {arrangement} | {seed} | {row[0]} | {same} ({same_on}) | "
                  f"{len(pairs) - same} ({other_on}) | {tucked} | {1000 * worst:.1f} | {walk} | "
                  f"{time.perf_counter() - started:.1f} |")
    for arrangement, t in totals.items():
        print(f"| {arrangement} | mean | {t[0] / args.seeds:.1f} | {t[1] / args.seeds:.1f} "
              f"({t[2] / args.seeds:.1f}) | {t[3] / args.seeds:.1f} ({t[4] / args.seeds:.1f}) | "
              f"{t[5] / args.seeds:.1f} | | | |")


if __name__ == "__main__":
    main()
