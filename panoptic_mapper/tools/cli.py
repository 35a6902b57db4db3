"""``panoptic-mapper``: the command-line entry point that dispatches to one tool per subcommand.

Each tool is a module in ``panoptic_mapper.tools`` with a docstring (its first line is the help
text), ``add_arguments(parser)`` and ``run(args) -> int``. Tool modules import heavy libraries
(torch, open3d, rclpy) inside ``run`` so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module. Keep sorted; add a line here when adding a tool.
SUBCOMMANDS: dict[str, str] = {
    "bag-from-dataset": "panoptic_mapper.tools.bag_from_dataset",
    "demo": "panoptic_mapper.tools.demo",
    "eval": "panoptic_mapper.tools.evaluate",
    "launch": "panoptic_mapper.tools.launch",
    "make-scene": "panoptic_mapper.tools.make_scene",
    "models": "panoptic_mapper.tools.models",
    "play": "panoptic_mapper.tools.play",
    "render": "panoptic_mapper.tools.render",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="panoptic-mapper",
        description="Open-vocabulary panoptic 3D mapping: tools that run without a ROS graph.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("panoptic_mapper.tools"):
                continue  # tool not built yet in this checkout
            raise
        doc = (module.__doc__ or name).strip().splitlines()[0]
        tool = sub.add_parser(name, help=doc, description=module.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(tool)
        tool.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
