"""The real-data run (``panoptic-mapper demo --real``) scored against a hand list of the kitchen.

There is no ground truth for the 7-Scenes kitchen, so a person listed its physical objects and
their footprints (``benchmarks/data/redkitchen_objects.yaml``, positions in a gravity-aligned
frame of the dataset's world; see that file). A thing instance of the map is matched to the
listed object of the *same label* whose footprint, grown by ``--tolerance``, holds the
instance's centroid (the nearest such object when several do). Reported:

* objects found: listed objects with at least one matched instance (per label and in all);
* ids per found object: how many map instances stand for it over the sequence (1 = perfect);
* false instances: thing instances that match no listed object of their label (a "table" on
  the kitchen counter, a second id far from any chair, a label the list does not hold).

``--run`` first runs the demo (the ROS graph with the detector backend on the whole sequence,
``demo --real --rate R``) into ``--out``; without it an earlier demo output folder is scored
(it reads ``instances.json`` there). ``--core`` instead runs the same backend and the instant
map in this process, without ROS (every frame, no timing effects), once per ``--min-score``
value: a sweep of the detector's score threshold.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/real_kitchen.py --run \\
      --out /tmp/panoptic_mapper_demo_real [--rate 0.5] [--tolerance 0.15]
  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/real_kitchen.py --core \\
      --min-score 0.2 0.3 0.4
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

OBJECTS = Path(__file__).resolve().parent / "data" / "redkitchen_objects.yaml"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes_redkitchen_stride4"


def gravity_frame(gravity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(e1, e2) of the annotation frame (see the objects file)."""
    g = gravity / np.linalg.norm(gravity)
    e1 = np.array([1.0, 0.0, 0.0]) - g[0] * g
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(g, e1)


def score(instances: list[dict], objects: list[dict], e1: np.ndarray, e2: np.ndarray,
          tolerance: float) -> dict:
    centers = np.array([o["center"] for o in objects], float)
    halves = np.array([o["half"] for o in objects], float) + tolerance
    matched: dict[int, list[int]] = collections.defaultdict(list)
    false = []
    for inst in instances:
        if not inst["is_thing"]:
            continue
        ab = np.array([np.dot(inst["centroid_m"], e1), np.dot(inst["centroid_m"], e2)])
        inside = [k for k, o in enumerate(objects) if o["label"] == inst["label"]
                  and (np.abs(ab - centers[k]) <= halves[k]).all()]
        if inside:
            best = min(inside, key=lambda k: np.linalg.norm(ab - centers[k]))
            matched[best].append(inst["id"])
        else:
            false.append(inst)
    rows = []
    for label in sorted({o["label"] for o in objects}):
        members = [k for k, o in enumerate(objects) if o["label"] == label]
        found = [k for k in members if matched[k]]
        ids = [len(matched[k]) for k in found]
        rows.append({"label": label, "listed": len(members), "found": len(found),
                     "ids_per_found": float(np.mean(ids)) if ids else None,
                     "false": sum(1 for f in false if f["label"] == label)})
    found_all = [k for k in range(len(objects)) if matched[k]]
    return {"rows": rows, "listed": len(objects), "found": len(found_all),
            "ids_per_found": float(np.mean([len(matched[k]) for k in found_all]))
            if found_all else None,
            "false": len(false), "false_by_label": dict(collections.Counter(
                f["label"] for f in false)),
            "objects": [{"name": o["name"], "ids": matched[k]} for k, o in enumerate(objects)]}


def core_instances(data: Path, min_score: float) -> list[dict]:
    """Detector backend + instant map over every frame, in this process (no ROS)."""
    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.labels import LabelRegistry
    from panoptic_mapper.core.mapping.base import create_map
    from panoptic_mapper.core.segmentation.base import SegmentationRequest
    from panoptic_mapper.core.segmentation.detector_backend import DetectorSegmenter

    registry = LabelRegistry.default()
    gravity = np.loadtxt(data / "gravity-direction.txt").tolist()
    segmenter = DetectorSegmenter.from_config(
        {"min_score": min_score, "stuff": {"gravity_in_map": gravity}}, registry)
    panoptic_map = create_map("instant", registry)
    for sample in open_dataset(data).iter_samples():
        frame = sample.frame
        segmentation = segmenter.segment(SegmentationRequest(
            rgb=frame.rgb, stamp_ns=frame.stamp_ns, depth_m=frame.depth_m,
            intrinsics=frame.intrinsics, T_world_cam=frame.T_world_cam))
        panoptic_map.integrate_frame(frame, segmentation)
    return [{"id": i.id, "label": i.label, "is_thing": i.is_thing,
             "centroid_m": i.centroid_m.tolist()} for i in panoptic_map.get_instances()]


def print_result(result: dict, title: str) -> None:
    print(title)
    print("| label | listed | found | ids per found object | false instances |")
    print("|---|---|---|---|---|")
    for row in result["rows"]:
        ids = "-" if row["ids_per_found"] is None else f"{row['ids_per_found']:.2f}"
        print(f"| {row['label']} | {row['listed']} | {row['found']} | {ids} | {row['false']} |")
    others = {k: v for k, v in result["false_by_label"].items()
              if k not in {r["label"] for r in result["rows"]}}
    ids = "-" if result["ids_per_found"] is None else f"{result['ids_per_found']:.2f}"
    print(f"| **all** | {result['listed']} | {result['found']} | {ids} | {result['false']}"
          f"{f' (other labels: {others})' if others else ''} |")
    for obj in result["objects"]:
        print(f"  {obj['name']}: {', '.join(f'#{i}' for i in obj['ids']) or 'not found'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/panoptic_mapper_demo_real",
                        help="demo output folder (with --run: written first)")
    parser.add_argument("--run", action="store_true", help="run demo --real first")
    parser.add_argument("--rate", type=float, default=0.5, help="playback rate of the run")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--tolerance", type=float, default=0.15,
                        help="metres added to each footprint half extent")
    parser.add_argument("--core", action="store_true",
                        help="run backend + instant map in this process (no ROS)")
    parser.add_argument("--min-score", type=float, nargs="+", default=[0.2],
                        help="detector score thresholds of the --core runs")
    args = parser.parse_args()
    listed = yaml.safe_load(OBJECTS.read_text())
    e1, e2 = gravity_frame(np.loadtxt(Path(args.data) / "gravity-direction.txt"))
    if args.core:
        for min_score in args.min_score:
            instances = core_instances(Path(args.data), min_score)
            print_result(score(instances, listed["scored"], e1, e2, args.tolerance),
                         f"core run, min_score {min_score}: "
                         f"{sum(i['is_thing'] for i in instances)} thing instances, "
                         f"{sum(not i['is_thing'] for i in instances)} stuff regions")
        return
    out = Path(args.out)
    if args.run:
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        result = subprocess.run([sys.executable, "-m", "panoptic_mapper.tools.cli", "demo",
                                 "--real", args.data, "--out", str(out), "--rate",
                                 str(args.rate)], env=env)
        if result.returncode != 0:
            sys.exit(result.returncode)
    instances = json.loads((out / "instances.json").read_text())
    print_result(score(instances, listed["scored"], e1, e2, args.tolerance),
                 f"{out / 'instances.json'}: {sum(i['is_thing'] for i in instances)} thing "
                 f"instances, {sum(not i['is_thing'] for i in instances)} stuff regions; "
                 f"tolerance {args.tolerance} m")


if __name__ == "__main__":
    main()
