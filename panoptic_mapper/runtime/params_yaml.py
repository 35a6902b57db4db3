"""Generate ``config/mapper.yaml`` from the node config dataclasses, and check it.

The parameter file holds one ``<node>: ros__parameters:`` section per node of
``launch_plan.NODES`` that has a config class, every leaf field with its default and its
attribute docstring as a comment, nested exactly like the dataclasses. It is generated, so it
can never disagree with the code::

    python -m panoptic_mapper.runtime.params_yaml --write config/mapper.yaml
    python -m panoptic_mapper.runtime.params_yaml --check config/mapper.yaml

ROS-free. Owns: the YAML text of the defaults. Does not own: the defaults themselves.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
import typing
from pathlib import Path

import yaml

from panoptic_mapper.core.config import ConfigBase, field_docs
from panoptic_mapper.runtime.launch_plan import NODES

HEADER = """\
# panoptic_mapper parameters: one section per node, nested like the config dataclasses
# (a ROS parameter is the dotted path, e.g. instant_semantics_node: map.tsdf.voxel_size_m).
# GENERATED from the dataclasses by
#   python -m panoptic_mapper.runtime.params_yaml --write config/mapper.yaml
# (a test checks that it matches). To change a setting for your robot, copy this file and pass
# the copy: panoptic-mapper launch --params my.yaml / ros2 launch ... params_file:=my.yaml.
"""


def node_config_classes() -> dict[str, type[ConfigBase]]:
    """Node name -> root config class, for every node of the launch plan that has one."""
    out = {}
    for spec in NODES:
        if not spec.config_class:
            continue
        module, name = spec.config_class.split(":")
        out[spec.name] = getattr(importlib.import_module(module), name)
    return out


def render_params_yaml() -> str:
    """The full text of ``config/mapper.yaml``."""
    lines = [HEADER.rstrip("\n")]
    for node_name, config_cls in node_config_classes().items():
        lines.append("")
        lines += _comment(inspect.cleandoc(config_cls.__doc__ or node_name), 0)
        lines.append(f"{node_name}:")
        lines.append("  ros__parameters:")
        lines += _section(config_cls(), 4)
    return "\n".join(lines) + "\n"


def _section(config: ConfigBase, indent: int) -> list[str]:
    lines: list[str] = []
    docs = field_docs(type(config))
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        lines += _comment(docs.get(f.name, ""), indent)
        hint = hints[f.name]
        if inspect.isclass(hint) and issubclass(hint, ConfigBase):
            lines.append(" " * indent + f"{f.name}:")
            lines += _section(value, indent + 2)
        else:
            lines.append(" " * indent + f"{f.name}: {_scalar(value)}")
    return lines


def _comment(text: str, indent: int) -> list[str]:
    return [" " * indent + ("# " + line if line else "#") for line in text.splitlines()]


def _scalar(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="write the generated YAML to FILE")
    group.add_argument("--check", metavar="FILE",
                       help="exit 1 if FILE differs from the generated YAML")
    args = parser.parse_args(argv)
    text = render_params_yaml()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        return 0
    if args.check:
        if Path(args.check).read_text(encoding="utf-8") != text:
            print(f"{args.check} differs from the config dataclasses; regenerate it with "
                  f"python -m panoptic_mapper.runtime.params_yaml --write {args.check}",
                  file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
