"""Launch configuration: config/mapper.yaml matches the dataclasses, rcl parses it, the launch
file and the pip launcher start the same nodes from one table, one node serves the API."""
from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
import yaml

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.io.resources import config_path
from panoptic_mapper.runtime.launch_plan import LAUNCH_ARGUMENTS, NODES, nested, plan
from panoptic_mapper.ros.params import declare_config
from panoptic_mapper.runtime.params_yaml import node_config_classes, render_params_yaml
from panoptic_mapper.tools.launch import node_commands, playback_plan, player_command

REPO = Path(__file__).resolve().parents[2]
MAPPER_YAML = config_path("mapper.yaml")


def launch_file() -> Path:
    source = REPO / "launch" / "mapper.launch.py"
    if source.is_file():
        return source
    installed = MAPPER_YAML.parent.parent / "launch" / "mapper.launch.py"
    return installed


def test_mapper_yaml_is_the_generated_text():
    assert MAPPER_YAML.read_text(encoding="utf-8") == render_params_yaml(), \
        "regenerate: python -m panoptic_mapper.runtime.params_yaml --write config/mapper.yaml"


@pytest.mark.parametrize("node_name", sorted(node_config_classes()))
def test_each_section_holds_exactly_the_defaults(node_name):
    config_cls = node_config_classes()[node_name]
    data = yaml.safe_load(MAPPER_YAML.read_text())[node_name]["ros__parameters"]
    assert config_cls.from_dict(data) == config_cls()  # unknown keys would raise
    assert data == config_cls().to_dict()               # every field present, nothing else


@pytest.mark.parametrize("node_name", sorted(node_config_classes()))
def test_rcl_parses_the_file_into_the_same_config(node_name):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node(node_name, context=context,
                                 cli_args=["--ros-args", "--params-file", str(MAPPER_YAML)])
        config_cls = node_config_classes()[node_name]
        assert declare_config(node, config_cls) == config_cls()
        node.destroy_node()
    finally:
        context.try_shutdown()


def test_launch_file_compiles_and_takes_everything_from_the_plan():
    source = launch_file().read_text(encoding="utf-8")
    tree = ast.parse(compile(source, "mapper.launch.py", "exec", ast.PyCF_ONLY_AST))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "panoptic_mapper.runtime.launch_plan" for alias in node.names}
    assert {"LAUNCH_ARGUMENTS", "plan"} <= imported
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
               and isinstance(node.value, str)}
    # no node name, executable or topic is spelled out in the launch file itself
    for spec in NODES:
        assert spec.executable not in strings and spec.name not in strings
    assert not any(s.startswith("/camera") for s in strings)


def test_arguments_have_descriptions_and_defaults_select_all_three_nodes():
    assert all(arg.description for arg in LAUNCH_ARGUMENTS)
    planned = plan({}, "/p.yaml")
    assert [n.spec.key for n in planned] == ["segmenter", "instant", "mapper"]
    assert planned[1].overrides["planner_api.serve"] is False
    assert planned[2].overrides["planner_api.serve"] is True
    assert all(n.params_file == "/p.yaml" for n in planned)


@pytest.mark.parametrize("segmenter, instant, mapper",
                         [c for c in itertools.product(["true", "false"], repeat=3)
                          if "true" in c])
def test_exactly_one_started_mapper_serves_the_planner_api(segmenter, instant, mapper):
    planned = plan({"with_segmenter": segmenter, "with_instant": instant,
                    "with_mapper": mapper}, "/p.yaml")
    servers = [n.spec.key for n in planned if n.overrides.get("planner_api.serve")]
    if instant == "true" or mapper == "true":
        assert servers == (["mapper"] if mapper == "true" else ["instant"])
    else:
        assert servers == []


def test_arguments_become_node_overrides():
    planned = {n.spec.key: n for n in plan(
        {"rgb_topic": "/cam/rgb", "label_file": "/l.yaml", "segmenter_backend": "emulator",
         "use_sim_time": "true", "params_file": "/mine.yaml"}, "/p.yaml")}
    assert planned["segmenter"].overrides == {
        "use_sim_time": True, "label_file": "/l.yaml", "topics.rgb": "/cam/rgb",
        "backend": "emulator"}
    assert planned["instant"].overrides["input.topics.rgb"] == "/cam/rgb"
    assert planned["instant"].params_file == "/mine.yaml"
    assert nested({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    with pytest.raises(ConfigError, match="bogus"):
        plan({"bogus": "1"}, "/p.yaml")
    with pytest.raises(ConfigError, match="with_mapper"):
        plan({"with_mapper": "yes"}, "/p.yaml")


def test_pip_launcher_commands_use_the_same_plan(tmp_path):
    planned = plan({"with_mapper": "true"}, str(MAPPER_YAML))
    commands = dict(node_commands(planned, tmp_path))
    # the instant and mapper nodes share one process (the mapper derives from the instant map)
    assert list(commands) == ["segmenter_node", "mapping_process"]
    argv = commands["mapping_process"]
    assert argv[1:3] == ["-m", "panoptic_mapper.nodes.mapping_process"]
    assert argv[argv.index("--params-file") + 1] == str(MAPPER_YAML)
    assert "-r" not in argv  # a __node remap would rename both nodes
    assert commands["segmenter_node"][-2:] == ["-r", "__node:=segmenter_node"]
    overrides = yaml.safe_load((tmp_path / "mapping_process.yaml").read_text())
    assert overrides["instant_semantics_node"]["ros__parameters"]["planner_api"] == \
        {"serve": False}
    assert overrides["mapper_node"]["ros__parameters"]["planner_api"] == {"serve": True}
    assert overrides["mapper_node"]["ros__parameters"]["prior"] == {"source": "colocated"}
    separate = dict(node_commands(plan({"colocate_mapper": "false"}, str(MAPPER_YAML)),
                                  tmp_path))
    assert list(separate) == ["segmenter_node", "instant_semantics_node", "mapper_node"]
    assert separate["instant_semantics_node"][-2:] == ["-r", "__node:=instant_semantics_node"]
    scene_bag = {"/camera/color/image_raw": "sensor_msgs/msg/Image",
                 "/camera/depth/image_raw": "sensor_msgs/msg/Image",
                 "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
                 "/camera/pose": "geometry_msgs/msg/PoseStamped",
                 "/panoptic/segmentation": "panoptic_mapper/msg/PanopticSegmentation"}
    player = player_command("/bag", 2.0, planned, playback_plan("/bag", planned, scene_bag))
    assert "/panoptic/segmentation:=/panoptic/recorded_segmentation" in player


def test_launch_tool_dry_run_and_errors():
    cli = [sys.executable, "-m", "panoptic_mapper.tools.cli", "launch"]
    result = subprocess.run(cli + ["--dry-run", "--nodes", "instant"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("instant_semantics_node: ")
    assert "segmenter_node" not in result.stdout
    result = subprocess.run(cli + ["--nodes", "planner"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "planner" in result.stderr


def test_rviz_view_shows_the_map_topics_in_the_map_frame():
    from panoptic_mapper.nodes.map_outputs import TOPIC_NAMES
    from panoptic_mapper.runtime.node_config import DEFAULT_API_NAMESPACE, InstantSemanticsNodeConfig

    view = yaml.safe_load(config_path("panoptic.rviz").read_text())["Visualization Manager"]
    assert view["Global Options"]["Fixed Frame"] == InstantSemanticsNodeConfig().map_frame
    topics = {d["Topic"]["Value"]: d["Topic"] for d in view["Displays"] if "Topic" in d}
    for name in ("mesh_marker", "instances", "cloud"):
        topic = topics[f"{DEFAULT_API_NAMESPACE}/{TOPIC_NAMES[name]}"]
        assert topic["Durability Policy"] == "Transient Local"  # latched map topics
