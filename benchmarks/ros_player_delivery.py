"""How late does each topic of a played bag reach a subscriber, per Fast DDS profile of the player?

Plays the 7-Scenes bag of ``ros_graph_rate.py`` (250 frames of RGB 0.9 MB + depth 0.6 MB +
segmentation 0.6 MB + camera info + a 76-byte pose, 7.5 Hz) with ``panoptic-mapper play`` into
one subscriber node in this process whose callbacks only record the arrival time (reliable
QoS, depth 30, one callback group per topic, as in the mapping nodes), so what it measures is
DDS delivery, not any node's executor. Variants, one playback each, in turn:

* ``fastdds_default``: the player with Fast DDS's defaults (a profile file that sets nothing);
* ``player_profile``: the player with the profile it applies by itself
  (``config/fastdds_player.xml``, 16 MiB shared-memory segment).

The subscriber keeps Fast DDS's defaults in both. Delay = arrival - due time, where the due time
is ``stamp / rate`` plus a constant set per run so that the fastest message of that run has
delay 0. "Pose after RGB" is the arrival of a frame's pose minus that of its RGB image (the
synchroniser waits ``sync.max_wait_s`` = 2 s for it).

Run (from the repository root; the bag is cached in --work, shared with ros_graph_rate.py):
    PYTHONPATH=. .venv/bin/python benchmarks/ros_player_delivery.py [--rate 1] [--rounds 1]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_graph_rate import DEFAULT_DATA, build_bag  # noqa: E402

TOPICS = {"rgb": "/camera/color/image_raw", "depth": "/camera/depth/image_raw",
          "camera_info": "/camera/color/camera_info", "pose": "/camera/pose",
          "segmentation": "/panoptic/segmentation"}
DEFAULTS_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <participant profile_name="fastdds_defaults" is_default_profile="true"><rtps/></participant>
</profiles></dds>
"""
"""A profile file that changes nothing: the player then keeps Fast DDS's defaults."""


class Recorder:
    """A subscriber per topic recording (arrival monotonic s, header stamp ns)."""

    def __init__(self):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from panoptic_mapper.msg import PanopticSegmentation

        types = {"rgb": Image, "depth": Image, "camera_info": CameraInfo, "pose": PoseStamped,
                 "segmentation": PanopticSegmentation}
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("delivery_probe", context=self.context)
        self.arrivals: dict[str, list[tuple[float, int]]] = {name: [] for name in TOPICS}
        qos = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE)
        for name, topic in TOPICS.items():
            self.node.create_subscription(
                types[name], topic, lambda msg, n=name: self._record(n, msg), qos,
                callback_group=MutuallyExclusiveCallbackGroup())
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _record(self, name: str, msg) -> None:
        arrival = time.monotonic()
        stamp = msg.header.stamp
        self.arrivals[name].append((arrival, stamp.sec * 10**9 + stamp.nanosec))

    def clear(self) -> None:
        for values in self.arrivals.values():
            values.clear()

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=2)
        self._spinner.join(timeout=10)
        self.node.destroy_node()
        self.context.try_shutdown()


def summarize(arrivals: dict[str, list[tuple[float, int]]], rate: float) -> dict[str, str]:
    """Per-topic delay statistics and the pose-after-RGB gap (see the module docstring)."""
    offset = min(a - s / 1e9 / rate for values in arrivals.values() for a, s in values)
    out = {}
    for name, values in arrivals.items():
        delays = sorted((a - s / 1e9 / rate - offset) * 1e3 for a, s in values)
        n = len(delays)
        out[name] = (f"n={n} median={delays[n // 2]:.0f} p95={delays[int(0.95 * n)]:.0f} "
                     f"max={delays[-1]:.0f} ms, >1 s: {sum(d > 1000 for d in delays)}")
    rgb = {s: a for a, s in arrivals["rgb"]}
    gaps = sorted((a - rgb[s]) * 1e3 for a, s in arrivals["pose"] if s in rgb)
    out["pose_after_rgb"] = (f"median={statistics.median(gaps):.0f} max={gaps[-1]:.0f} ms, "
                             f">0.5 s: {sum(g > 500 for g in gaps)}, "
                             f">2 s: {sum(g > 2000 for g in gaps)} of {len(gaps)}")
    return out


def play(bag: Path, rate: float, profile_env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "panoptic_mapper.tools.cli", "play", str(bag),
               "--rate", str(rate), "--wait-timeout", "60", "--quiet"]
    for topic in TOPICS.values():
        command += ["--wait-for", topic]
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    subprocess.run(command, check=True, env=env | profile_env, timeout=1200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="playbacks per variant, the variants taking turns")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "panoptic_mapper_ros_bench")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)  # the subscriber: Fast DDS defaults
    args.work.mkdir(parents=True, exist_ok=True)
    bag = args.work / f"redkitchen_{args.frames}"
    if not bag.exists():
        build_bag(args.data, bag, args.frames)
    defaults = args.work / "fastdds_defaults_profile.xml"
    defaults.write_text(DEFAULTS_PROFILE)
    variants = {"fastdds_default": {"FASTDDS_DEFAULT_PROFILES_FILE": str(defaults)},
                "player_profile": {}}
    recorder = Recorder()
    try:
        for round_index in range(args.rounds):
            for variant, profile_env in variants.items():
                print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
                recorder.clear()
                play(bag, args.rate, profile_env)
                time.sleep(5.0)  # late (resent) samples still arrive
                print(f"round {round_index + 1}, {variant}, {args.rate:g}x:", flush=True)
                for name, text in summarize(recorder.arrivals, args.rate).items():
                    print(f"  {name:14s} {text}", flush=True)
    finally:
        recorder.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
