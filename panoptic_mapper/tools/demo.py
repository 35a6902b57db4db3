"""The product on the embedded default: a synthetic scene mapped by the ROS graph, then queried.

1. ``panoptic-mapper make-scene``: a procedural room with ground truth and its bag (emulated
   Grounded SAM segmentation at ``--noise``);
2. the ROS graph of ``panoptic-mapper launch`` (segmenter_node in replay mode ->
   instant_semantics_node and mapper_node, separate processes over DDS) maps the bag played by
   ``panoptic-mapper play``; the mapper trains its refined field (a short budget of
   ``--train-steps``) until it is ready, and serves the planner API;
3. the planner services answer ``query_objects`` for the scene's most frequent classes; the mesh
   is exported (PLY, semantic colours) and the map saved, then the graph is stopped with SIGINT;
4. ``panoptic-mapper eval`` scores the instant map on the same scene against its ground truth
   (scene-level PQ and more; the refined map is not scored here: eval would train it again).

``--no-mapper`` runs the instant map only (it then serves the planner API). The map is drawn
with ``panoptic-mapper render`` (PNG pictures, paths printed).

``--real [DATASET_OR_BAG]`` maps a real sequence instead (default: the 7-Scenes kitchen in
``../shared/data``) with the ``detector`` segmenter backend: see ``demo_real``.

Prints where every output is. DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE
=LOCALHOST unless set) in a random ROS_DOMAIN_ID, so the demo never talks to another graph.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAP_TIMEOUT_S = 600.0
DEFAULT_FRAMES = 60
TRAIN_STEPS_PER_FRAME = 5
"""Default step budget of the demo's refined field per frame of the walk."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", nargs="?", const="", default=None, metavar="DATASET_OR_BAG",
                        help="map a real RGB-D dataset folder or bag with the offline detector "
                             "backend (default: the 7-Scenes kitchen in ../shared/data; needs "
                             "`make models`)")
    parser.add_argument("--out", default=None,
                        help="output folder; the outputs of an earlier demo there are replaced "
                             f"(default: {Path(tempfile.gettempdir()) / 'panoptic_mapper_demo'}"
                             ", with --real: ..._demo_real)")
    parser.add_argument("--labels", default="", metavar="YAML",
                        help="label registry (--real only; default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames of the camera walk (default: 60); with --real: at most "
                             "this many frames of the dataset (default: all)")
    parser.add_argument("--noise", choices=("clean", "medium", "hard"), default="medium",
                        help="emulated Grounded SAM noise level (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=0.5,
                        help="image size relative to 640x480 (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=None,
                        help="bag playback rate (default: 1.0; with --real: 0.5)")
    parser.add_argument("--queries", nargs="+", metavar="TEXT",
                        help="queries to ask (default: the three most frequent object "
                             "classes of the map)")
    parser.add_argument("--no-mapper", action="store_true",
                        help="run the instant map only (no mapper_node, no refined field)")
    parser.add_argument("--train-steps", type=int, default=None, metavar="N",
                        help="step budget of the refined field; it answers from 60%% of it on "
                             f"(default: {TRAIN_STEPS_PER_FRAME} per frame)")


def run(args: argparse.Namespace) -> int:
    if args.real is not None:
        from panoptic_mapper.tools import demo_real

        args.rate = args.rate or 0.5
        return demo_real.run(args)
    args.rate = args.rate or 1.0
    args.frames = args.frames or DEFAULT_FRAMES
    if args.frames < 2:
        print("error: --frames must be >= 2", file=sys.stderr)
        return 1
    if args.train_steps is not None and args.train_steps < 1:
        print("error: --train-steps must be >= 1", file=sys.stderr)
        return 1
    out = Path(args.out or Path(tempfile.gettempdir()) / "panoptic_mapper_demo")
    out = out.expanduser().resolve()
    scene = out / "scene"
    try:
        _prepare(out)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    started = time.perf_counter()
    print(f"[1/4] generating scene {args.seed} ({args.frames} frames, noise {args.noise}) ...",
          flush=True)
    if _cli(["make-scene", "--seed", str(args.seed), "--frames", str(args.frames), "--rate",
             "10", "--scale", str(args.scale), "--noise", args.noise, "--no-progress",
             str(scene)]) != 0:
        return 1
    nodes = "instant node" if args.no_mapper else "instant node + mapper node"
    print(f"[2/4] mapping the bag with the ROS graph (player -> segmenter -> {nodes}) ...",
          flush=True)
    answers = _map_with_graph(args, out, scene)
    if answers is None:
        return 1
    print("[3/4] scoring the instant map on the same scene (panoptic-mapper eval), drawing it ...",
          flush=True)
    if _cli(["eval", str(scene), "--method", "instant", "--out", str(out / "eval"),
             "--no-progress"], quiet=True) != 0:
        return 1
    row = json.loads((out / "eval" / "metrics.json").read_text())["rows"][0]
    if _cli(["render", str(out / "mesh.ply"), "--labels", str(scene / "labels.yaml"),
             "--out", str(out / "pictures")], quiet=True) != 0:
        return 1
    print("[4/4] results")
    for line in answers:
        print(f"  {line}")
    print(f"  scene PQ {row['pq']:.1f} (things {row['pq_th']:.1f}, stuff {row['pq_st']:.1f}), "
          f"3D mIoU {row['miou_3d']:.1f}, Chamfer-L1 {row['chamfer_l1_cm']:.1f} cm "
          "(panoptic-mapper eval, instant map)")
    print(f"outputs ({time.perf_counter() - started:.0f} s):")
    print(f"  scene + ground truth : {scene}")
    print(f"  bag                  : {scene / 'bag'}")
    print(f"  mesh (PLY, semantic) : {out / 'mesh.ply'}")
    print(f"  saved map            : {out / 'map.npz'}")
    print(f"  metrics              : {out / 'eval' / 'metrics.md'}")
    print(f"  node logs            : {out / 'logs'}")
    print("  pictures             :")
    for path in sorted((out / "pictures").glob("*.png")):
        print(f"    {path}")
    return 0


def _prepare(out: Path) -> None:
    """Create ``out``; remove what an earlier demo left there (and nothing else)."""
    out.mkdir(parents=True, exist_ok=True)
    scene = out / "scene"
    if scene.exists():
        if not (scene / "scene.json").is_file():
            raise OSError(f"{scene} exists and is not a scene of an earlier demo; "
                          "choose another --out")
        shutil.rmtree(scene)
    for name in ("eval", "logs", "pictures"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("mesh.ply", "map.npz"):
        (out / name).unlink(missing_ok=True)


def _cli(argv: list[str], quiet: bool = False) -> int:
    result = subprocess.run([sys.executable, "-m", "panoptic_mapper.tools.cli", *argv],
                            stdout=subprocess.PIPE if quiet else None, text=True)
    if result.returncode != 0:
        print(f"error: panoptic-mapper {argv[0]} failed (exit {result.returncode})",
              file=sys.stderr)
    return result.returncode


def _map_with_graph(args: argparse.Namespace, out: Path, scene: Path) -> list[str] | None:
    """Run the graph on the scene's bag; returns printable answers, None on failure."""
    from panoptic_mapper.core.io.resources import config_path
    from panoptic_mapper.ros.graph_client import GraphClient
    from panoptic_mapper.runtime.launch_plan import plan
    from panoptic_mapper.srv import ExportMesh, ListInstances, QueryObjects, SaveMap
    from panoptic_mapper.tools.launch import (ACTIVE_LINE, STARTUP_TIMEOUT_S, GraphProcesses,
                                              node_commands, player_command)

    logs = out / "logs"
    logs.mkdir()
    planned = plan({"label_file": str(scene / "labels.yaml"),
                    "with_mapper": str(not args.no_mapper).lower()},
                   str(config_path("mapper.yaml")))
    train_steps = args.train_steps or TRAIN_STEPS_PER_FRAME * args.frames
    for node in planned:
        if node.spec.key in ("instant", "mapper"):
            # the demo shows the map of every frame; the keep-up behaviour is benchmarked
            node.overrides.update({"queue_size": args.frames, "diagnostics_period_s": 0.5})
        if node.spec.key == "mapper":
            node.overrides["map.training.trainer.total_steps"] = train_steps
    mapping_nodes = [node.spec.name for node in planned if node.spec.key != "segmenter"]
    client = GraphClient("demo_client")
    with open(logs / "graph.log", "w", encoding="utf-8") as log:
        graph = GraphProcesses(node_commands(planned, logs), log=log)
        try:
            for name in [node.spec.name for node in planned]:
                if not graph.wait_for_line(name, ACTIVE_LINE, STARTUP_TIMEOUT_S):
                    print(f"error: {name} did not start; see {log.name}", file=sys.stderr)
                    return None
            player = graph.start("player", player_command(str(scene / "bag"), args.rate,
                                                          planned))
            if player.wait(timeout=MAP_TIMEOUT_S) != 0 or not all(
                    client.wait_for_idle(name, MAP_TIMEOUT_S) for name in mapping_nodes):
                print(f"error: the bag was not mapped; see {log.name}; last diagnostics: "
                      f"{ {name: client.diagnostics(name) for name in mapping_nodes} }",
                      file=sys.stderr)
                return None
            status = client.diagnostics("instant_semantics_node")
            lines = [f"mapped {status.get('frames_integrated')} of {args.frames} frames "
                     f"(integration median {status.get('integrate_median_ms')} ms per frame)"]
            if not args.no_mapper:
                lines.append(_wait_for_field(client, train_steps))
            listed = client.call(ListInstances, "list_instances", ListInstances.Request())
            things = [i for i in listed.instances if i.is_thing]
            lines.append(f"{len(listed.instances)} instances ({len(things)} objects, "
                         f"{len(listed.instances) - len(things)} stuff regions)")
            for text in args.queries or _frequent_labels(things, 3):
                answer = client.call(QueryObjects, "query_objects",
                                     QueryObjects.Request(query=text, max_results=5))
                found = ", ".join(
                    f"#{i.id} {i.label} {i.score:.2f} at ({i.centroid.x:.2f}, "
                    f"{i.centroid.y:.2f}, {i.centroid.z:.2f})" for i in answer.instances)
                lines.append(f"query '{text}': {found or 'nothing'}"
                             + ("" if answer.success else f" ({answer.message})"))
            exported = client.call(ExportMesh, "export_mesh", ExportMesh.Request(
                path=str(out / "mesh.ply"), color_mode="semantic"))
            saved = client.call(SaveMap, "save_map", SaveMap.Request(path=str(out / "map.npz")))
            lines += [exported.message, saved.message]
            return lines
        except TimeoutError as exc:
            print(f"error: {exc}; see {log.name}", file=sys.stderr)
            return None
        finally:
            client.shutdown()
            graph.stop()


def _wait_for_field(client, train_steps: int) -> str:
    """Wait until the mapper's field answers; a printable line about it."""
    started = time.perf_counter()
    status = lambda: client.diagnostics("mapper_node")  # noqa: E731
    ready = client.wait_until(lambda: status().get("answers_from") == "field"
                              or status().get("training_state") == "failed", MAP_TIMEOUT_S)
    values = status()
    if not ready or values.get("answers_from") != "field":
        return (f"refined field NOT ready after {time.perf_counter() - started:.0f} s "
                f"(training {values.get('training_state')}: {values.get('training_error', '')}"
                "); the answers below come from the mapper's prior (its instant map)")
    return (f"refined field ready at step {values.get('training_step')} of {train_steps} "
            f"(waited {time.perf_counter() - started:.0f} s after mapping, "
            f"{values.get('training_tokens')} tokens, {values.get('keyframes')} keyframes); "
            "the answers below come from the field")


def _frequent_labels(instances, count: int) -> list[str]:
    """The ``count`` labels with the most instances."""
    return [label for label, _ in collections.Counter(i.label for i in instances)
            .most_common(count)]
