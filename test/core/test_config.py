from dataclasses import dataclass, field
from typing import Literal

import pytest

from panoptic_mapper.core.config import ConfigBase, field_docs, flat_field_docs, require
from panoptic_mapper.core.errors import ConfigError


@dataclass
class InnerConfig(ConfigBase):
    voxel_size_m: float = 0.02
    """Edge length of a voxel, metres."""
    mode: Literal["a", "b"] = "a"
    """Which mode."""

    def validate(self) -> None:
        require(self.voxel_size_m > 0, "voxel_size_m", self.voxel_size_m, "must be > 0")


@dataclass
class OuterConfig(ConfigBase):
    inner: InnerConfig = field(default_factory=InnerConfig)
    """Nested section."""
    names: tuple[str, ...] = ("x",)
    """Some names."""
    enabled: bool = True
    """Switch."""


def test_round_trip_nested_and_flat():
    cfg = OuterConfig.from_dict({"inner": {"voxel_size_m": 0.05, "mode": "b"}, "names": ["p", "q"]})
    assert cfg.inner.voxel_size_m == 0.05 and cfg.names == ("p", "q")
    assert OuterConfig.from_dict(cfg.to_dict()) == cfg
    flat = cfg.to_flat_dict()
    assert flat["inner.voxel_size_m"] == 0.05 and flat["enabled"] is True
    assert OuterConfig.from_flat_dict(flat) == cfg


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="inner.voxel_size_m"):
        OuterConfig.from_dict({"inner": {"voxel_size_m": -1.0}})
    with pytest.raises(ConfigError, match="inner.bogus"):
        OuterConfig.from_dict({"inner": {"bogus": 1}})
    with pytest.raises(ConfigError, match="inner.mode"):
        OuterConfig.from_dict({"inner": {"mode": "c"}})
    with pytest.raises(ConfigError, match="enabled"):
        OuterConfig.from_dict({"enabled": "yes"})


def test_int_accepted_for_float_and_yaml(tmp_path):
    cfg = OuterConfig.from_dict({"inner": {"voxel_size_m": 1}})
    assert isinstance(cfg.inner.voxel_size_m, float)
    path = tmp_path / "p.yaml"
    path.write_text("node:\n  ros__parameters:\n    inner:\n      voxel_size_m: 0.04\n")
    assert OuterConfig.from_yaml(path, section="node").inner.voxel_size_m == 0.04


def test_docstrings_are_readable():
    assert field_docs(InnerConfig)["voxel_size_m"] == "Edge length of a voxel, metres."
    docs = flat_field_docs(OuterConfig)
    assert docs["inner.mode"] == "Which mode." and docs["enabled"] == "Switch."
