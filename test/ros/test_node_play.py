"""``panoptic-mapper play``: a bag's raw messages reach subscribers in order, with the bag's
timing scaled by --rate, after --start-offset, under --remap names; unimportable types are
skipped with a message naming them; the player's participant gets the shipped Fast DDS profile
(large shared-memory segment) unless the environment names one."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from std_msgs.msg import String

from panoptic_mapper.tools.play import (FASTDDS_PROFILES_ENV, PlaybackClock,
                                        dds_profile_environment, import_message_type,
                                        parse_remaps)

pytestmark = pytest.mark.ros

NS = 1_000_000_000
STEP_NS = NS // 5  # 0.2 s between messages


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """6 std_msgs/String on /chatter (0.0 .. 1.0 s) and one custom-typed message."""
    path = tmp_path_factory.mktemp("play") / "bag"
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 x", "foo_msgs/msg/Bar"))
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        custom = writer.add_connection("/custom", "foo_msgs/msg/Bar", typestore=store)
        for i in range(6):
            msg = store.types["std_msgs/msg/String"](data=f"m{i}")
            writer.write(chatter, 10 * NS + i * STEP_NS,
                         store.serialize_cdr(msg, "std_msgs/msg/String"))
        writer.write(custom, 10 * NS, store.serialize_cdr(store.types["foo_msgs/msg/Bar"](x=1),
                                                          "foo_msgs/msg/Bar"))
    return path


def play_and_listen(bag, topic: str, *args: str, expected: int = 6
                    ) -> tuple[list[tuple[float, str]], str]:
    """Run the player in a subprocess; returns ([(receive time, data)], player stderr)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("play_probe", context=context)
    received: list[tuple[float, str]] = []
    node.create_subscription(String, topic, lambda m: received.append((time.monotonic(),
                                                                       m.data)),
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "panoptic_mapper.tools.cli", "play", str(bag),
             "--wait-for", topic, "--wait-timeout", "20", *args],
            capture_output=True, text=True, timeout=60, env=dict(os.environ))
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(received) < expected:
            time.sleep(0.05)
        return received, result.stderr + result.stdout
    finally:
        executor.shutdown(timeout_sec=2)
        context.try_shutdown()
        spinner.join(timeout=5)


def test_plays_in_order_with_scaled_timing_and_skips_unknown_types(bag):
    received, output = play_and_listen(bag, "/chatter", "--rate", "2")
    assert [data for _, data in received] == [f"m{i}" for i in range(6)]
    gaps = [b - a for (a, _), (b, _) in zip(received, received[1:])]
    # 0.2 s of bag time at 2x = 0.1 s apart (loose bounds: shared, noisy machine)
    assert 0.05 < sum(gaps) / len(gaps) < 0.2, gaps
    assert "foo_msgs/msg/Bar" in output and "skipping /custom" in output
    if FASTDDS_PROFILES_ENV not in os.environ:
        assert "DDS profile" in output and "fastdds_player.xml" in output


def test_start_offset_and_remap(bag):
    received, _ = play_and_listen(bag, "/talk", "--rate", "5", "--start-offset", "0.5",
                                  "--remap", "/chatter:=/talk", "--topics", "/chatter",
                                  expected=3)
    assert [data for _, data in received] == ["m3", "m4", "m5"]


def test_bad_arguments_fail_with_a_message(bag):
    result = subprocess.run([sys.executable, "-m", "panoptic_mapper.tools.cli", "play",
                             str(bag), "--topics", "/nope"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "/nope" in result.stderr
    with pytest.raises(ValueError, match="chatter"):
        parse_remaps(["/chatter=/x"])


def test_playback_clock_and_type_import():
    clock = PlaybackClock(rate=2.0, first_ns=10 * NS, start_wall_s=100.0)
    assert clock.target_s(11 * NS) == pytest.approx(100.5)
    assert clock.bag_time_ns(101.0) == 12 * NS
    assert import_message_type("std_msgs/msg/String") is String
    with pytest.raises(ImportError, match="foo_msgs/msg/Bar"):
        import_message_type("foo_msgs/msg/Bar")


def test_dds_profile_only_when_the_environment_names_none():
    profile = dds_profile_environment({})
    assert list(profile) == [FASTDDS_PROFILES_ENV]
    assert Path(profile[FASTDDS_PROFILES_ENV]).name == "fastdds_player.xml"
    assert Path(profile[FASTDDS_PROFILES_ENV]).is_file()
    assert dds_profile_environment({"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}) == profile
    assert dds_profile_environment({FASTDDS_PROFILES_ENV: "/etc/mine.xml"}) == {}
    assert dds_profile_environment({FASTDDS_PROFILES_ENV: ""}) == {}
    assert dds_profile_environment({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}


def test_player_profile_holds_frame_bursts_and_keeps_remote_udp():
    namespace = {"dds": "http://www.eprosima.com"}
    root = ET.parse(dds_profile_environment({})[FASTDDS_PROFILES_ENV]).getroot()
    descriptors = {d.findtext("dds:transport_id", namespaces=namespace): d
                   for d in root.iterfind(".//dds:transport_descriptor", namespace)}
    kinds = {d.findtext("dds:type", namespaces=namespace): d for d in descriptors.values()}
    # One 640x480 frame burst: rgb8 921,672 B + 16UC1 depth 614,472 B + segmentation 616,437 B;
    # the default 512 KiB segment could not hold one.
    assert int(kinds["SHM"].findtext("dds:segment_size", namespaces=namespace)) >= 4 * 2_152_581
    assert kinds["UDPv4"].find("dds:interfaceWhiteList", namespace) is None  # remote peers too
    participant = root.find(".//dds:participant", namespace)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id",
                                                 namespace)]
    assert sorted(used) == sorted(descriptors)
    assert participant.findtext(".//dds:useBuiltinTransports", namespaces=namespace) == "false"
