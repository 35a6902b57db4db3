"""Start the mapping graph without launch_ros, like mapper.launch.py.

``ros2 launch`` is not available from PyPI. This starts the processes that
``launch/mapper.launch.py`` starts, from the same table (``panoptic_mapper.runtime.launch_plan``):
each as ``python -m <module> --ros-args --params-file <params> --params-file <overrides>``
(``-r __node:=<name>`` for a process of one node; the instant semantics node and the mapper node
share the ``mapping_process``), prefixes their output with the process name, and on Ctrl-C stops
them with SIGINT (nodes configured to save their map do so), waiting ``--stop-timeout`` seconds
before killing what is left, before exiting.

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
segmentation goes to the replay segmenter; ``/clock`` is published when the nodes use sim time)
and the graph keeps running afterwards. The bag is checked against the nodes' effective
parameters (``--params`` and ``--arg`` included) before anything starts: a topic a node needs
and the bag lacks is an error naming it (``panoptic_mapper.runtime.launch_playback``).
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
from typing import Mapping

from panoptic_mapper.runtime.launch_plan import MAPPING_PROCESS

STOP_TIMEOUT_S = 60.0
"""Default wait for the nodes after SIGINT: saving a large refined map takes tens of seconds."""
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
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S, metavar="S",
                        help="on Ctrl-C or SIGTERM, wait S seconds for the nodes to stop (and "
                             "save their maps, save_on_shutdown_path) before killing them; "
                             "0 = wait as long as they take (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")


def launch_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The launch argument values the command line asks for."""
    from panoptic_mapper.runtime.launch_plan import NODE_KEYS, PARAMS_FILE_ARG

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
    """``[(process name, argv)]`` for the processes hosting the planned nodes
    (``launch_plan.processes``); writes each process's overrides file (one section per node).
    A process of one node is renamed to the node's name with ``-r __node:=``; a process of
    several nodes is not (the remap would rename all of them)."""
    import yaml

    from panoptic_mapper.runtime.launch_plan import nested, processes

    commands = []
    for process in processes(planned):
        overrides_file = overrides_dir / f"{process.name}.yaml"
        overrides_file.write_text(yaml.safe_dump(
            {node.spec.name: {"ros__parameters": nested(node.overrides)}
             for node in process.nodes}, sort_keys=True))
        argv = [sys.executable, "-m", process.module, "--ros-args",
                "--params-file", process.params_file, "--params-file", str(overrides_file)]
        if len(process.nodes) == 1:
            argv += ["-r", f"__node:={process.nodes[0].spec.name}"]
        commands.append((process.name, argv))
    return commands


def playback_plan(bag: str, planned, bag_topics: Mapping[str, str] | None = None):
    """:func:`panoptic_mapper.runtime.launch_playback.plan_playback` for ``bag`` (its topics read
    from the bag unless ``bag_topics`` gives them).

    Raises:
        ConfigError: the bag lacks a topic a planned node needs (the message says what to do).
        DataFormatError: the bag or a parameter file cannot be read.
    """
    from panoptic_mapper.core.io.bag import bag_info
    from panoptic_mapper.runtime.launch_playback import plan_playback

    if bag_topics is None:
        bag_topics = {topic: info.msgtype for topic, info in bag_info(bag).topics.items()}
    return plan_playback(planned, bag_topics, str(bag))


def player_command(bag: str, rate: float, planned, playback=None) -> list[str]:
    """The ``panoptic-mapper play`` command feeding ``bag`` to the planned nodes.

    Built from the nodes' effective parameters (parameter file and overrides): the player
    waits until every input topic is matched by each planned node that subscribes to it (a
    message sent before discovery completes would be lost), sends a recorded segmentation to
    the replay segmenter's input, and publishes ``/clock`` for nodes with ``use_sim_time``.
    ``playback`` is a plan from :func:`playback_plan` (made here when None; same errors).
    """
    if playback is None:
        playback = playback_plan(bag, planned)
    command = [sys.executable, "-m", "panoptic_mapper.tools.cli", "play", str(bag),
               "--rate", str(rate), "--wait-timeout", "300"]
    if playback.clock:
        command.append("--clock")
    for source, target in playback.remaps.items():
        command += ["--remap", f"{source}:={target}"]
    if playback.topics is not None:
        command += ["--topics", *playback.topics]
    for topic in playback.wait_for:  # once per subscribing node: the player waits for all
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
        """True once process ``name`` printed a line containing ``text``; ``name`` may also be
        a node of a process hosting several (its log lines carry ``[name]``)."""
        process, marker = name, ""
        if name not in self.processes:
            process = next((p for p in self.processes if p == MAPPING_PROCESS), name)
            marker = f"[{name}]"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if any(text in line and marker in line for line in self.output[process]):
                    return True
            if self.processes[process].poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def exited(self) -> dict[str, int]:
        """Processes that have ended, with their exit codes."""
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout_s: float | None = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGINT every running process, then SIGKILL what is left after ``timeout_s`` (None:
        no limit). A KeyboardInterrupt while waiting (a second Ctrl-C) kills at once."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            for process in self.processes.values():
                remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
                try:
                    process.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            for process in self.processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return {n: p.returncode for n, p in self.processes.items()}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import InvalidInputError
    from panoptic_mapper.core.io.resources import config_path
    from panoptic_mapper.runtime.launch_plan import LAUNCH_ARGUMENTS, plan

    if args.list_args:
        for arg in LAUNCH_ARGUMENTS:
            print(f"{arg.name}:={arg.default!r}\n    {arg.description}")
        return 0
    player = None
    try:
        if args.stop_timeout < 0:
            raise ValueError(f"--stop-timeout {args.stop_timeout}: must be >= 0")
        planned = plan(launch_arguments(args), str(config_path("mapper.yaml")))
        if args.bag:  # before anything starts: a bag the graph cannot use is an error now
            playback = playback_plan(args.bag, planned)
            for warning in playback.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            player = player_command(args.bag, args.rate, planned, playback)
    except (ValueError, InvalidInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="panoptic_mapper_launch_") as tmp:
        commands = node_commands(planned, Path(tmp))
        if args.dry_run:
            for name, argv in commands:
                print(f"{name}: {' '.join(argv)}")
            if player:
                print("player: " + " ".join(player))
            return 0
        graph = GraphProcesses(commands)
        signal.signal(signal.SIGTERM, _interrupt)  # stop the nodes cleanly on SIGTERM too
        try:
            # The player starts once every node listens, and then waits for each node's
            # subscriptions to match (a message sent before that would be lost).
            if player and all(graph.wait_for_line(node.spec.name, ACTIVE_LINE,
                                                  STARTUP_TIMEOUT_S) for node in planned):
                graph.start("player", player)
            elif player:
                print("error: a node did not start; the bag is not played", file=sys.stderr)
            while len(graph.exited()) < len(graph.processes) or not graph.processes:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        if len(graph.exited()) < len(graph.processes):
            limit = f"up to {args.stop_timeout:g} s" if args.stop_timeout else "without limit"
            print(f"stopping the nodes: waiting {limit} (--stop-timeout; Ctrl-C again kills "
                  "them now)", file=sys.stderr, flush=True)
        codes = graph.stop(args.stop_timeout or None)
    failed = {n: c for n, c in codes.items() if c not in (0, -signal.SIGINT)}
    if failed:
        print(f"error: processes ended with errors: {failed}", file=sys.stderr)
        return 1
    return 0
