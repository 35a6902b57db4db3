"""The map the planner is SERVED through the public ROS graph, scored like the offline map.

For every (noise level, seed) a synthetic scene is generated once (``panoptic-mapper
make-scene --frames N --rate 10``, 640x480, cached in ``--work``) and scored offline once
(``panoptic-mapper eval SCENE --method instant``: all frames through the core). Then, at each
``--rate``, the default launch plan (``panoptic_mapper.runtime.launch_plan.plan``, started as
``panoptic-mapper launch`` starts it, in a fresh random ROS_DOMAIN_ID on localhost) maps the
scene's bag played by ``panoptic-mapper play``, and a probe node in this process measures:

* per node, from ``/diagnostics``: frames received / matched / integrated / skipped (queue
  full) / rejected / invalid and the synchroniser's drops; the lag (bag time on the player's
  ``/clock`` minus the stamp of the newest integrated frame, in wall seconds) while the bag
  plays; the time after the bag's end until the served map has handled every frame;
* CPU share per process (``/proc/<pid>/stat``; % of one core) while the bag plays and after
  it, with the nodes each process hosts; the probe's own process and the whole machine too;
* "the served map has handled every frame": the player has exited, every mapping node has
  handled every frame it matched, its queue is empty, its served snapshot contains its newest
  frame (``snapshot_stamp_s`` >= ``last_frame_stamp_s`` where the node reports it; else
  ``map_frames`` == ``frames_integrated``; else the stamp of its latched mesh), and its
  counters have not changed for a few seconds;
* then the map is fetched as a planner fetches it: ``/panoptic_mapper/export_mesh`` (PLY with
  label_id / instance_id) and ``list_instances``; the instant node's own map from its latched
  ``/instant_semantics_node/mesh``; with the mapper node, the time until its refined field
  answers (``answers_from: field`` after the bag's end), and the served map again when its
  training is done (or at ``--timeout-s``);
* every fetched mesh is scored by ``core.eval.mesh_scoring.score_meshes``: the scored frames,
  renders (``MeshRaycaster``, as the maps render themselves) and metrics of ``panoptic-mapper
  eval``, so a served map and the offline map of the same scene are scored by the same code.
  Scoring runs after the scene's graph runs, never beside a graph.

Targets checked (issue 12; the default graph at 1x, 10 Hz, 640x480): >= 97 % of the frames
integrated into the served map; 0 frames rejected; served PQ (the map served when the bag has
been handled) within 1.0 of the offline all-frames instant PQ; the refined field answering
within 300 s of the bag's end; the served refined map's PQ >= the instant node's PQ of the
same run.

``--restart`` adds a "restart and resume" row per scene at the first rate: play the first
``--restart-split`` of the bag, ``save_map``, stop the graph, relaunch it with the saved map
loaded by the serving node's ``load_on_start_path`` parameter, play the rest
(``play --start-offset``) and check that the instance ids listed before the restart are still
served for the same objects (same id, same label, centroid within ``--restart-tolerance-m``;
stuff regions: same id and label). Without that parameter the row is skipped with a message;
``--restart-load service`` loads the file through ``load_map`` after the relaunch instead.
``--check-scoring`` scores the offline instant map's own mesh (in-process run, written and read
back as PLY) with ``score_meshes`` beside the ``eval`` scores of the same scene.

Prints Markdown tables and writes ``graph_quality.md`` / ``graph_quality.json`` (everything,
with every node's last diagnostics) to ``--out``; meshes, instance lists and node logs stay in
``--work/runs``.

Run (from the repository root; a 300-frame run with the mapper takes several minutes per scene
and rate, most of it waiting for the refined field):
    PYTHONPATH=$PWD .venv/bin/python benchmarks/graph_quality.py --levels clean medium hard \\
        --seeds 0 1 2 --frames 300 --rates 1 2 --restart --work /tmp/graph_quality \\
        --out /tmp/graph_quality/results
    # a short smoke run:
    PYTHONPATH=$PWD .venv/bin/python benchmarks/graph_quality.py --levels clean --seeds 0 \\
        --frames 60 --rates 1 --work /tmp/graph_quality --out /tmp/graph_quality/smoke
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENE_RATE_HZ = 10.0
TARGET_INTEGRATED_PCT = 97.0
TARGET_PQ_GAP = 1.0
TARGET_FIELD_S = 300.0
SETTLE_S = 3.0
"""The served map counts as done once its counters have not changed for this long."""
STALL_S = 90.0
"""Give up waiting for a node that changes nothing for this long without being done."""
CLOCK_HZ = 20.0
"""The player's /clock rate (the probe's bag time, for the lag; the nodes use wall time)."""
API_NAMESPACE = "/panoptic_mapper"
HANDLED_KEYS = ("frames_integrated", "frames_rejected", "frames_invalid", "frames_skipped_busy")
TRAINING_END_STATES = ("done", "failed", "stopped")
LOAD_PARAMETER = "load_on_start_path"
INSTANT_NODE = "instant_semantics_node"
CEILING = "ceiling"
"""Score key of the served bag-end mesh with ground-truth labels (the per-vertex ceiling)."""
TARGET_GAP_CLOSED = {"hard": 0.5, "medium": 1.0 / 3.0}
"""Issue 13: share of the instant map's gap to the ceiling the refined map must close."""


def _cli(argv: list[str], log: Path | None = None) -> None:
    command = [sys.executable, "-m", "panoptic_mapper.tools.cli", *argv]
    with open(log, "w", encoding="utf-8") if log else open(os.devnull, "w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}); log: {log}")


# ============================================================================================
# Scenes and the offline map
# ============================================================================================
def ensure_scene(work: Path, seed: int, level: str, frames: int, pose_drift: str = "none"
                 ) -> Path:
    """The scene folder (dataset + bag), generated once; with ``pose_drift`` the bag carries a
    simulated SLAM estimate and its loop corrections (``make-scene --pose-drift``)."""
    drift = f"_{pose_drift}" if pose_drift != "none" else ""
    scene = work / "scenes" / f"s{seed}_{level}_{frames}f{drift}"
    if not ((scene / "scene.json").is_file() and (scene / "bag" / "metadata.yaml").is_file()):
        if scene.exists():
            import shutil

            shutil.rmtree(scene)  # an interrupted earlier generation
        scene.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {scene.name} ...", flush=True)
        _cli(["make-scene", str(scene), "--seed", str(seed), "--noise", level, "--frames",
              str(frames), "--rate", str(SCENE_RATE_HZ), "--pose-drift", pose_drift,
              "--no-progress"],
             scene.parent / f"{scene.name}.log")
    return scene


def offline_eval(work: Path, scene: Path) -> dict[str, Any]:
    """``panoptic-mapper eval SCENE --method instant`` (cached): its headline row; a scene with
    a SLAM estimate is fed the estimate and its corrections, as the graph is."""
    out = work / "offline" / scene.name
    if not (out / "metrics.json").is_file():
        print(f"offline eval of {scene.name} (all frames through the core) ...", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        poses = ["--poses", "estimated"] if (scene / "pose_estimated").is_dir() else []
        _cli(["eval", str(scene), "--method", "instant", "--out", str(out), "--no-progress",
              *poses], out / "eval.log")
    metrics = json.loads((out / "metrics.json").read_text())
    return next(r for r in metrics["rows"] if r["method"] == "instant")


def check_scoring(work: Path, scene: Path, offline: dict[str, Any]) -> dict[str, Any]:
    """The offline instant map, run in this process, scored by ``evaluate`` and its own mesh
    (written and read back as PLY, as ``export_mesh`` hands it over) by ``score_meshes``."""
    from panoptic_mapper.core.eval.mesh_scoring import score_meshes
    from panoptic_mapper.core.eval.report import headline
    from panoptic_mapper.core.eval.runner import MethodSpec, evaluate
    from panoptic_mapper.core.io.ply import write_ply
    from panoptic_mapper.core.mapping.base import create_map

    maps: dict[str, Any] = {}

    def factory(registry):
        maps["instant"] = create_map("instant", registry)
        return maps["instant"]

    print(f"scoring check on {scene.name} ...", flush=True)
    ran = headline(evaluate(scene, [MethodSpec("instant", factory=factory)]).methods["instant"])
    ply = write_ply(work / "offline" / scene.name / "instant_mesh.ply",
                    maps["instant"].get_mesh())
    scored = headline(score_meshes(scene, {"mesh": ply}).methods["mesh"])
    keys = ("pq", "pq_th", "pq_st", "sq", "rq", "miou_2d", "miou_3d", "mcov", "chamfer_l1_cm")
    return {"scene": scene.name, "eval_cli": {k: offline.get(k) for k in keys},
            "evaluate_in_process": {k: ran[k] for k in keys},
            "score_meshes_of_its_ply": {k: scored[k] for k in keys}}


# ============================================================================================
# CPU
# ============================================================================================
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class CpuMonitor:
    """CPU seconds of named processes, sampled every 0.5 s (so a process that exits keeps its
    last sample), and marks of named moments."""

    def __init__(self):
        self._pids: dict[str, int] = {"probe": os.getpid()}
        self._cpu: dict[str, float] = {}
        self._lock = threading.Lock()
        self.marks: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._pids[name] = pid
        self._sample()

    def _sample(self) -> None:
        with self._lock:
            for name, pid in self._pids.items():
                value = _process_cpu_s(pid)
                if value is not None:
                    self._cpu[name] = value

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def mark(self, name: str) -> None:
        self._sample()
        with self._lock:
            self.marks[name] = {"wall": time.monotonic(), "cpu": dict(self._cpu),
                                "machine": _machine_ticks()}

    def shares(self, start: str, end: str) -> dict[str, Any] | None:
        """% of one core per process between two marks, and the whole machine's busy %."""
        a, b = self.marks.get(start), self.marks.get(end)
        if a is None or b is None or b["wall"] <= a["wall"]:
            return None
        wall = b["wall"] - a["wall"]
        per = {name: round(100.0 * (b["cpu"][name] - a["cpu"].get(name, 0.0)) / wall, 1)
               for name in b["cpu"]}
        busy = b["machine"][0] - a["machine"][0]
        total = max(1, b["machine"][1] - a["machine"][1])
        return {"wall_s": round(wall, 1), "process_pct_of_core": per,
                "machine_busy_pct": round(100.0 * busy / total, 1), "cores": os.cpu_count()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ============================================================================================
# The probe node
# ============================================================================================
class Probe:
    """A node of this process in the graph's domain: /clock, /diagnostics, latched meshes,
    planner service calls."""

    def __init__(self, domain_id: int):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import MultiThreadedExecutor
        from rosgraph_msgs.msg import Clock

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, args=[])
        self.node = rclpy.create_node("graph_quality_probe", context=self.context)
        self._lock = threading.Lock()
        self.clock_ns = 0
        self.clock_changed_at = 0.0
        self.latest: dict[str, dict[str, str]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.meshes: dict[str, tuple[float, Any]] = {}
        self._mesh_subscriptions: dict[str, Any] = {}
        self.node.create_subscription(Clock, "/clock", self._on_clock, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _on_clock(self, msg) -> None:
        stamp = msg.clock.sec * 10**9 + msg.clock.nanosec
        with self._lock:
            if stamp != self.clock_ns:
                self.clock_ns, self.clock_changed_at = stamp, time.monotonic()

    def _on_diagnostics(self, msg) -> None:
        now = time.monotonic()
        with self._lock:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                self.latest[status.name] = values
                self.history.setdefault(status.name, []).append(
                    {"wall": now, "clock_ns": self.clock_ns, "values": values})

    def diagnostics(self, node_name: str) -> dict[str, str]:
        """Latest values of the status whose name contains ``node_name`` ({} before any)."""
        with self._lock:
            for name, values in self.latest.items():
                if node_name in name:
                    return dict(values)
        return {}

    def diagnostics_history(self, node_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for name, samples in self.history.items() if node_name in name
                    for s in samples]

    def watch_mesh(self, topic: str) -> None:
        """Keep the latest PanopticMesh on ``topic`` (latched: the current one comes at once)."""
        from panoptic_mapper.msg import PanopticMesh
        from panoptic_mapper.ros.qos import LATCHED_MAP_QOS

        if topic in self._mesh_subscriptions:
            return

        def keep(msg, topic=topic):
            with self._lock:
                self.meshes[topic] = (time.monotonic(), msg)

        self._mesh_subscriptions[topic] = self.node.create_subscription(
            PanopticMesh, topic, keep, LATCHED_MAP_QOS)

    def mesh(self, topic: str) -> tuple[float, Any] | None:
        """(arrival time, message) of the latest mesh on ``topic``."""
        with self._lock:
            return self.meshes.get(topic)

    def call(self, srv_type, name: str, request, timeout_s: float = 60.0):
        from panoptic_mapper.ros.graph_client import call_service

        return call_service(self.node, srv_type, f"{API_NAMESPACE}/{name}", request, timeout_s)

    def shutdown(self) -> None:
        self._executor.shutdown(timeout_sec=5)
        self._thread.join(timeout=5)
        self.node.destroy_node()
        self.context.try_shutdown()


def _stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _num(values: dict[str, str], key: str) -> float | None:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def _instances(probe: Probe) -> list[dict[str, Any]]:
    from panoptic_mapper.srv import ListInstances

    answer = probe.call(ListInstances, "list_instances", ListInstances.Request())
    if not answer.success:
        raise RuntimeError(f"list_instances: {answer.message}")
    return [{"id": int(i.id), "label": i.label, "label_id": int(i.label_id),
             "is_thing": bool(i.is_thing), "confidence": round(float(i.confidence), 3),
             "centroid_m": [round(float(i.centroid.x), 4), round(float(i.centroid.y), 4),
                            round(float(i.centroid.z), 4)],
             "num_observations": int(i.num_observations)} for i in answer.instances]


def _export(probe: Probe, path: Path) -> dict[str, Any]:
    from panoptic_mapper.srv import ExportMesh

    answer = probe.call(ExportMesh, "export_mesh", ExportMesh.Request(path=str(path),
                                                                      color_mode="semantic"))
    if not answer.success:
        raise RuntimeError(f"export_mesh: {answer.message}")
    return {"path": str(path), "vertices": int(answer.num_vertices),
            "triangles": int(answer.num_triangles)}


# ============================================================================================
# One graph run
# ============================================================================================
@dataclass
class GraphRun:
    """What one run of the graph does."""

    scene: Path
    rate: float
    out: Path
    """Folder of this run's logs, meshes and instance lists."""
    with_mapper: bool = True
    load_path: str = ""
    """A map file the serving node loads before the bag (restart row)."""
    load_via: str = "param"
    """``param`` (``load_on_start_path``) or ``service`` (``load_map`` after the start)."""
    start_offset_s: float = 0.0
    stop_fraction: float = 0.0
    """> 0: stop the player when this fraction of the bag has been played."""
    wait_for_field: bool = True
    save_to: str = ""
    """Save the served map here (``save_map``) once it has handled every frame."""
    timeout_s: float = 900.0
    results: dict[str, Any] = field(default_factory=dict)


def _planned(run: GraphRun):
    from panoptic_mapper.core.io.resources import config_path
    from panoptic_mapper.runtime.launch_plan import plan

    planned = plan({"label_file": str(run.scene / "labels.yaml"),
                    "with_mapper": str(run.with_mapper).lower()},
                   str(config_path("mapper.yaml")))
    api = [n for n in planned if n.overrides.get("planner_api.serve")]
    if run.load_path and run.load_via == "param":
        api[0].overrides[LOAD_PARAMETER] = run.load_path
    return planned


def load_parameter_missing(with_mapper: bool) -> str:
    """Why the serving node cannot load a map at start ("" when it can)."""
    from panoptic_mapper.core.io.resources import config_path
    from panoptic_mapper.runtime.launch_plan import config_class, plan

    planned = plan({"with_mapper": str(with_mapper).lower()}, str(config_path("mapper.yaml")))
    api = next(n for n in planned if n.overrides.get("planner_api.serve"))
    cls = config_class(api.spec)
    if cls is None or LOAD_PARAMETER not in cls().to_flat_dict():
        return (f"{api.spec.name} has no parameter '{LOAD_PARAMETER}' yet (issue 12): restart "
                "row skipped (--restart-load service loads through load_map instead)")
    return ""


def _hosted(commands, planned) -> dict[str, list[str]]:
    """Process name -> the nodes it hosts (the launch plan puts the instant and mapper nodes
    into one process)."""
    from panoptic_mapper.runtime.launch_plan import processes

    hosted = {p.name: [n.spec.name for n in p.nodes] for p in processes(planned)}
    return {name: hosted.get(name, [name]) for name, _ in commands}


def _wait_active(processes, hosted: dict[str, list[str]], timeout_s: float) -> None:
    from panoptic_mapper.tools.launch import ACTIVE_LINE

    deadline = time.monotonic() + timeout_s
    for name, nodes in hosted.items():
        while sum(ACTIVE_LINE in line for line in list(processes.output[name])) < len(nodes):
            if processes.processes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become active: "
                                   + "".join(processes.output[name][-20:]))
            time.sleep(0.1)


def _input_values(probe: Probe, name: str) -> dict[str, str]:
    """The diagnostics holding the input counters of what node ``name`` serves: its own, or
    for a node without an input of its own (a mapper deriving from the instant map in its
    process) the instant node's."""
    values = probe.diagnostics(name)
    if "frames_matched" in values or values.get("prior_source") == "topics":
        return values
    return probe.diagnostics(INSTANT_NODE)


def _served_state(values: dict[str, str], inputs: dict[str, str], loaded_frames: int,
                  mesh_stamp_s: float | None) -> tuple[bool, str, tuple]:
    """(has handled every frame, how the snapshot was checked, the state compared for
    stability) of one mapping node; ``inputs``: the diagnostics with its input counters."""
    matched = _num(inputs, "frames_matched")
    handled = sum(_num(inputs, k) or 0 for k in HANDLED_KEYS)
    queue = _num(inputs, "queue_length")
    last = _num(inputs, "last_frame_stamp_s") or 0.0
    if "snapshot_stamp_s" in values:
        how, served = "snapshot_stamp_s", (_num(values, "snapshot_stamp_s") or 0) >= last - 1e-6
    elif "map_frames" in values and "frames_integrated" in values:
        how = "map_frames"
        served = (_num(values, "map_frames") or 0) - loaded_frames >= \
            (_num(values, "frames_integrated") or 0)
    elif mesh_stamp_s is not None:
        how, served = "mesh stamp", mesh_stamp_s >= last - 2e-3
    else:
        how, served = "unchecked", True
    # a loop correction being applied (or waiting) will replace what is served
    correcting = _num(inputs, "corrections_pending") or 0
    done = (last > 0 and served and (matched is None or handled >= matched)
            and (queue is None or queue == 0) and correcting == 0)
    return done, how, (matched, handled, last, values.get("snapshot_stamp_s"),
                       values.get("map_frames"), inputs.get("corrections_applied"))


def _wait_served(probe: Probe, mapping: dict[str, str], loaded: dict[str, int],
                 deadline: float) -> dict[str, Any]:
    """Wait until every mapping node serves every frame it matched (see the docstring)."""
    states: dict[str, Any] = {}
    since = {name: (None, time.monotonic(), None) for name in mapping}
    while time.monotonic() < deadline:
        pending = False
        for name, topic in mapping.items():
            if states.get(name, {}).get("done"):
                continue
            mesh = probe.mesh(topic)
            done, how, state = _served_state(probe.diagnostics(name), _input_values(probe, name),
                                             loaded.get(name, 0),
                                             _stamp_s(mesh[1]) if mesh else None)
            last_state, changed_at, done_at = since[name]
            now = time.monotonic()
            if state != last_state:
                since[name] = (state, now, now if done else None)
            elif done and done_at is None:
                since[name] = (state, changed_at, now)
            _, changed_at, done_at = since[name]
            if done and now - changed_at >= SETTLE_S:
                states[name] = {"done": True, "checked_by": how, "at": done_at}
            elif now - changed_at >= STALL_S:
                states[name] = {"done": False, "checked_by": how, "at": now,
                                "reason": f"nothing changed for {STALL_S:.0f} s"}
            else:
                pending = True
        if not pending:
            break
        time.sleep(0.2)
    for name in mapping:
        states.setdefault(name, {"done": False, "at": time.monotonic(), "reason": "timeout"})
    return states


def _node_counts(values: dict[str, str], played: int | None, mapping: bool) -> dict[str, Any]:
    """Frame counters of one node. A node adds a counter at its first increment, so a mapping
    node's missing frame counter is 0 (once it reports at all). A mapping node without an
    input of its own (a mapper deriving from the instant map) integrates nothing: its
    "integrated" count is the frames in the snapshot it serves."""
    keys = ("received_rgb", "received_recorded_segmentation", "frames_matched",
            "frames_integrated", "frames_published", "frames_skipped_busy", "frames_rejected",
            "frames_invalid", "queue_length", "map_frames", "worker_busy_pct",
            "snapshot_frames", "keyframes_kept")
    counts: dict[str, Any] = {k: _num(values, k) for k in keys if k in values}
    derived = mapping and "frames_matched" not in values and "snapshot_frames" in values
    zero = (("frames_rejected", "frames_invalid") if derived else
            ("received_rgb", "frames_matched", "frames_integrated", "frames_skipped_busy",
             "frames_rejected", "frames_invalid") if mapping else ("frames_invalid",))
    if values:
        counts.update({k: 0.0 for k in zero if k not in counts})
    drops = {k: _num(values, k) for k in values
             if k.startswith(("sync_", "problem.missing_", "problem.late_"))}
    counts["sync_drops"] = {k: v for k, v in drops.items() if v}
    done = counts.get("snapshot_frames") if derived else \
        counts.get("frames_integrated", counts.get("frames_published"))
    if derived:
        counts["frames_served"] = done
    if played and done is not None:
        counts["integrated_pct"] = round(100.0 * done / played, 2)
    return counts


def _lag(samples: list[dict[str, Any]], rate: float, bag_end_wall: float) -> dict[str, Any]:
    """Bag time minus the newest integrated frame's stamp, in wall seconds, over the
    diagnostics received while the bag played; and the node's own frame latency (matched ->
    integrated) from its last diagnostics."""
    lags = [(s["clock_ns"] / 1e9 - float(s["values"]["last_frame_stamp_s"])) / rate
            for s in samples if s["clock_ns"] and s["wall"] <= bag_end_wall
            and float(s["values"].get("last_frame_stamp_s", 0) or 0) > 0]
    last = samples[-1]["values"] if samples else {}
    return {"median_s": round(statistics.median(lags), 2) if lags else None,
            "max_s": round(max(lags), 2) if lags else None, "samples": len(lags),
            **{key: _num(last, key) for key in (
                "frame_latency_median_ms", "frame_latency_p95_ms", "frame_latency_max_ms",
                "integrate_median_ms", "integrate_max_ms", "refresh_median_ms")
               if key in last}}


def _played_frames(player_output: list[str], rgb_topic: str) -> int | None:
    for line in player_output:
        found = re.search(r"published \d+ messages \((\{.*\})\)", line)
        if found:
            try:
                return int(ast.literal_eval(found.group(1)).get(rgb_topic, 0))
            except (ValueError, SyntaxError):
                return None
    return None


def run_graph(run: GraphRun) -> dict[str, Any]:
    """Start the graph, play the bag, wait until the served map has every frame, fetch it."""
    from panoptic_mapper.core.io.bag import BagTopics, bag_info
    from panoptic_mapper.srv import LoadMap, SaveMap
    from panoptic_mapper.tools.launch import GraphProcesses, node_commands, player_command

    run.out.mkdir(parents=True, exist_ok=True)
    domain_id = random.SystemRandom().randint(1, 100)
    os.environ.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    planned = _planned(run)
    api = next(n.spec.name for n in planned if n.overrides.get("planner_api.serve"))
    mapping = {n.spec.name: f"{API_NAMESPACE}/mesh" if n.spec.name == api
               else f"/{n.spec.name}/mesh" for n in planned if n.spec.key != "segmenter"}
    bag = run.scene / "bag"
    info = bag_info(bag)
    rgb_topic = BagTopics().rgb
    commands = node_commands(planned, run.out)
    hosted = _hosted(commands, planned)
    res = run.results
    res.update(scene=run.scene.name, rate=run.rate, domain_id=domain_id, api_node=api,
               processes=hosted, load_average_before=round(os.getloadavg()[0], 2),
               bag_frames=info.topics[rgb_topic].message_count if rgb_topic in info.topics
               else None, start_offset_s=run.start_offset_s)
    deadline = time.monotonic() + run.timeout_s
    probe, cpu = Probe(domain_id), CpuMonitor()
    log = open(run.out / "graph.log", "w", encoding="utf-8")
    processes = None
    try:
        processes = GraphProcesses(commands, log=log)
        for name, process in processes.processes.items():
            cpu.watch(name, process.pid)
        _wait_active(processes, hosted, 300)
        loaded: dict[str, int] = {}
        if run.load_path and run.load_via == "service":
            answer = probe.call(LoadMap, "load_map", LoadMap.Request(path=run.load_path))
            res["load_map"] = answer.message
            if not answer.success:
                raise RuntimeError(f"load_map: {answer.message}")
        if run.load_path:  # the frames already in the loaded map are not this run's
            while not all(probe.diagnostics(n) for n in mapping) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3.0)  # a diagnostics period after the load
            loaded = {n: int(_num(probe.diagnostics(n), "map_frames")
                             or _num(probe.diagnostics(n), "snapshot_frames") or 0)
                      for n in mapping}
            res["instances_after_load"] = _instances(probe)
        res["loaded_frames"] = loaded
        player_argv = player_command(str(bag), run.rate, planned) + ["--clock", str(CLOCK_HZ)]
        if run.start_offset_s:
            player_argv += ["--start-offset", f"{run.start_offset_s:.4f}"]
        cpu.mark("start")
        started = time.monotonic()
        player = processes.start("player", player_argv)
        cpu.watch("player", player.pid)
        stop_ns = (info.start_ns + int(run.stop_fraction * info.duration_ns)
                   if run.stop_fraction else None)
        while player.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the player did not finish within --timeout-s")
            if stop_ns is not None and probe.clock_ns >= stop_ns:
                player.send_signal(signal.SIGINT)
                stop_ns = None
            time.sleep(0.05)
        exited = time.monotonic()
        bag_end = probe.clock_changed_at or exited
        cpu.mark("bag_end")
        res["played_frames"] = _played_frames(processes.output["player"], rgb_topic)
        res["player_wall_s"] = round(bag_end - started, 2)  # with its wait for subscribers
        for topic in mapping.values():
            probe.watch_mesh(topic)
        served = _wait_served(probe, mapping, loaded, deadline)
        cpu.mark("served")
        for state in served.values():
            state["after_bag_s"] = round(state.pop("at") - bag_end, 1)
        res["served_after_bag_s"] = {n: s["after_bag_s"] for n, s in served.items()}
        res["served_check"] = served
        res["nodes"] = {}
        for node in planned:
            samples = probe.diagnostics_history(node.spec.name)
            res["nodes"][node.spec.name] = {
                "counts": _node_counts(probe.diagnostics(node.spec.name), res["played_frames"],
                                       node.spec.name in mapping),
                "lag": _lag(samples, run.rate, bag_end),
                "diagnostics": probe.diagnostics(node.spec.name)}
        res["meshes"] = {"served_end": _export(probe, run.out / "served_end.ply")}
        res["instances_end"] = _instances(probe)
        (run.out / "instances_end.json").write_text(json.dumps(res["instances_end"], indent=1))
        res["answers_from_at_end"] = probe.diagnostics(api).get("answers_from")
        if run.save_to:
            answer = probe.call(SaveMap, "save_map", SaveMap.Request(path=run.save_to), 300)
            if not answer.success:
                raise RuntimeError(f"save_map: {answer.message}")
            res["saved"] = answer.message
        for name, topic in mapping.items():
            if name != api:
                res["meshes"][name] = _topic_mesh(probe, topic, name, run.out, deadline)
        if run.with_mapper and run.wait_for_field:
            res["field"] = _wait_field(probe, cpu, bag_end, deadline)
            res["meshes"]["served_refined"] = _export(probe, run.out / "served_refined.ply")
            res["instances_refined"] = _instances(probe)
            if "mapper_node" in res["nodes"]:
                res["nodes"]["mapper_node"]["diagnostics_final"] = \
                    probe.diagnostics("mapper_node")
        res["cpu"] = {"bag": cpu.shares("start", "bag_end"),
                      "after_bag_until_served": cpu.shares("bag_end", "served"),
                      "after_served_until_trained": cpu.shares("served", "trained")}
        return res
    finally:
        if processes is not None:
            codes = processes.stop()
            res["exit_codes"] = {n: c for n, c in codes.items()}
        cpu.close()
        probe.shutdown()
        log.close()
        (run.out / "run.json").write_text(json.dumps(res, indent=1, default=str))


def _topic_mesh(probe: Probe, topic: str, node: str, out: Path, deadline: float
                ) -> dict[str, Any]:
    """The node's latched mesh once it carries the node's newest frame, written as PLY."""
    from panoptic_mapper.core.io.ply import write_ply
    from panoptic_mapper.ros.panoptic_conversions import mesh_from_msg

    last = _num(probe.diagnostics(node), "last_frame_stamp_s") or 0.0
    got, until = None, min(deadline, time.monotonic() + 30.0)
    while time.monotonic() < until:
        got = probe.mesh(topic)
        if got is not None and _stamp_s(got[1]) >= last - 2e-3:
            break
        time.sleep(0.2)
    if got is None:
        return {"error": f"no mesh on {topic}"}
    msg = got[1]
    path = write_ply(out / f"{node}.ply", mesh_from_msg(msg))
    return {"path": str(path), "topic": topic, "source": msg.source,
            "stamp_s": round(_stamp_s(msg), 3), "node_last_frame_stamp_s": last,
            "vertices": len(msg.vertices) // 3, "triangles": len(msg.triangles) // 3}


def _wait_field(probe: Probe, cpu: CpuMonitor, bag_end: float, deadline: float
                ) -> dict[str, Any]:
    """Wait until the mapper's field answers, then until its training ends (or the
    deadline); the served map is re-published after the last chunk."""
    answered_at = None
    values: dict[str, str] = {}
    while time.monotonic() < deadline:
        values = probe.diagnostics("mapper_node")
        if answered_at is None and values.get("answers_from") == "field":
            # the first report that said so (the field may have answered before the bag ended)
            answered_at = next(s["wall"] for s in probe.diagnostics_history("mapper_node")
                               if s["values"].get("answers_from") == "field")
            cpu.mark("field")
        if values.get("training_state") in TRAINING_END_STATES:
            break
        time.sleep(0.2)
    ended_at = time.monotonic()
    cpu.mark("trained")
    if values.get("training_state") == "done":  # the last chunk's labels: next refresh
        while time.monotonic() < min(deadline, ended_at + 20.0):
            mesh = probe.mesh(f"{API_NAMESPACE}/mesh")
            if mesh is not None and mesh[0] > ended_at:
                break
            time.sleep(0.2)
    return {"answers_after_bag_s": None if answered_at is None
            else round(answered_at - bag_end, 1),
            "training_end_after_bag_s": round(ended_at - bag_end, 1),
            "training_state": values.get("training_state"),
            "answers_from": values.get("answers_from"),
            "training_step": values.get("training_step"),
            "training_total_steps": values.get("training_total_steps"),
            "field_restarts": values.get("field_restarts"),
            "timed_out": values.get("training_state") not in TRAINING_END_STATES}


# ============================================================================================
# Restart and resume
# ============================================================================================
def restart_row(scene: Path, rate: float, work: Path, args) -> dict[str, Any]:
    """First part of the bag, save_map, stop; relaunch with the map loaded; the rest."""
    from panoptic_mapper.core.io.bag import bag_info

    row: dict[str, Any] = {"scene": scene.name, "rate": rate}
    with_mapper = not args.no_refined
    if args.restart_load == "param":
        missing = load_parameter_missing(with_mapper)
        if missing:
            print(f"restart/resume on {scene.name}: {missing}", flush=True)
            return row | {"skipped": missing}
    out = work / "runs" / f"{scene.name}_r{rate:g}_restart"
    map_path = out / "map.npz"
    print(f"restart/resume on {scene.name} at {rate:g}x ...", flush=True)
    first = run_graph(GraphRun(scene, rate, out / "part1", with_mapper,
                               stop_fraction=args.restart_split, wait_for_field=False,
                               save_to=str(map_path), timeout_s=args.timeout_s))
    info = bag_info(scene / "bag")
    api = first["api_node"]
    served = first["nodes"][api]["diagnostics"]
    last_s = _num(served, "last_frame_stamp_s") or _num(served, "snapshot_stamp_s") or 0.0
    period_s = info.duration_ns / 1e9 / max(1, (first["bag_frames"] or 2) - 1)
    offset_s = max(0.0, last_s - info.start_ns / 1e9 + 0.5 * period_s)
    second = run_graph(GraphRun(scene, rate, out / "part2", with_mapper, load_path=str(map_path),
                                load_via=args.restart_load, start_offset_s=offset_s,
                                wait_for_field=False, timeout_s=args.timeout_s))
    before, loaded = first["instances_end"], second.get("instances_after_load", [])
    row.update(load_via=args.restart_load, split_fraction=args.restart_split,
               part1_frames=_done(first["nodes"][api]["counts"]),
               part2_frames=_done(second["nodes"][api]["counts"]),
               resume_offset_s=round(offset_s, 3),
               loaded_equals_saved=_id_labels(loaded) == _id_labels(before),
               ids=compare_ids(before, second["instances_end"], args.restart_tolerance_m),
               part1=first, part2=second)
    return row


def _done(counts: dict[str, Any]):
    return counts.get("frames_served", counts.get("frames_integrated"))


def _id_labels(instances: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return sorted((i["id"], i["label_id"]) for i in instances)


def compare_ids(before: list[dict[str, Any]], after: list[dict[str, Any]],
                tolerance_m: float) -> dict[str, Any]:
    """Which instances listed before the restart are served for the same object after it:
    same id, same label and (things) centroid within ``tolerance_m``."""
    after_by_id = {i["id"]: i for i in after}
    out: dict[str, Any] = {"things": 0, "things_kept": 0, "stuff": 0, "stuff_kept": 0,
                           "lost": []}
    for b in before:
        kind = "things" if b["is_thing"] else "stuff"
        out[kind] += 1
        a = after_by_id.get(b["id"])
        moved = None if a is None else float(np.linalg.norm(
            np.subtract(a["centroid_m"], b["centroid_m"])))
        if a is None:
            why = "id no longer served"
        elif a["label_id"] != b["label_id"]:
            why = f"label {b['label']} -> {a['label']}"
        elif b["is_thing"] and moved > tolerance_m:
            why = f"centroid moved {moved:.2f} m"
        else:
            out[f"{kind}_kept"] += 1
            continue
        out["lost"].append({"id": b["id"], "label": b["label"], "why": why})
    return out


# ============================================================================================
# Scoring, targets and tables
# ============================================================================================
def score_scene(scene: Path, runs: list[dict[str, Any]]) -> None:
    """Score every mesh fetched in the scene's runs (one pass over its frames)."""
    from panoptic_mapper.core.eval.mesh_scoring import score_meshes
    from panoptic_mapper.core.eval.report import headline

    meshes = {f"{i}:{key}": entry["path"] for i, run in enumerate(runs)
              for key, entry in run.get("meshes", {}).items() if "path" in entry}
    if not meshes:
        return
    meshes.update(_ceiling_meshes(scene, runs))
    print(f"scoring {len(meshes)} served meshes of {scene.name} ...", flush=True)
    result = score_meshes(scene, meshes)
    for name, method in result.methods.items():
        index, key = name.split(":", 1)
        runs[int(index)].setdefault("scores", {})[key] = {
            k: v for k, v in headline(method).items() if not k.startswith(("integrate", "final"))}
    for run in runs:  # instant graph: the instant node's map is the served one
        scores = run.get("scores", {})
        if run["api_node"] == INSTANT_NODE and "served_end" in scores:
            scores.setdefault(INSTANT_NODE, scores["served_end"])


def _ceiling_meshes(scene: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run, the served bag-end mesh with ground-truth labels on every vertex (the scene's
    ceiling on this geometry: ``CEILING``); none without the scene's ground-truth mesh."""
    from panoptic_mapper.core.eval.mesh_scoring import ground_truth_labelled
    from panoptic_mapper.core.io.ply import read_ply

    gt_path = scene / "gt_mesh.ply"
    if not gt_path.is_file():
        return {}
    gt_mesh = read_ply(gt_path)
    return {f"{i}:{CEILING}": ground_truth_labelled(read_ply(run["meshes"]["served_end"]["path"]),
                                                    gt_mesh)
            for i, run in enumerate(runs)
            if "path" in run.get("meshes", {}).get("served_end", {})}


def gap_closed(run: dict[str, Any]) -> dict[str, float | None]:
    """Gaps to the ceiling (issue 13's headline): the instant node's and the served refined
    map's, and the share of the instant gap the refined map closes."""
    ceiling, instant = _pq(run, CEILING), _pq(run, INSTANT_NODE)
    refined = _pq(run, "served_refined")
    out: dict[str, float | None] = {"ceiling": ceiling, "instant_gap": None, "refined_gap": None,
                                    "closed": None}
    if ceiling is None:
        return out
    if instant is not None:
        out["instant_gap"] = ceiling - instant
    if refined is not None:
        out["refined_gap"] = ceiling - refined
    if instant is not None and refined is not None and ceiling - instant > 0.05:
        out["closed"] = (refined - instant) / (ceiling - instant)
    return out


def _pq(run: dict[str, Any], key: str, metric: str = "pq") -> float | None:
    return run.get("scores", {}).get(key, {}).get(metric)


def targets(run: dict[str, Any], offline: dict[str, Any]) -> dict[str, Any]:
    """Each target: value, limit, pass (None when it cannot be checked in this run)."""
    api = run["api_node"]
    counts = run["nodes"][api]["counts"]
    rejected = sum(int(run["nodes"][n]["counts"].get("frames_rejected") or 0)
                   for n in run["nodes"])
    served = _pq(run, "served_end")
    gap = None if served is None or offline.get("pq") is None else served - offline["pq"]
    field_s = run.get("field", {}).get("answers_after_bag_s")
    instant = _pq(run, INSTANT_NODE)
    refined = _pq(run, "served_refined")
    margin = None if refined is None or instant is None else refined - instant
    pct = counts.get("integrated_pct")
    st_instant, st_refined = _pq(run, INSTANT_NODE, "pq_st"), _pq(run, "served_refined", "pq_st")
    st_margin = None if st_instant is None or st_refined is None else st_refined - st_instant
    closed = gap_closed(run)["closed"]
    level = run["scene"].split("_")[1] if "_" in run["scene"] else ""
    need = TARGET_GAP_CLOSED.get(level)
    return {
        "integrated_pct": {"value": pct, "limit": f">= {TARGET_INTEGRATED_PCT}",
                           "pass": None if pct is None else pct >= TARGET_INTEGRATED_PCT},
        "rejected": {"value": rejected, "limit": "0", "pass": rejected == 0},
        "served_minus_offline_pq": {"value": gap, "limit": f"abs <= {TARGET_PQ_GAP}",
                                    "pass": None if gap is None else abs(gap) <= TARGET_PQ_GAP},
        "field_answers_s": {"value": field_s, "limit": f"<= {TARGET_FIELD_S:g}",
                            "pass": None if "field" not in run
                            else field_s is not None and field_s <= TARGET_FIELD_S},
        "refined_minus_instant_pq": {"value": margin, "limit": ">= 0",
                                     "pass": None if margin is None else margin >= 0},
        "refined_minus_instant_pq_st": {"value": st_margin, "limit": ">= 0",
                                        "pass": None if st_margin is None else st_margin >= 0},
        "gap_closed": {"value": closed, "limit": f">= {need:.2f}" if need else "none",
                       "pass": None if closed is None or need is None else closed >= need},
    }


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) \
        else str(value)


def _cnt(value) -> str:
    return "-" if value is None else str(int(value))


def delivery_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| scene | rate | node | played | received | matched | integrated (%) | skipped "
             "| rejected | invalid | sync drops | lag median / max s | served after bag s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for name, node in r["nodes"].items():
            c = node["counts"]
            done = c.get("frames_served", c.get("frames_integrated", c.get("frames_published")))
            drops = ", ".join(f"{k.split('.')[-1]}={int(v)}" for k, v in c["sync_drops"].items())
            lines.append(
                f"| {r['scene']} | {r['rate']:g}x | {name} | {_cnt(r['played_frames'])} | "
                f"{_cnt(c.get('received_rgb', c.get('received_recorded_segmentation')))} | "
                f"{_cnt(c.get('frames_matched'))} | {_cnt(done)} "
                f"({_f(c.get('integrated_pct'))}) | {_cnt(c.get('frames_skipped_busy'))} | "
                f"{_cnt(c.get('frames_rejected'))} | {_cnt(c.get('frames_invalid'))} | "
                f"{drops or 'none'} | {_f(node['lag']['median_s'], 2)} / "
                f"{_f(node['lag']['max_s'], 2)} | {_f(r['served_after_bag_s'].get(name))} |")
    return "\n".join(lines)


def cpu_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| scene | rate | process (nodes) | CPU % of a core: bag / after bag until served "
             "/ until trained | machine busy % (bag), load average before |",
             "|---|---|---|---|---|"]
    for r in runs:
        windows = [r["cpu"].get(k) for k in ("bag", "after_bag_until_served",
                                             "after_served_until_trained")]
        names = list(r["processes"]) + ["player", "probe"]
        for i, name in enumerate(names):
            nodes = r["processes"].get(name, [{"player": "bag player",
                                               "probe": "this script"}.get(name, name)])
            cells = " / ".join(_f(w["process_pct_of_core"].get(name)) if w else "-"
                               for w in windows)
            machine = (f"{_f(windows[0]['machine_busy_pct'] if windows[0] else None)}, "
                       f"{_f(r['load_average_before'])}") if i == 0 else ""
            lines.append(f"| {r['scene']} | {r['rate']:g}x | {name} ({', '.join(nodes)}) | "
                         f"{cells} | {machine} |")
    return "\n".join(lines)


def quality_table(runs: list[dict[str, Any]], offline: dict[str, dict]) -> str:
    lines = ["| scene | rate | served at bag end PQ (th / st) | served refined PQ (th / st) | "
             "instant node PQ (th / st) | offline instant PQ (th / st) | ceiling PQ (th / st) | "
             "gap instant / refined | gap closed | field answers / "
             "trained after bag s | served end - offline | refined - instant |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pqs(scores: dict | None) -> str:
        if not scores:
            return "-"
        return f"{_f(scores.get('pq'))} ({_f(scores.get('pq_th'))} / {_f(scores.get('pq_st'))})"

    for r in runs:
        s = r.get("scores", {})
        t = r["targets"]
        field_info = r.get("field", {})
        gap = gap_closed(r)
        closed = None if gap["closed"] is None else 100.0 * gap["closed"]
        lines.append(
            f"| {r['scene']} | {r['rate']:g}x | {pqs(s.get('served_end'))} | "
            f"{pqs(s.get('served_refined'))} | {pqs(s.get('instant_semantics_node'))} | "
            f"{pqs(offline.get(r['scene']))} | {pqs(s.get(CEILING))} | "
            f"{_f(gap['instant_gap'])} / {_f(gap['refined_gap'])} | "
            f"{'-' if closed is None else f'{closed:.0f} %'} | "
            f"{_f(field_info.get('answers_after_bag_s'))} / "
            f"{_f(field_info.get('training_end_after_bag_s'))} | "
            f"{_f(t['served_minus_offline_pq']['value'], 2)} | "
            f"{_f(t['refined_minus_instant_pq']['value'], 2)} |")
    return "\n".join(lines)


def targets_table(runs: list[dict[str, Any]]) -> str:
    names = ("integrated_pct", "rejected", "served_minus_offline_pq", "field_answers_s",
             "refined_minus_instant_pq", "refined_minus_instant_pq_st", "gap_closed")
    lines = ["| scene | rate | " + " | ".join(
        f"{n} ({runs[0]['targets'][n]['limit']})" for n in names) + " |",
        "|---|---|" + "---|" * len(names)]
    for r in runs:
        cells = []
        for n in names:
            t = r["targets"][n]
            mark = {True: "pass", False: "FAIL", None: "n/a"}[t["pass"]]
            cells.append(f"{mark} {_f(t['value'], 2 if isinstance(t['value'], float) else 1)}")
        lines.append(f"| {r['scene']} | {r['rate']:g}x | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def means_table(runs: list[dict[str, Any]], offline: dict[str, dict]) -> str:
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in runs:
        level = r["scene"].split("_")[1]
        groups.setdefault((level, r["rate"]), []).append(r)
    lines = ["| level | rate | scenes | served integrated % | served end PQ | served refined PQ "
             "| instant node PQ | offline instant PQ | ceiling PQ | gap instant / refined |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    for (level, rate), members in groups.items():
        lines.append(
            f"| {level} | {rate:g}x | {len(members)} | "
            f"{_f(mean(m['targets']['integrated_pct']['value'] for m in members))} | "
            f"{_f(mean(_pq(m, 'served_end') for m in members))} | "
            f"{_f(mean(_pq(m, 'served_refined') for m in members))} | "
            f"{_f(mean(_pq(m, 'instant_semantics_node') for m in members))} | "
            f"{_f(mean(offline.get(m['scene'], {}).get('pq') for m in members))} | "
            f"{_f(mean(_pq(m, CEILING) for m in members))} | "
            f"{_f(mean(gap_closed(m)['instant_gap'] for m in members))} / "
            f"{_f(mean(gap_closed(m)['refined_gap'] for m in members))} |")
    return "\n".join(lines)


def restart_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scene | rate | loaded via | frames before / after restart | loaded map lists "
             "the saved ids | things kept | stuff kept | lost |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['scene']} | {r['rate']:g}x | skipped: {r['skipped']} "
                         "| | | | | |")
            continue
        if "error" in r:
            lines.append(f"| {r['scene']} | {r['rate']:g}x | error: {r['error']} | | | | | |")
            continue
        ids = r["ids"]
        lost = "; ".join(f"#{x['id']} {x['label']}: {x['why']}" for x in ids["lost"][:8])
        lines.append(f"| {r['scene']} | {r['rate']:g}x | {r['load_via']} | "
                     f"{_cnt(r['part1_frames'])} / {_cnt(r['part2_frames'])} | "
                     f"{r['loaded_equals_saved']} | {ids['things_kept']}/{ids['things']} | "
                     f"{ids['stuff_kept']}/{ids['stuff']} | {lost or 'none'} |")
    return "\n".join(lines)


def report(runs, offline, restarts, checks, failures) -> str:
    parts = []
    if runs:
        parts += ["Frames per node:", "", delivery_table(runs), "",
                  "CPU per process (% of one core; player and probe: this benchmark's own):",
                  "", cpu_table(runs), "", "Served map quality (scene-level PQ, percent):", "",
                  quality_table(runs, offline), "", "Means:", "", means_table(runs, offline), "",
                  "Targets (issue 12):", "", targets_table(runs)]
    if restarts:
        parts += ["", "Restart and resume:", "", restart_table(restarts)]
    for check in checks:
        parts += ["", f"Scoring check on {check['scene']} (PQ / PQ_th / PQ_st / mIoU 3D):"]
        for key in ("eval_cli", "evaluate_in_process", "score_meshes_of_its_ply"):
            v = check[key]
            parts.append(f"- {key}: {_f(v['pq'], 3)} / {_f(v['pq_th'], 3)} / "
                         f"{_f(v['pq_st'], 3)} / {_f(v['miou_3d'], 3)}")
    parts += [f"- FAILED: {f}" for f in failures]
    return "\n".join(parts) + "\n"


# ============================================================================================
# Main
# ============================================================================================
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", default=["clean", "medium", "hard"],
                        choices=("clean", "medium", "hard"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--pose-drift", choices=("none", "vio", "vo"), default="none",
                        help="scenes with a simulated SLAM estimate and loop corrections "
                             "(make-scene --pose-drift); the graph applies the corrections")
    parser.add_argument("--rates", nargs="+", type=float, default=[1.0, 2.0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/graph_quality"),
                        help="scenes, offline evals and run outputs (reused across runs)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for graph_quality.md and graph_quality.json")
    parser.add_argument("--timeout-s", type=float, default=1200.0,
                        help="per graph run, from the player's start: playing, serving every "
                             "frame and the refined field's training (default %(default)s)")
    parser.add_argument("--no-refined", action="store_true",
                        help="instant graph only (with_mapper:=false)")
    parser.add_argument("--restart", action="store_true",
                        help="add the restart-and-resume row per scene (first rate)")
    parser.add_argument("--restart-load", choices=("param", "service"), default="param",
                        help="how the relaunched node loads the saved map: the node parameter "
                             f"{LOAD_PARAMETER} (default) or the load_map service")
    parser.add_argument("--restart-split", type=float, default=0.5,
                        help="fraction of the bag played before the restart")
    parser.add_argument("--restart-tolerance-m", type=float, default=0.3,
                        help="a thing's centroid may move this much across the restart")
    parser.add_argument("--rescore", type=Path, default=None, metavar="RESULTS_JSON",
                        help="no graph runs: score the meshes an earlier run fetched (its "
                             "graph_quality.json; the PLYs must still be in its --work) again, "
                             "with the ceiling, and write the tables to --out")
    parser.add_argument("--no-offline", action="store_true",
                        help="skip the offline all-frames instant eval of each scene (the "
                             "served-minus-offline target is then not checked)")
    parser.add_argument("--check-scoring", action="store_true",
                        help="score the offline instant map's own mesh with score_meshes too")
    args = parser.parse_args()
    if not 0.0 < args.restart_split < 1.0:
        parser.error("--restart-split must be in (0, 1)")
    args.work = args.work.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    restarts: list[dict[str, Any]] = []
    offline: dict[str, dict[str, Any]] = {}
    checks: list[dict[str, Any]] = []
    failures: list[str] = []
    started = time.monotonic()

    def write() -> str:
        text = report(runs, offline, restarts, checks, failures)
        (args.out / "graph_quality.md").write_text(text)
        (args.out / "graph_quality.json").write_text(json.dumps({
            "command": sys.argv, "args": {k: str(v) for k, v in vars(args).items()},
            "targets": {"integrated_pct": TARGET_INTEGRATED_PCT, "pq_gap": TARGET_PQ_GAP,
                        "field_s": TARGET_FIELD_S}, "offline_instant": offline,
            "runs": runs, "restart": restarts, "scoring_checks": checks,
            "failures": failures, "wall_s": round(time.monotonic() - started, 1)},
            indent=1, default=str))
        return text

    if args.rescore is not None:
        earlier = json.loads(args.rescore.read_text())
        offline.update(earlier.get("offline_instant", {}))
        failures += earlier.get("failures", [])
        by_scene: dict[str, list[dict[str, Any]]] = {}
        for run in earlier["runs"]:
            run.pop("scores", None)
            by_scene.setdefault(run["scene"], []).append(run)
        for name, scene_runs in by_scene.items():
            score_scene(args.work / "scenes" / name, scene_runs)
            for run in scene_runs:
                run["targets"] = targets(run, offline.get(name, {}))
            runs += scene_runs
            write()
        print(write())
        return 0
    for level in args.levels:
        for seed in args.seeds:
            scene = ensure_scene(args.work, seed, level, args.frames, args.pose_drift)
            offline[scene.name] = {} if args.no_offline else offline_eval(args.work, scene)
            if args.check_scoring:
                checks.append(check_scoring(args.work, scene, offline[scene.name]))
            scene_runs = []
            for rate in args.rates:
                name = f"{scene.name}_r{rate:g}{'_instant' if args.no_refined else ''}"
                print(f"graph run {name} (load average {os.getloadavg()[0]:.1f}) ...",
                      flush=True)
                try:
                    scene_runs.append(run_graph(GraphRun(
                        scene, rate, args.work / "runs" / name, not args.no_refined,
                        timeout_s=args.timeout_s)))
                except Exception as exc:  # noqa: BLE001 - record it, go on with the others
                    failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    print(f"graph run {name} failed: {exc}", flush=True)
            if args.restart:
                try:
                    restarts.append(restart_row(scene, args.rates[0], args.work, args))
                except Exception as exc:  # noqa: BLE001
                    restarts.append({"scene": scene.name, "rate": args.rates[0],
                                     "error": f"{type(exc).__name__}: {exc}"})
            score_scene(scene, scene_runs)
            for run in scene_runs:
                run["targets"] = targets(run, offline[scene.name])
            runs += scene_runs
            write()
    print(write())
    print(f"wrote {args.out / 'graph_quality.md'} and {args.out / 'graph_quality.json'} "
          f"({time.monotonic() - started:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
