"""Start the mapping graph without launch_ros: one process per node, like mapper.launch.py.

``ros2 launch`` is not available from PyPI. This starts the nodes that
``launch/mapper.launch.py`` starts, from the same table (``panoptic_mapper.ros.launch_plan``),
each as ``python -m <node module> --ros-args --params-file <params> --params-file <overrides>
-r __node:=<name>``, prefixes their output with the node name, and on Ctrl-C stops them with
SIGINT (nodes configured to save their map do so) before exiting.

By default the segmenter, the instant semantics node and the mapper node (refined map, which
serves the planner API) start. Examples::

    panoptic-mapper launch
    panoptic-mapper launch --labels my_labels.yaml --arg segmenter_backend:=emulator
    panoptic-mapper launch --arg with_mapper:=false           # instant map only
    panoptic-mapper launch --nodes instant --bag scene/bag --rate 2
    # the mapper on another machine (same ROS_DOMAIN_ID, discovery beyond localhost):
    panoptic-mapper launch --arg with_mapper:=false --arg api_server:=mapper   # robot
    panoptic-mapper launch --nodes mapper                                      # GPU host

With ``--bag`` the bag is played into the graph once every node listens (the recorded
segmentation goes to the replay segmenter) and the graph keeps running afterwards.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STOP_TIMEOUT_S = 20.0
STARTUP_TIMEOUT_S = 300.0
ACTIVE_LINE = "active: listening"
"""What every node logs once it has subscribed to its inputs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", metavar="FILE", default="",
                        help="ROS parameter file (default: the package's config/mapper.yaml)")
    parser.add_argument("--labels", metavar="FILE", default="",
                        help="label registry YAML for all nodes (default: as in --params)")
    parser.add_argument("--nodes", nargs="+", metavar="NODE",
                        help="nodes to start: segmenter, instant, mapper "
                             "(default: those the launch file starts)")
    parser.add_argument("--arg", action="append", default=[], metavar="NAME:=VALUE",
                        help="a launch argument of mapper.launch.py (repeatable); "
                             "--list-args shows them")
    parser.add_argument("--list-args", action="store_true",
                        help="print the launch arguments and exit")
    parser.add_argument("--bag", metavar="BAG", help="play this bag into the graph")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback rate of --bag (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")


def launch_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The launch argument values the command line asks for."""
    from panoptic_mapper.ros.launch_plan import NODE_KEYS, PARAMS_FILE_ARG

    values: dict[str, str] = {}
    for entry in args.arg:
        name, sep, value = entry.partition(":=")
        if not sep:
            raise ValueError(f"--arg {entry!r}: expected NAME:=VALUE")
        values[name] = value
    if args.params:
        values[PARAMS_FILE_ARG] = str(Path(args.params).resolve())
    if args.labels:
        values["label_file"] = str(Path(args.labels).resolve())
    if args.nodes:
        unknown = sorted(set(args.nodes) - set(NODE_KEYS))
        if unknown:
            raise ValueError(f"--nodes {unknown}: known nodes are {list(NODE_KEYS)}")
        for key in NODE_KEYS:
            values[f"with_{key}"] = "true" if key in args.nodes else "false"
    return values


def node_commands(planned, overrides_dir: Path) -> list[tuple[str, list[str]]]:
    """``[(node name, argv)]`` for planned nodes; writes each node's overrides file."""
    import yaml

    from panoptic_mapper.ros.launch_plan import nested

    commands = []
    for node in planned:
        overrides_file = overrides_dir / f"{node.spec.name}.yaml"
        overrides_file.write_text(yaml.safe_dump(
            {node.spec.name: {"ros__parameters": nested(node.overrides)}}, sort_keys=True))
        commands.append((node.spec.name, [
            sys.executable, "-m", node.spec.module, "--ros-args",
            "--params-file", node.params_file, "--params-file", str(overrides_file),
            "-r", f"__node:={node.spec.name}"]))
    return commands


def player_command(bag: str, rate: float, planned) -> list[str]:
    """The ``panoptic-mapper play`` command feeding ``bag`` to the planned nodes.

    The player waits until every input topic is matched by each planned node that subscribes
    to it (a message sent before discovery completes would be lost), and sends a recorded
    segmentation to the replay segmenter's input.
    """
    from panoptic_mapper.ros.node_config import (InstantSemanticsNodeConfig,
                                                 SegmenterNodeConfig)

    command = [sys.executable, "-m", "panoptic_mapper.tools.cli", "play", str(bag),
               "--rate", str(rate), "--wait-timeout", "300"]
    wait_for: list[str] = []
    for node in planned:
        if node.spec.key in ("instant", "mapper"):
            topics = InstantSemanticsNodeConfig().input.topics
            wait_for += [node.overrides.get(f"input.topics.{name}", getattr(topics, name))
                         for name in ("rgb", "depth", "camera_info", "pose")]
        elif node.spec.key == "segmenter":
            segmenter = SegmenterNodeConfig()
            if node.overrides.get("backend", segmenter.backend) == "replay":
                recorded = segmenter.topics.recorded_segmentation
                command += ["--remap", f"/panoptic/segmentation:={recorded}"]
                wait_for.append(recorded)
    for topic in wait_for:  # once per subscribing node: the player waits for all of them
        command += ["--wait-for", topic]
    return command


class GraphProcesses:
    """Started node processes with prefixed output; :meth:`stop` ends them with SIGINT."""

    def __init__(self, commands: list[tuple[str, list[str]]], env: dict[str, str] | None = None,
                 log=None):
        self._log = log or sys.stdout
        self._lock = threading.Lock()
        self.processes: dict[str, subprocess.Popen] = {}
        self.output: dict[str, list[str]] = {}
        for name, argv in commands:
            self.start(name, argv, env)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, env=env or dict(os.environ),
                                   start_new_session=True)
        self.processes[name] = process
        self.output[name] = []
        threading.Thread(target=self._pump, args=(name, process), daemon=True).start()
        return process

    def _pump(self, name: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._lock:
                self.output[name].append(line)
                if self._log is not None:
                    self._log.write(f"[{name}] {line}")
                    self._log.flush()

    def wait_for_line(self, name: str, text: str, timeout_s: float) -> bool:
        """True once ``name`` printed a line containing ``text``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if any(text in line for line in self.output[name]):
                    return True
            if self.processes[name].poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def exited(self) -> dict[str, int]:
        """Processes that have ended, with their exit codes."""
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGINT every running process, then SIGKILL what is left after ``timeout_s``."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return {n: p.returncode for n, p in self.processes.items()}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import ConfigError
    from panoptic_mapper.core.io.resources import config_path
    from panoptic_mapper.ros.launch_plan import LAUNCH_ARGUMENTS, plan

    if args.list_args:
        for arg in LAUNCH_ARGUMENTS:
            print(f"{arg.name}:={arg.default!r}\n    {arg.description}")
        return 0
    try:
        planned = plan(launch_arguments(args), str(config_path("mapper.yaml")))
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="panoptic_mapper_launch_") as tmp:
        commands = node_commands(planned, Path(tmp))
        if args.dry_run:
            for name, argv in commands:
                print(f"{name}: {' '.join(argv)}")
            if args.bag:
                print("player: " + " ".join(player_command(args.bag, args.rate, planned)))
            return 0
        graph = GraphProcesses(commands)
        signal.signal(signal.SIGTERM, _interrupt)  # stop the nodes cleanly on SIGTERM too
        try:
            # The player starts once every node listens: the mapping nodes share input topics,
            # and the player only waits for the first subscriber of each.
            if args.bag and all(graph.wait_for_line(node.spec.name, ACTIVE_LINE,
                                                    STARTUP_TIMEOUT_S) for node in planned):
                graph.start("player", player_command(args.bag, args.rate, planned))
            elif args.bag:
                print("error: a node did not start; the bag is not played", file=sys.stderr)
            while len(graph.exited()) < len(graph.processes) or not graph.processes:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        codes = graph.stop()
    failed = {n: c for n, c in codes.items() if c not in (0, -signal.SIGINT)}
    if failed:
        print(f"error: processes ended with errors: {failed}", file=sys.stderr)
        return 1
    return 0
