"""``panoptic-mapper demo --real``: a real RGB-D sequence mapped by the ROS graph with the
``detector`` segmenter backend (no model hub, CPU only), then queried and drawn.

1. the source: a dataset folder (7-Scenes, Replica, ScanNet layout; default: the 7-Scenes
   kitchen in ``../shared/data``) is written as a bag (``bag-from-dataset``), or a bag is used
   as it is;
2. the graph of ``panoptic-mapper launch`` with ``segmenter_backend:=detector`` (the packaged
   SSD detector, depth masks, geometric floor / walls) and the instant map; every frame is
   segmented and integrated (queues sized for the whole sequence), the player runs at
   ``--rate``; the refined map (mapper_node) is not started;
3. the map's instances and the answers to ``--queries`` (default: chair, cup, table) are
   printed, the mesh exported, the map saved, the per-frame cost of the segmenter reported;
4. ``panoptic-mapper render`` draws the map (bird's-eye and oblique, by class, instance, RGB).

The dataset's gravity (7-Scenes: ``gravity-direction.txt``) tells the stuff labeller where "down"
is; without it the map frame is taken as z up (REP 103).

Needs the detector model (``make models``). Owns: the real-data demo flow. Does not own: the
graph tools it drives (``launch``, ``play``, ``render``), the synthetic demo (``demo``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MAP_TIMEOUT_S = 1800.0
DEFAULT_DATASET = "7scenes_redkitchen_stride4"
DEFAULT_QUERIES = ("chair", "cup", "table")
SEGMENTER_QUEUE = 100
"""Frames the segmenter may buffer (its maximum): the demo segments every frame."""


def default_source() -> Path | None:
    """The 7-Scenes kitchen in the shared data folder beside the checkout, if present."""
    candidates = []
    if os.environ.get("PANOPTIC_MAPPER_SHARED_DATA"):
        candidates.append(Path(os.environ["PANOPTIC_MAPPER_SHARED_DATA"]) / DEFAULT_DATASET)
    candidates += [Path.cwd().parent / "shared" / "data" / DEFAULT_DATASET,
                   Path.cwd() / "shared" / "data" / DEFAULT_DATASET,
                   Path(__file__).resolve().parents[3] / "shared" / "data" / DEFAULT_DATASET]
    return next((c for c in candidates if c.is_dir()), None)


def is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3")


def gravity_of(source: Path) -> list[float] | None:
    """The dataset's gravity direction in its world frame, when it ships one."""
    for name in ("gravity-direction.txt", "gravity.txt"):
        if (source / name).is_file():
            values = np.loadtxt(source / name, dtype=float).reshape(-1)
            if values.size == 3 and np.linalg.norm(values) > 0:
                return [float(v) for v in values / np.linalg.norm(values)]
    return None


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.tools.demo import _cli

    source = Path(args.real).expanduser().resolve() if args.real else default_source()
    if source is None:
        print(f"error: no real dataset found (looked for ../shared/data/{DEFAULT_DATASET}); "
              "give a dataset folder or bag: panoptic-mapper demo --real PATH", file=sys.stderr)
        return 1
    if not source.exists():
        print(f"error: {source} not found (give a dataset folder or a bag)", file=sys.stderr)
        return 1
    out = Path(args.out or Path(os.environ.get("TMPDIR", "/tmp")) / "panoptic_mapper_demo_real")
    out = out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("bag", "logs", "pictures"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("mesh.ply", "map.npz", "instances.json"):
        (out / name).unlink(missing_ok=True)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    started = time.perf_counter()
    if is_bag(source):
        bag = source
        print(f"[1/4] playing the bag {bag}", flush=True)
    else:
        bag = out / "bag"
        print(f"[1/4] writing {source} as a bag ...", flush=True)
        argv = ["bag-from-dataset", str(source), str(bag), "--no-progress"]
        if args.frames:
            argv += ["--max-frames", str(args.frames)]
        if _cli(argv, quiet=True) != 0:
            return 1
    gravity = None if is_bag(source) else gravity_of(source)
    print(f"[2/4] mapping it with the ROS graph (player -> segmenter_node [detector] -> "
          f"instant_semantics_node), rate {args.rate} ...", flush=True)
    lines = _map_with_graph(args, out, bag, gravity)
    if lines is None:
        return 1
    print("[3/4] drawing the map (panoptic-mapper render) ...", flush=True)
    render = [sys.executable, "-m", "panoptic_mapper.tools.cli", "render", str(out / "map.npz"),
              "--out", str(out / "pictures")]
    if args.labels:
        render += ["--labels", args.labels]
    if gravity is not None:
        render += ["--up", *(str(-g) for g in gravity)]
    result = subprocess.run(render, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"error: render failed: {result.stderr.strip()}", file=sys.stderr)
        return 1
    pictures = sorted((out / "pictures").glob("*.png"))
    print("[4/4] results")
    for line in lines:
        print(f"  {line}")
    print(f"outputs ({time.perf_counter() - started:.0f} s):")
    print(f"  bag                  : {bag}")
    print(f"  mesh (PLY, semantic) : {out / 'mesh.ply'}")
    print(f"  saved map            : {out / 'map.npz'}")
    print(f"  instances (JSON)     : {out / 'instances.json'}")
    print(f"  node logs            : {out / 'logs'}")
    print("  pictures             :")
    for path in pictures:
        print(f"    {path}")
    return 0


def _map_with_graph(args: argparse.Namespace, out: Path, bag: Path,
                    gravity: list[float] | None) -> list[str] | None:
    """Run the graph on the bag; returns printable result lines, None on failure."""
    from panoptic_mapper.core.io.bag import bag_info
    from panoptic_mapper.core.io.resources import config_path
    from panoptic_mapper.ros.graph_client import GraphClient
    from panoptic_mapper.runtime.launch_plan import plan
    from panoptic_mapper.srv import ExportMesh, ListInstances, QueryObjects, SaveMap
    from panoptic_mapper.tools.launch import (ACTIVE_LINE, STARTUP_TIMEOUT_S, GraphProcesses,
                                              node_commands, player_command)

    logs = out / "logs"
    logs.mkdir()
    arguments = {"with_mapper": "false", "segmenter_backend": "detector"}
    if args.labels:
        arguments["label_file"] = str(Path(args.labels).resolve())
    planned = plan(arguments, str(config_path("mapper.yaml")))
    frames = bag_info(bag).topics.get("/camera/color/image_raw")
    num_frames = frames.message_count if frames is not None else 0
    for node in planned:
        node.overrides["diagnostics_period_s"] = 0.5
        if node.spec.key == "segmenter":
            node.overrides["queue_size"] = SEGMENTER_QUEUE
            if gravity is not None:
                node.overrides["detector.stuff.gravity_in_map"] = gravity
        else:
            # every frame is mapped: the segmenter may lag the player by its whole queue
            node.overrides.update({"queue_size": 100, "sync.max_wait_s": 600.0,
                                   "sync.time_jump_back_s": 1200.0})
    client = GraphClient("demo_real_client")
    with open(logs / "graph.log", "w", encoding="utf-8") as log:
        graph = GraphProcesses(node_commands(planned, logs), log=log)
        try:
            for name in [node.spec.name for node in planned]:
                if not graph.wait_for_line(name, ACTIVE_LINE, STARTUP_TIMEOUT_S):
                    print(f"error: {name} did not start; see {log.name}", file=sys.stderr)
                    return None
            player = graph.start("player", player_command(str(bag), args.rate, planned))
            if player.wait(timeout=MAP_TIMEOUT_S) != 0:
                print(f"error: the player failed; see {log.name}", file=sys.stderr)
                return None
            segmenter = lambda: client.diagnostics("segmenter_node")  # noqa: E731
            client.wait_until(lambda: int(segmenter().get("queue_length", 1)) == 0
                              and int(segmenter().get("frames_published", 0)) > 0, MAP_TIMEOUT_S)
            if not client.wait_for_idle("instant_semantics_node", MAP_TIMEOUT_S):
                print(f"error: the bag was not mapped; see {log.name}; last diagnostics: "
                      f"{client.diagnostics('instant_semantics_node')}", file=sys.stderr)
                return None
            seg, status = segmenter(), client.diagnostics("instant_semantics_node")
            lines = [f"segmented {seg.get('frames_published')} of {num_frames} frames: "
                     f"{seg.get('segment_median_ms')} ms median, {seg.get('segment_p95_ms')} "
                     f"ms p95 per frame (last frame: detect {seg.get('backend.detect_ms')}, "
                     f"stuff {seg.get('backend.stuff_ms')}, masks {seg.get('backend.masks_ms')}"
                     f", merge {seg.get('backend.merge_ms')} ms)",
                     f"mapped {status.get('frames_integrated')} frames (integration median "
                     f"{status.get('integrate_median_ms')} ms per frame)"]
            listed = client.call(ListInstances, "list_instances", ListInstances.Request())
            instances = sorted(listed.instances, key=lambda i: (not i.is_thing, i.label, i.id))
            things = [i for i in instances if i.is_thing]
            lines.append(f"{len(instances)} instances ({len(things)} objects, "
                         f"{len(instances) - len(things)} stuff regions):")
            for inst in instances:
                c = inst.centroid
                lines.append(f"  #{inst.id} {inst.label}{'' if inst.is_thing else ' (stuff)'} "
                             f"at ({c.x:.2f}, {c.y:.2f}, {c.z:.2f}), seen in "
                             f"{inst.num_observations} frames")
            _write_instances(out / "instances.json", instances)
            for text in args.queries or DEFAULT_QUERIES:
                answer = client.call(QueryObjects, "query_objects",
                                     QueryObjects.Request(query=text, max_results=5))
                found = ", ".join(f"#{i.id} {i.label} {i.score:.2f}" for i in answer.instances)
                lines.append(f"query '{text}': {found or 'nothing'}"
                             + ("" if answer.success else f" ({answer.message})"))
            exported = client.call(ExportMesh, "export_mesh", ExportMesh.Request(
                path=str(out / "mesh.ply"), color_mode="semantic"))
            saved = client.call(SaveMap, "save_map", SaveMap.Request(path=str(out / "map.npz")))
            return lines + [exported.message, saved.message]
        except TimeoutError as exc:
            print(f"error: {exc}; see {log.name}", file=sys.stderr)
            return None
        finally:
            client.shutdown()
            graph.stop()


def _write_instances(path: Path, instances) -> None:
    """The listed instances as JSON (for scripts such as benchmarks/real_kitchen.py)."""
    rows = [{"id": int(i.id), "label": i.label, "is_thing": bool(i.is_thing),
             "confidence": float(i.confidence), "observations": int(i.num_observations),
             "centroid_m": [i.centroid.x, i.centroid.y, i.centroid.z]} for i in instances]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
