"""``panoptic-mapper launch --bag``: the player follows the nodes' effective parameters (parameter
file and launch arguments), a bag the graph cannot use is refused up front with a clear message,
sim time gets /clock, and the stop timeout is an option. No node is started."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest
import yaml

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.io.resources import config_path
from panoptic_mapper.runtime.launch_plan import node_config, node_parameters, plan
from panoptic_mapper.runtime.launch_playback import SEGMENTATION_TYPE, plan_playback
from panoptic_mapper.tools import launch

MAPPER_YAML = str(config_path("mapper.yaml"))
IMAGE, INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
POSE = "geometry_msgs/msg/PoseStamped"
SENSORS = {"/camera/color/image_raw": IMAGE, "/camera/depth/image_raw": IMAGE,
           "/camera/color/camera_info": INFO, "/camera/pose": POSE}
"""A bag of bag-from-dataset from 7-Scenes or Replica: no segmentation."""
SCENE = {**SENSORS, "/panoptic/segmentation": SEGMENTATION_TYPE,
         "/ground_truth/labels": IMAGE, "/ground_truth/instances": IMAGE}
"""A bag of make-scene: recorded segmentation and ground truth."""
MAPPER_INPUTS = ["/camera/color/image_raw", "/camera/depth/image_raw",
                 "/camera/color/camera_info", "/camera/pose"]


def write_params(tmp_path, sections: dict) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({name: {"ros__parameters": params}
                                    for name, params in sections.items()}))
    return str(path)


def test_default_graph_on_a_scene_bag_replays_its_segmentation():
    playback = plan_playback(plan({}, MAPPER_YAML), SCENE)
    assert playback.remaps == {"/panoptic/segmentation": "/panoptic/recorded_segmentation"}
    # the instant node subscribes to the four sensor topics; the mapper in its process does not
    # (it is offered the frames the instant node integrates)
    assert playback.wait_for == MAPPER_INPUTS + ["/panoptic/recorded_segmentation"]
    separate = plan_playback(plan({"colocate_mapper": "false"}, MAPPER_YAML), SCENE)
    assert separate.wait_for == MAPPER_INPUTS * 2 + ["/panoptic/recorded_segmentation"]
    assert playback.topics is None and playback.clock is False and playback.warnings == []


def test_replay_segmenter_on_a_bag_without_segmentation_is_refused_with_the_ways_out():
    with pytest.raises(ConfigError) as error:
        plan_playback(plan({}, MAPPER_YAML), SENSORS, "/data/kitchen_bag")
    message = str(error.value)
    assert message.startswith("bag='/data/kitchen_bag': no recorded segmentation for "
                              "/panoptic/recorded_segmentation")
    for text in ("replay backend", "--arg segmenter_backend:=grounded_sam", "--nodes instant",
                 "input.use_segmentation: false"):
        assert text in message, text


def test_geometry_only_instant_node_plays_a_bag_without_segmentation(tmp_path):
    params = write_params(tmp_path, {"instant_semantics_node": {
        "input": {"use_segmentation": False}}})
    planned = plan({"params_file": params, "with_segmenter": "false", "with_mapper": "false"},
                   MAPPER_YAML)
    playback = plan_playback(planned, SENSORS)
    assert playback.wait_for == MAPPER_INPUTS and playback.warnings == []
    # with segmentation still on, the graph would integrate nothing: said, not refused
    planned = plan({"with_segmenter": "false", "with_mapper": "false"}, MAPPER_YAML)
    playback = plan_playback(planned, SENSORS, "kitchen")
    assert len(playback.warnings) == 1
    assert "kitchen has no /panoptic/segmentation" in playback.warnings[0]
    assert "input.use_segmentation: false" in playback.warnings[0]


def test_topics_and_backend_renamed_in_the_parameter_file_are_followed(tmp_path):
    params = write_params(tmp_path, {
        "segmenter_node": {"backend": "emulator", "topics": {"rgb": "/cam/rgb"}},
        "/**/instant_semantics_node": {"input": {"topics": {"rgb": "/cam/rgb",
                                                            "pose": "/cam/odom"},
                                                 "pose_source": "odometry"}}})
    planned = plan({"params_file": params, "with_mapper": "false"}, MAPPER_YAML)
    bag = {"/cam/rgb": IMAGE, "/camera/depth/image_raw": IMAGE,
           "/camera/color/camera_info": INFO, "/cam/odom": "nav_msgs/msg/Odometry",
           "/ground_truth/labels": IMAGE, "/ground_truth/instances": IMAGE,
           "/panoptic/segmentation": SEGMENTATION_TYPE}
    playback = plan_playback(planned, bag)
    assert playback.wait_for == [
        "/cam/rgb", "/camera/depth/image_raw", "/ground_truth/labels",
        "/ground_truth/instances",  # the emulator's inputs, then the instant node's
        "/cam/rgb", "/camera/depth/image_raw", "/camera/color/camera_info", "/cam/odom"]
    assert playback.remaps == {}
    # the emulator publishes /panoptic/segmentation: the recorded one must not be played too
    assert playback.topics == sorted(set(bag) - {"/panoptic/segmentation"})
    command = launch.player_command("/b", 1.0, planned, playback)
    assert command[command.index("--topics") + 1:command.index("--wait-for")] == \
        playback.topics


def test_renamed_recorded_segmentation_topic_gets_the_remap(tmp_path):
    params = write_params(tmp_path, {"segmenter_node": {
        "topics": {"recorded_segmentation": "/rec/seg"}}})
    planned = plan({"params_file": params}, MAPPER_YAML)
    playback = plan_playback(planned, SCENE)
    assert playback.remaps == {"/panoptic/segmentation": "/rec/seg"}
    assert playback.wait_for[-1] == "/rec/seg"
    # a bag that already carries it under that name is played as it is
    playback = plan_playback(planned, {**SENSORS, "/rec/seg": SEGMENTATION_TYPE})
    assert playback.remaps == {} and playback.wait_for[-1] == "/rec/seg"


def test_a_bag_missing_a_sensor_topic_names_it_and_the_parameter():
    bag = {t: m for t, m in SCENE.items() if t != "/camera/pose"}
    with pytest.raises(ConfigError, match=r"/camera/pose \(instant_semantics_node "
                                          r"input.topics.pose\)"):
        plan_playback(plan({"with_mapper": "false"}, MAPPER_YAML), bag)
    with pytest.raises(ConfigError, match="ground truth"):
        plan_playback(plan({"segmenter_backend": "emulator"}, MAPPER_YAML), SENSORS)


def test_sim_time_makes_the_player_publish_clock():
    planned = plan({"use_sim_time": "true", "with_mapper": "false"}, MAPPER_YAML)
    playback = launch.playback_plan("/scene/bag", planned, bag_topics=SCENE)
    assert playback.clock
    command = launch.player_command("/scene/bag", 2.0, planned, playback)
    assert command[3:7] == ["play", "/scene/bag", "--rate", "2.0"]
    assert "--clock" in command
    assert command[command.index("--remap") + 1] == \
        "/panoptic/segmentation:=/panoptic/recorded_segmentation"
    planned = plan({"with_mapper": "false"}, MAPPER_YAML)
    assert "--clock" not in launch.player_command(
        "/scene/bag", 2.0, planned, launch.playback_plan("/scene/bag", planned, SCENE))


def test_effective_parameters_follow_rcl_precedence(tmp_path):
    params = write_params(tmp_path, {
        "/**": {"queue_size": 3, "map_frame": "world"},
        "instant_semantics_node": {"queue_size": 5},
        "mapper_node": {"queue_size": 7}})
    planned = {n.spec.key: n for n in plan(
        {"params_file": params, "map_frame": "odom"}, MAPPER_YAML)}
    instant = node_parameters(planned["instant"])
    assert instant["queue_size"] == 5          # the node's own section after /**
    assert instant["map_frame"] == "odom"      # launch arguments override the file
    assert instant["use_sim_time"] is False
    assert node_config(planned["segmenter"]).queue_size == 3
    assert node_config(planned["mapper"]).queue_size == 7
    bad = write_params(tmp_path, {"instant_semantics_node": {"queue_size": 0}})
    with pytest.raises(ConfigError, match="instant_semantics_node.queue_size"):
        node_config(plan({"params_file": bad}, MAPPER_YAML)[1])


def test_stop_timeout_option_and_kill_after_it():
    parser = argparse.ArgumentParser()
    launch.add_arguments(parser)
    assert parser.parse_args([]).stop_timeout == launch.STOP_TIMEOUT_S == 60.0
    assert "--stop-timeout" in parser.format_help()
    args = parser.parse_args(["--stop-timeout", "-1"])
    assert launch.run(args) == 2
    slow = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: (time.sleep(1.0), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    deaf = ("import signal, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    graph = launch.GraphProcesses([("slow", [sys.executable, "-c", slow]),
                                   ("deaf", [sys.executable, "-c", deaf])], log=None)
    try:
        assert graph.wait_for_line("slow", "ready", 30) and graph.wait_for_line("deaf", "ready",
                                                                                  30)
        start = time.monotonic()
        codes = graph.stop(timeout_s=3.0)
    finally:
        for process in graph.processes.values():
            if process.poll() is None:
                process.kill()
    assert codes == {"slow": 0, "deaf": -9}  # the slow save finished, the deaf one was killed
    assert 2.5 <= time.monotonic() - start < 20.0


def test_launch_refuses_the_bag_before_starting_anything(tmp_path, seven_scenes_dir):
    tools = [sys.executable, "-m", "panoptic_mapper.tools.cli"]
    bag = tmp_path / "kitchen_bag"
    subprocess.run(tools + ["bag-from-dataset", str(seven_scenes_dir), str(bag),
                            "--max-frames", "1", "--no-progress"],
                   check=True, capture_output=True, timeout=120)
    result = subprocess.run(tools + ["launch", "--bag", str(bag)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: bag='{bag}': no recorded segmentation for "
                                    "/panoptic/recorded_segmentation")
    assert result.stdout == ""  # no node was started
    result = subprocess.run(tools + ["launch", "--bag", str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "nothing" in result.stderr
