"""Play a ROS 2 bag into the ROS graph with its original timing (``ros2 bag play`` for pip).

Publishes every message of the bag (or of ``--topics``) as recorded CDR bytes through rclpy,
without decoding it, so any bag works whose message types are importable here (the standard
messages and panoptic_mapper's own); topics of other types are skipped with a message naming
the type. Messages keep the bag's relative timing, scaled by ``--rate``.

Examples::

    panoptic-mapper play scene/bag --rate 2
    panoptic-mapper play scene/bag --clock --wait-for /camera/color/image_raw \\
        --remap /panoptic/segmentation:=/panoptic/recorded_segmentation

The player's DDS participant gets ``config/fastdds_player.xml`` (a 16 MiB shared-memory
segment) unless ``FASTDDS_DEFAULT_PROFILES_FILE`` is set: with Fast DDS's default 512 KiB
segment, small messages sent among a frame's image bursts (pose, camera info) were lost and resent
only at the next heartbeat, seconds later (see that file).

Owns: the pacing and publishing of raw messages, the player's DDS transport profile. Does not
own: reading bags (``core/io/bag.py``) or message types.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_QOS_DEPTH = 30
FASTDDS_PROFILES_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PLAYER_DDS_PROFILE = "fastdds_player.xml"
"""Shipped Fast DDS profile of the player's participant (``config/``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag folder (metadata.yaml + .mcap/.db3) or storage file")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor: 2 = twice as fast (default: %(default)s)")
    parser.add_argument("--loop", action="store_true",
                        help="start again at the end, until interrupted (stamps repeat: the "
                             "nodes reset their synchronisers on the jump back)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="play only these topics (default: all)")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                        help="skip the first S seconds of the bag (default: %(default)s)")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="publish topic FROM under the name TO (repeatable)")
    parser.add_argument("--clock", nargs="?", type=float, const=100.0, default=0.0,
                        metavar="HZ", help="publish the bag time on /clock at HZ (default 100 "
                        "when given) for nodes with use_sim_time")
    parser.add_argument("--wait-for", action="append", default=[], metavar="TOPIC",
                        help="before playing, wait until the publisher of TOPIC (a played name, "
                             "after remapping) is matched by a subscriber (repeatable; a topic "
                             "given k times waits for k subscribers)")
    parser.add_argument("--wait-timeout", type=float, default=30.0, metavar="S",
                        help="give up waiting for --wait-for subscribers after S seconds "
                             "(default: %(default)s)")
    parser.add_argument("--qos-depth", type=int, default=DEFAULT_QOS_DEPTH,
                        help="history depth of the reliable publishers (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


@dataclass
class PlaybackClock:
    """Maps bag timestamps to wall-clock targets: ``start + (t - first) / rate``."""

    rate: float
    first_ns: int
    start_wall_s: float

    def target_s(self, timestamp_ns: int) -> float:
        """Monotonic wall time at which the message stamped ``timestamp_ns`` is due."""
        return self.start_wall_s + (timestamp_ns - self.first_ns) / 1e9 / self.rate

    def bag_time_ns(self, wall_s: float) -> int:
        """Bag time corresponding to monotonic ``wall_s`` (for /clock)."""
        return self.first_ns + int(round((wall_s - self.start_wall_s) * self.rate * 1e9))


@dataclass
class PlayStats:
    """What a playback pass published."""

    published: dict[str, int] = field(default_factory=dict)
    skipped_types: dict[str, str] = field(default_factory=dict)
    """topic -> message type that could not be imported."""
    max_behind_s: float = 0.0
    """Largest delay of a publish behind its due time (the player could not keep up)."""


def parse_remaps(remaps: list[str]) -> dict[str, str]:
    """``["/a:=/b"]`` -> ``{"/a": "/b"}``; raises ValueError naming a malformed entry."""
    out = {}
    for entry in remaps:
        source, sep, target = entry.partition(":=")
        if not sep or not source.startswith("/") or not target.startswith("/"):
            raise ValueError(f"--remap {entry!r}: expected /from:=/to")
        out[source] = target
    return out


def import_message_type(msgtype: str) -> Any:
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class; raises ImportError naming it."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ImportError(f"malformed message type name {msgtype!r}")
    package, kind, name = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"message type {msgtype} is not importable in this environment "
                          f"({exc}); install its interface package to play this topic"
                          ) from exc


def dds_profile_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Environment entries that give the player's participant :data:`PLAYER_DDS_PROFILE`.

    Empty when ``environ`` already names a Fast DDS profile file (the user's choice wins) or
    selects an RMW other than Fast DDS; raises DataFormatError when the file is not installed.
    """
    from panoptic_mapper.core.io.resources import config_path

    if FASTDDS_PROFILES_ENV in environ:
        return {}
    if not environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        return {}
    return {FASTDDS_PROFILES_ENV: str(config_path(PLAYER_DDS_PROFILE))}


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import DataFormatError
    from panoptic_mapper.core.io.bag import bag_info

    try:
        remaps = parse_remaps(args.remap)
        if args.rate <= 0:
            raise ValueError(f"--rate {args.rate}: must be > 0")
        if args.start_offset < 0:
            raise ValueError(f"--start-offset {args.start_offset}: must be >= 0")
        info = bag_info(args.bag)
    except (ValueError, DataFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    topics = {t: i.msgtype for t, i in info.topics.items()
              if args.topics is None or t in args.topics}
    unknown = sorted(set(args.topics or ()) - set(info.topics))
    if unknown:
        print(f"error: topics {unknown} are not in the bag; it has {sorted(info.topics)}",
              file=sys.stderr)
        return 2
    return _play(args, info, topics, remaps)


FLUSH_TIMEOUT_S = 5.0
"""At the end of playback, how long to wait for subscribers to acknowledge the last messages."""


def _play(args: argparse.Namespace, info, topics: dict[str, str],
          remaps: dict[str, str]) -> int:
    import rclpy
    from rclpy.duration import Duration
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from panoptic_mapper.core.errors import DataFormatError
    from panoptic_mapper.core.io.bag import iter_raw_messages

    try:
        # Fast DDS reads the variable when it creates the player's participant, below.
        profile = dds_profile_environment(os.environ)
    except DataFormatError as exc:
        profile = {}
        print(f"warning: Fast DDS defaults for the player (small messages may arrive seconds "
              f"late among large ones): {exc}", file=sys.stderr)
    os.environ.update(profile)
    rclpy.init(args=[])  # our argv is not ROS arguments (--remap means ours)
    node = rclpy.create_node("bag_player")
    stats = PlayStats()
    try:
        publishers = {}
        for topic, msgtype in topics.items():
            try:
                msg_class = import_message_type(msgtype)
            except ImportError as exc:
                stats.skipped_types[topic] = msgtype
                print(f"warning: skipping {topic}: {exc}", file=sys.stderr)
                continue
            # /tf_static is latched by convention; everything else reliable + volatile.
            durability = (DurabilityPolicy.TRANSIENT_LOCAL if topic == "/tf_static"
                          else DurabilityPolicy.VOLATILE)
            qos = QoSProfile(depth=args.qos_depth, reliability=ReliabilityPolicy.RELIABLE,
                             durability=durability)
            publishers[topic] = node.create_publisher(msg_class, remaps.get(topic, topic), qos)
        if not publishers:
            print("error: no topic of the bag can be played here", file=sys.stderr)
            return 1
        clock_pub = None
        if args.clock > 0:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, "/clock", 10)
        by_name = {remaps.get(t, t): publisher for t, publisher in publishers.items()}
        unknown = sorted(set(args.wait_for) - set(by_name))
        if unknown:
            print(f"error: --wait-for {unknown}: not a played topic; played: {sorted(by_name)}",
                  file=sys.stderr)
            return 2
        wanted = collections.Counter(args.wait_for)
        if not _wait_for_subscribers({t: (by_name[t], n) for t, n in wanted.items()},
                                     args.wait_timeout):
            return 1
        if not args.quiet:
            names = ", ".join(f"{t} -> {remaps[t]}" if t in remaps else t for t in publishers)
            dds = (f"; DDS profile {profile[FASTDDS_PROFILES_ENV]}" if profile else "")
            print(f"playing {args.bag} ({info.message_count} messages, "
                  f"{info.duration_ns / 1e9:.1f} s) at {args.rate:g}x: {names}{dds}", flush=True)
        while True:
            _play_once(args, info, publishers, clock_pub, stats, iter_raw_messages)
            if not args.loop:
                break
        # Reliable samples still queued when the node is destroyed are lost: wait until the
        # subscribers acknowledged the last messages.
        for publisher in publishers.values():
            publisher.wait_for_all_acked(Duration(seconds=FLUSH_TIMEOUT_S))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if not args.quiet:
        total = sum(stats.published.values())
        print(f"published {total} messages ({stats.published}); largest delay behind schedule "
              f"{stats.max_behind_s * 1e3:.0f} ms", flush=True)
    return 0


def _wait_for_subscribers(publishers: dict[str, tuple[Any, int]], timeout_s: float) -> bool:
    """Wait until each publisher is matched by its number of subscriptions at the DDS level (a
    subscriber merely known to the graph may not receive messages sent before the match
    completes)."""
    deadline = time.monotonic() + timeout_s
    pending = list(publishers)
    while pending:
        pending = [t for t in pending
                   if publishers[t][0].get_subscription_count() < publishers[t][1]]
        if not pending:
            break
        if time.monotonic() > deadline:
            print(f"error: too few subscribers on {pending} after {timeout_s:g} s",
                  file=sys.stderr)
            return False
        time.sleep(0.05)
    return True


def _play_once(args, info, publishers, clock_pub, stats: PlayStats, iter_raw_messages) -> None:
    first_ns = info.start_ns + int(round(args.start_offset * 1e9))
    clock = None
    clock_period_s = 1.0 / args.clock if clock_pub is not None else 0.0
    for message in iter_raw_messages(args.bag, list(publishers)):
        if message.timestamp_ns < first_ns:
            continue
        if clock is None:
            clock = PlaybackClock(args.rate, message.timestamp_ns, time.monotonic())
        target = clock.target_s(message.timestamp_ns)
        _sleep_until(target, clock, clock_pub, clock_period_s)
        stats.max_behind_s = max(stats.max_behind_s, time.monotonic() - target)
        if clock_pub is not None:
            _publish_clock(clock_pub, message.timestamp_ns)
        publishers[message.topic].publish(message.rawdata)
        stats.published[message.topic] = stats.published.get(message.topic, 0) + 1


def _sleep_until(target_s: float, clock: PlaybackClock, clock_pub, period_s: float) -> None:
    while True:
        remaining = target_s - time.monotonic()
        if remaining <= 0:
            return
        if clock_pub is None:
            time.sleep(remaining)
            return
        time.sleep(min(remaining, period_s))
        _publish_clock(clock_pub, clock.bag_time_ns(min(time.monotonic(), target_s)))


def _publish_clock(publisher, stamp_ns: int) -> None:
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    publisher.publish(Clock(clock=Time(sec=stamp_ns // 1_000_000_000,
                                       nanosec=stamp_ns % 1_000_000_000)))
