"""Config dataclasses <-> ROS parameters, on an in-process node (no spinning, no DDS peers)."""
from dataclasses import dataclass, field
from typing import Literal

import pytest
import rclpy
from rcl_interfaces.msg import ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.runtime.node_config import InstantSemanticsNodeConfig, SegmenterNodeConfig
from panoptic_mapper.ros.params import (ConfigParameters, declare_config, parameter_descriptors,
                                        type_description)


@dataclass
class GridConfig(ConfigBase):
    voxel_size_m: float = 0.02
    """Voxel edge length, metres."""
    mode: Literal["fast", "exact"] = "fast"
    """Which integration kernel."""

    def validate(self) -> None:
        require(self.voxel_size_m > 0, "voxel_size_m", self.voxel_size_m, "must be > 0")


@dataclass
class DemoConfig(ConfigBase):
    grid: GridConfig = field(default_factory=GridConfig)
    """The grid."""
    names: tuple[str, ...] = ("wall",)
    """Label names to keep."""
    weights: tuple[float, ...] = ()
    """Per-level weights."""
    rate_hz: float = 1.0
    """Publish rate, Hz."""
    enabled: bool = True
    """Switch."""


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def make_node(context, overrides=(), cli_args=None) -> Node:
    return Node("params_test", context=context, parameter_overrides=list(overrides),
                cli_args=cli_args)


def test_defaults_are_declared_with_docstrings_as_descriptions(context):
    node = make_node(context)
    config = declare_config(node, DemoConfig)
    assert config == DemoConfig()
    names = set(node._parameters) - {"use_sim_time", "start_type_description_service"}
    assert names == {"grid.voxel_size_m", "grid.mode", "names", "weights", "rate_hz", "enabled"}
    descriptor = node.describe_parameter("grid.voxel_size_m")
    assert descriptor.description == "Voxel edge length, metres."
    assert descriptor.read_only
    assert "one of: fast, exact" in node.describe_parameter("grid.mode").additional_constraints
    node.destroy_node()


def test_params_file_overrides_with_ros_quirks(context, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("params_test:\n  ros__parameters:\n"
                      "    grid: {voxel_size_m: 1, mode: exact}\n"
                      "    names: []\n    weights: [1, 2]\n    rate_hz: 4\n")
    node = make_node(context, cli_args=["--ros-args", "--params-file", str(params)])
    config = declare_config(node, DemoConfig)
    # ints for float fields and an empty YAML list are accepted (rcl itself rejects lists
    # that mix ints and floats)
    assert config.grid == GridConfig(voxel_size_m=1.0, mode="exact")
    assert config.names == () and config.weights == (1.0, 2.0) and config.rate_hz == 4.0
    assert isinstance(config.rate_hz, float)
    node.destroy_node()


@pytest.mark.parametrize("name, value, match", [
    ("grid.voxel_size_m", -0.5, "grid.voxel_size_m"),
    ("grid.mode", "slow", "grid.mode"),
    ("enabled", "yes", "enabled"),
    ("names", [1, 2], r"names\[0\]"),
])
def test_bad_values_raise_naming_the_parameter(context, name, value, match):
    node = make_node(context, [Parameter(name, value=value)])
    with pytest.raises(ConfigError, match=match):
        declare_config(node, DemoConfig)
    node.destroy_node()


def test_namespace_prefixes_every_parameter_and_error(context):
    node = make_node(context, [Parameter("demo.grid.voxel_size_m", value=0.0)])
    with pytest.raises(ConfigError, match=r"demo\.grid\.voxel_size_m"):
        declare_config(node, DemoConfig, namespace="demo")
    node.destroy_node()


def test_run_time_changes_are_validated_and_read_only_fields_refused(context):
    node = make_node(context)
    params = ConfigParameters(node, DemoConfig, dynamic=["rate_hz", "grid.mode"])
    seen = []
    params.add_listener(seen.append)
    result = node.set_parameters([Parameter("rate_hz", value=5)])[0]
    assert result.successful and params.config.rate_hz == 5.0
    assert seen and seen[-1].rate_hz == 5.0
    result = node.set_parameters([Parameter("grid.mode", value="nope")])[0]
    assert not result.successful and "grid.mode" in result.reason
    assert params.config.grid.mode == "fast"
    result = node.set_parameters([Parameter("grid.voxel_size_m", value=0.05)])[0]
    assert not result.successful and "read-only" in result.reason
    assert params.config.grid.voxel_size_m == 0.02
    node.destroy_node()


def test_unknown_dynamic_field_is_rejected():
    with pytest.raises(ConfigError, match="dynamic"):
        parameter_descriptors(DemoConfig, dynamic=["grid.nope"])


def test_type_descriptions():
    assert type_description(float) == (ParameterType.PARAMETER_DOUBLE,
                                       "a number (integers accepted)")
    assert type_description(tuple[str, ...])[0] == ParameterType.PARAMETER_STRING_ARRAY
    assert type_description(Literal["a", "b"]) == (ParameterType.PARAMETER_STRING,
                                                   "one of: a, b")


@pytest.mark.parametrize("config_cls", [InstantSemanticsNodeConfig, SegmenterNodeConfig])
def test_node_configs_round_trip_through_parameters(context, config_cls):
    node = make_node(context)
    descriptors = parameter_descriptors(config_cls)
    assert all(d.description for d in descriptors.values()), \
        [n for n, d in descriptors.items() if not d.description]
    assert declare_config(node, config_cls) == config_cls()
    node.destroy_node()
