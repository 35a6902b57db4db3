"""Does the ROS graph keep up with a real sensor stream, and do queries stay fast meanwhile?

Plays the 7-Scenes ``redkitchen`` frames (``shared/data/7scenes_redkitchen_stride4``: 250 real
Kinect frames, 640x480, every 4th frame of 30 Hz = 7.5 Hz) as a bag through the graph
``panoptic-mapper play -> segmenter_node (replay) -> instant_semantics_node`` (separate
processes over DDS, started from the launch plan as ``panoptic-mapper launch`` does), once at
the real rate and once at 4x, and measures in a probe node:

* lag: bag time (the player's ``/clock``) minus the stamp of the last integrated frame, divided
  by the playback rate (so: wall seconds), sampled with every diagnostics message of the
  instant node; "keeps up" = the lag of the second half of the run is not larger than that of
  the first half (the keep-latest queue bounds it; the frames it skips are counted);
* ``query_objects`` round-trip latency, called every 0.25 s while the node integrates;
* the synchroniser's drops at the end (``sync_problems``: ``missing_<stream>``,
  ``late_<stream>`` and the expected ``sync_missing_segmentation``).

7-Scenes has no labels, so the bag carries a synthetic but world-consistent 2D segmentation:
a pixel's class comes from the 1 m cell its 3D point falls in and its instance from the 0.6 m
cell (about 20-40 segments per frame, per-frame ids shuffled); it is built when the bag is
written, so the segmenter's cost in this run is replay only.

With ``--with-mapper`` the mapper_node (refined map) runs beside the instant node, trains its
field meanwhile and serves ``query_objects``; the lag is still the instant node's.

Run (from the repository root; the bag is cached in --work):
    PYTHONPATH=. .venv/bin/python benchmarks/ros_graph_rate.py [--rates 1 4] [--frames 250] \
        [--with-mapper]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "7scenes_redkitchen_stride4"
QUERY = "chair"


def synthetic_segmentation(frame, registry, rng):
    """World-consistent 2D panoptic input for one frame (see the module docstring)."""
    from panoptic_mapper.core.geometry.camera import back_project_to_world
    from panoptic_mapper.core.types import PanopticSegmentation2D, Segment

    intr, depth = frame.intrinsics, frame.depth_m
    v, u = np.mgrid[0:intr.height, 0:intr.width]
    world = back_project_to_world(frame.T_world_cam, intr, u, v, depth)
    primes = np.array([73856093, 19349663, 83492791])
    labels = registry.labels
    cls = (np.floor(world / 1.0).astype(np.int64) * primes).sum(-1) % len(labels)
    inst = (np.floor(world / 0.6).astype(np.int64) * primes).sum(-1) % 8
    key = np.where(depth > 0, cls * 8 + inst + 1, 0)
    uniq, inverse = np.unique(key, return_inverse=True)
    new_ids = rng.permutation(uniq.size) + 1
    ids = np.where(key > 0, new_ids[inverse.reshape(key.shape)], 0).astype(np.int32)
    segments = [Segment(int(new_ids[k]), labels[int((value - 1) // 8)].name,
                        labels[int((value - 1) // 8)].id, labels[int((value - 1) // 8)].is_thing,
                        0.9) for k, value in enumerate(uniq) if value]
    return PanopticSegmentation2D(ids, tuple(segments), frame.stamp_ns)


def build_bag(data: Path, bag: Path, frames: int) -> None:
    from panoptic_mapper.core.io.bag import write_bag
    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.labels import LabelRegistry
    from panoptic_mapper.core.types import DatasetSample

    dataset = open_dataset(data, max_frames=frames)
    registry = LabelRegistry.default()
    rng = np.random.default_rng(0)
    samples = (DatasetSample(s.frame, synthetic_segmentation(s.frame, registry, rng))
               for s in dataset)
    write_bag(bag, samples, dataset.intrinsics, progress=True)


class Probe:
    """Collects /clock and diagnostics, calls query_objects on a timer of its own."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import MultiThreadedExecutor
        from rosgraph_msgs.msg import Clock

        from panoptic_mapper.srv import QueryObjects

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("rate_probe", context=self.context)
        self.clock_ns = 0
        self.samples: list[dict] = []
        self.mapper_last: dict = {}
        self.query_ms: list[float] = []
        self.query_failures = 0
        self.querying = False
        self._stopped = threading.Event()
        self.node.create_subscription(Clock, "/clock", self._on_clock, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.client = self.node.create_client(QueryObjects, "/panoptic_mapper/query_objects")
        self.request = QueryObjects.Request(query=QUERY)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()
        self._querier = threading.Thread(target=self._query_loop, daemon=True)
        self._querier.start()

    def _on_clock(self, msg) -> None:
        self.clock_ns = msg.clock.sec * 10**9 + msg.clock.nanosec

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name == "mapper_node":
                self.mapper_last = {kv.key: kv.value for kv in status.values}
            if status.name == "instant_semantics_node" and self.clock_ns:
                values = {kv.key: kv.value for kv in status.values}
                values["clock_ns"] = self.clock_ns
                values["wall_s"] = time.monotonic()
                self.samples.append(values)

    def _query_loop(self) -> None:
        while not self._stopped.wait(0.25):
            if not self.querying or not self.client.service_is_ready():
                continue
            start = time.perf_counter()
            future = self.client.call_async(self.request)
            while not future.done() and time.perf_counter() - start < 5.0:
                time.sleep(0.001)
            if future.done() and future.result().success:
                self.query_ms.append((time.perf_counter() - start) * 1e3)
            else:
                self.query_failures += 1

    def shutdown(self) -> None:
        self._stopped.set()
        self._querier.join(timeout=10)
        self.executor.shutdown(timeout_sec=2)
        self._spinner.join(timeout=10)
        self.node.destroy_node()
        self.context.try_shutdown()


def summarize(samples: list[dict], rate: float) -> dict:
    """Lag in wall seconds (bag-time lag / rate) over the run, halves compared."""
    lags = [(s["clock_ns"] - float(s["last_frame_stamp_s"]) * 1e9) / 1e9 / rate
            for s in samples if float(s.get("last_frame_stamp_s", 0)) > 0]
    half = len(lags) // 2
    last = samples[-1] if samples else {}
    busy = [float(s["worker_busy_pct"]) for s in samples if "worker_busy_pct" in s]
    return {"worker_busy_median_pct": statistics.median(busy) if busy else float("nan"),
            "lag_first_half_median_s": statistics.median(lags[:half]) if half else float("nan"),
            "lag_second_half_median_s": statistics.median(lags[half:]) if half else float("nan"),
            "lag_max_s": max(lags) if lags else float("nan"),
            "matched": int(last.get("frames_matched", 0)),
            "integrated": int(last.get("frames_integrated", 0)),
            "skipped_busy": int(last.get("frames_skipped_busy", 0)),
            "decode_median_ms": float(last.get("decode_median_ms", "nan")),
            "integrate_median_ms": float(last.get("integrate_median_ms", "nan")),
            "frame_latency_median_ms": float(last.get("frame_latency_median_ms", "nan")),
            "refresh_median_ms": float(last.get("refresh_median_ms", "nan")),
            "sync_problems": " ".join(
                f"{key.removeprefix('problem.')}={value}" for key, value in sorted(last.items())
                if key.startswith(("problem.missing_", "problem.late_", "sync_"))) or "none"}


def run_rate(bag: Path, rate: float, work: Path, probe: Probe, with_mapper: bool,
             mapper_overrides: dict | None = None) -> dict:
    from panoptic_mapper.core.io.resources import config_path
    from panoptic_mapper.runtime.launch_plan import plan
    from panoptic_mapper.tools.launch import GraphProcesses, node_commands, player_command

    planned = plan({"with_mapper": str(with_mapper).lower()}, str(config_path("mapper.yaml")))
    for node in planned:
        if node.spec.key == "instant":
            node.overrides["diagnostics_period_s"] = 0.5
        if node.spec.key == "mapper":
            node.overrides.update(mapper_overrides or {})
    processes = GraphProcesses(node_commands(planned, work), log=None)
    try:
        for node in planned:
            if not processes.wait_for_line(node.spec.name, "active: listening", 300):
                raise RuntimeError("".join(processes.output[node.spec.name]))
        probe.samples.clear()
        probe.clock_ns = 0  # the previous rate's last /clock would count as this run's lag
        probe.mapper_last = {}
        probe.query_ms.clear()
        probe.querying = True
        player = processes.start("player", player_command(str(bag), rate, planned)
                                 + ["--clock", "50"])
        player.wait(timeout=1200)
        time.sleep(3.0)  # let the last queued frames through
        probe.querying = False
        return summarize(probe.samples, rate) | {
            "query_median_ms": statistics.median(probe.query_ms) if probe.query_ms else None,
            "query_p95_ms": float(np.percentile(probe.query_ms, 95)) if probe.query_ms else None,
            "queries": len(probe.query_ms), "query_failures": probe.query_failures} | {
            f"mapper_{key}": probe.mapper_last.get(key) for key in (
                "frames_integrated", "frames_skipped_busy", "integrate_median_ms",
                "training_step", "training_steps_per_s", "answers_from") if with_mapper}
    finally:
        processes.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--with-mapper", action="store_true",
                        help="run mapper_node (refined map) beside the instant node")
    parser.add_argument("--mapper-param", action="append", default=[], metavar="NAME=YAML",
                        help="a mapper_node parameter override, e.g. training.max_share=0.3")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "panoptic_mapper_ros_bench")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    args.work.mkdir(parents=True, exist_ok=True)
    bag = args.work / f"redkitchen_{args.frames}"
    if not bag.exists():
        build_bag(args.data, bag, args.frames)
    probe = Probe()
    try:
        for rate in args.rates:
            print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
            result = run_rate(bag, rate, args.work, probe, args.with_mapper, {
                name: yaml.safe_load(value) for name, value in
                (entry.split("=", 1) for entry in args.mapper_param)})
            print(f"rate {rate:g}x ({7.5 * rate:g} Hz): " + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in result.items()), flush=True)
    finally:
        probe.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
