"""mapper_node in-process: parameters, the training worker (start/stop/status, budget extension,
failures), progress in the diagnostics, the training_control service, answers from the prior
until the field is ready and the same instance ids afterwards, save/load with the field
checkpoint (the co-located instant map included), one planner endpoint with the instant node
beside it, the stream integrated once, and a mapper whose prior comes over topics.

The scene is the analytic wall + box of ``ros_graph_helpers`` (160 x 120 images); budgets are
a few dozen steps, so nothing here trains for long.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

sys.path.insert(0, str(Path(__file__).parent))
import ros_graph_helpers as helpers  # noqa: E402

from panoptic_mapper.core.errors import ConfigError, InvalidInputError  # noqa: E402
from panoptic_mapper.core.field.device import resolve_device  # noqa: E402
from panoptic_mapper.core.labels import LabelRegistry  # noqa: E402
from panoptic_mapper.core.mapping.base import create_map  # noqa: E402
from panoptic_mapper.core.mapping.refined_layer import RefinedLayer  # noqa: E402
from panoptic_mapper.core.types import RgbdFrame  # noqa: E402
from panoptic_mapper.msg import PanopticMesh  # noqa: E402
from panoptic_mapper.nodes.instant_semantics_node import InstantSemanticsNode  # noqa: E402
from panoptic_mapper.nodes.mapper_node import MapperNode  # noqa: E402
from panoptic_mapper.nodes.node_base import autostart  # noqa: E402
from panoptic_mapper.runtime.launch_plan import plan, processes  # noqa: E402
from panoptic_mapper.runtime.mapper_config import MapperNodeConfig, TrainingWorkerConfig  # noqa: E402
from panoptic_mapper.ros.params import declare_config, parameter_descriptors  # noqa: E402
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS  # noqa: E402
from panoptic_mapper.runtime.map_session import MapSession  # noqa: E402
from panoptic_mapper.runtime.prior_sources import SessionPrior  # noqa: E402
from panoptic_mapper.runtime.refined_session import RefinedSession  # noqa: E402
from panoptic_mapper.nodes.planner_api import servers_of  # noqa: E402
from panoptic_mapper.runtime.training_worker import TrainingState, TrainingWorker  # noqa: E402
from panoptic_mapper.srv import (ListInstances, LoadMap, QueryObjects, SaveMap,  # noqa: E402
                                 TrainingControl)

pytestmark = pytest.mark.ros

SMALL_MAP = {"map.keyframes.min_translation_m": 0.015,  # every frame of the walk is a keyframe
             "map.training.trainer.total_steps": 100}
"""Refined map settings for the wall + box scene (a 100-step budget: ready from step 60)."""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """What the node does at configure (``torch_threads``), for the worker tests too:
    on a loaded 2-core machine, more threads make training several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---- parameters ---------------------------------------------------------------------------------
def test_config_defaults_and_validation_name_the_field():
    config = MapperNodeConfig()
    assert config.torch_threads == 1 and config.training.autostart
    assert config.map.training.trainer.device == "auto" and config.prior.source == "auto"
    with pytest.raises(ConfigError, match="chunk_max_s"):
        TrainingWorkerConfig(chunk_max_s=0.0)
    with pytest.raises(ConfigError, match="training.max_share"):
        MapperNodeConfig.from_dict({"training": {"max_share": 1.5}})
    with pytest.raises(ConfigError, match="map.min_keyframes"):
        MapperNodeConfig.from_dict({"map": {"min_keyframes": 0}})
    with pytest.raises(ConfigError, match="prior.source"):
        MapperNodeConfig.from_dict({"prior": {"source": "elsewhere"}})


def test_parameters_round_trip_with_descriptions_and_bad_values_name_the_parameter():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("mapper_params", context=context)
        descriptors = parameter_descriptors(MapperNodeConfig)
        assert not [name for name, d in descriptors.items() if not d.description]
        assert declare_config(node, MapperNodeConfig) == MapperNodeConfig()
        node.destroy_node()
        with pytest.raises(ConfigError, match=r"training\.max_share"):
            MapperNode(context=context,
                       parameter_overrides=[Parameter("training.max_share", value=2.0)])
    finally:
        context.try_shutdown()


def test_a_cuda_device_without_cuda_fails_configure_naming_the_parameter(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        config = MapperNodeConfig.from_flat_dict({"map.training.trainer.device": "cuda"})
        with pytest.raises(ConfigError, match=r"training\.trainer\.device='cuda': CUDA "
                                              "is not available"):
            RefinedLayer(LabelRegistry.default(), config.map, None)
        node = MapperNode(context=context, parameter_overrides=[
            Parameter("map.training.trainer.device", value="cuda"),
            Parameter("prior.source", value="topics")])
        assert not autostart(node)  # logs "configure failed: map.training.trainer.device..."
        node.release(save=False)
        node.destroy_node()
    finally:
        context.try_shutdown()


def test_launch_plan_picks_one_api_server():
    def servers(arguments):
        return {n.spec.key: n.overrides.get("planner_api.serve") for n in plan(arguments, "/p")}

    assert servers({}) == {"segmenter": None, "instant": False, "mapper": True}
    assert servers({"with_mapper": "false"}) == {"segmenter": None, "instant": True}
    # the mapper runs on another machine: the local instant node must not serve
    assert servers({"with_mapper": "false", "api_server": "mapper"}) == \
        {"segmenter": None, "instant": False}
    assert servers({"api_server": "instant"}) == \
        {"segmenter": None, "instant": True, "mapper": False}
    with pytest.raises(ConfigError, match="api_server"):
        plan({"api_server": "both"}, "/p")
    mapper = [n for n in plan({"rgb_topic": "/cam/rgb"}, "/p") if n.spec.key == "mapper"][0]
    assert mapper.overrides["input.topics.rgb"] == "/cam/rgb"


def test_launch_plan_runs_the_instant_and_mapper_nodes_in_one_process():
    def layout(arguments):
        return [(p.name, [n.spec.key for n in p.nodes]) for p in processes(plan(arguments, "/p"))]

    def prior(arguments):
        mapper = [n for n in plan(arguments, "/p") if n.spec.key == "mapper"][0]
        return mapper.overrides["prior.source"]

    assert layout({}) == [("segmenter_node", ["segmenter"]),
                          ("mapping_process", ["instant", "mapper"])]
    assert prior({}) == "colocated"
    assert layout({"colocate_mapper": "false"}) == [
        ("segmenter_node", ["segmenter"]), ("instant_semantics_node", ["instant"]),
        ("mapper_node", ["mapper"])]
    assert prior({"colocate_mapper": "false"}) == "topics"
    # the mapper on a GPU host: alone, its prior over topics
    assert layout({"with_segmenter": "false", "with_instant": "false"}) == \
        [("mapper_node", ["mapper"])]
    assert prior({"with_segmenter": "false", "with_instant": "false"}) == "topics"


# ---- the training worker, without ROS ---------------------------------------------------------
class ListLogger:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def info(self, message):
        self.lines.append(("info", message))

    def warning(self, message):
        self.lines.append(("warning", message))

    def error(self, message):
        self.lines.append(("error", message))

    def text(self) -> str:
        return "\n".join(message for _, message in self.lines)


def scene_frames(count: int):
    for i in range(count):
        rgb, depth, ids = helpers.render(i)
        stamp = helpers.NS_PER_S + i * helpers.NS_PER_S // 10
        yield (RgbdFrame(stamp, rgb, depth, helpers.camera_pose(i), helpers.INTRINSICS),
               helpers.segmentation(ids, stamp))


class LocalPair:
    """The instant map and the refined layer derived from it, as the co-located nodes wire them,
    without ROS: frames integrate into the instant session once, the layer is offered each one
    and reads the instant snapshots (refreshed here after every frame, as the refresh worker
    would)."""

    def __init__(self, total_steps: int):
        registry = LabelRegistry.default()
        config = MapperNodeConfig.from_flat_dict(
            {**SMALL_MAP, "map.training.trainer.total_steps": total_steps}).map
        self.instant = MapSession(lambda: create_map("instant", registry), registry)
        self.session = RefinedSession(
            lambda: RefinedLayer(registry, config, SessionPrior(self.instant)), registry)
        self.instant.add_frame_listener(self.session.observe_frame)

    def integrate(self, frame, segmentation):
        report = self.instant.integrate(frame, segmentation)
        self.instant.refresh()
        return report


def refined_session(total_steps: int) -> tuple[RefinedSession, LocalPair]:
    pair = LocalPair(total_steps)
    return pair.session, pair


def started(worker: TrainingWorker) -> TrainingWorker:
    worker.start()
    return worker


def wait_for_state(worker: TrainingWorker, state: TrainingState, timeout_s: float = 60.0):
    assert helpers.wait_until(lambda: worker.status().state == state, timeout_s), \
        worker.status().summary()
    return worker.status()


def test_worker_start_stop_extend_and_done():
    session, pair = refined_session(total_steps=12)
    logger = ListLogger()
    worker = started(TrainingWorker(session, TrainingWorkerConfig(autostart=False,
                                                                  chunk_steps=4), logger))
    try:
        assert worker.status().state == TrainingState.STOPPED
        assert worker.request_training().state == TrainingState.WAITING  # no keyframes yet
        for frame, segmentation in scene_frames(4):
            assert pair.integrate(frame, segmentation).accepted
        done = wait_for_state(worker, TrainingState.DONE)
        assert done.progress.step == 12 and done.progress.total_steps == 12
        assert done.progress.num_keyframes == 4 and done.progress.num_tokens >= 1
        assert done.ready  # ready_fraction 0.6 of 12 steps passed
        assert set(done.progress.losses) >= {"depth", "total"}
        assert worker.stop_training().state == TrainingState.STOPPED
        status = worker.request_training(extra_steps=8)
        assert status.progress.total_steps == 20
        assert wait_for_state(worker, TrainingState.DONE).progress.step == 20
        with pytest.raises(InvalidInputError, match="extra_steps"):
            worker.request_training(extra_steps=-1)
    finally:
        worker.stop()
    text = logger.text()
    assert "training waiting_for_keyframes" in text and "training done: step 12/12" in text
    assert "field ready at step" in text and "budget extended by 8 to 20" in text


def test_worker_grows_the_box_of_a_done_field_and_logs_it():
    session, pair = refined_session(total_steps=6)
    for frame, segmentation in scene_frames(3):
        assert pair.integrate(frame, segmentation).accepted
    logger = ListLogger()
    # chunks of 2 steps: ready (at 0.6 x 6 steps) in the chunk that ends at step 4, done at 6
    worker = started(TrainingWorker(session, TrainingWorkerConfig(chunk_steps=2), logger))
    try:
        done = wait_for_state(worker, TrainingState.DONE)
        assert done.ready and done.progress.field_restarts == 0
        first_box = done.progress.box
        # The robot drove 4 m along the wall: its view lies beyond the first box.
        rgb, depth, ids = helpers.render(200)
        stamp = helpers.NS_PER_S * 30
        assert pair.integrate(RgbdFrame(stamp, rgb, depth, helpers.camera_pose(200),
                                        helpers.INTRINSICS),
                              helpers.segmentation(ids, stamp)).accepted
        assert helpers.wait_until(lambda: worker.status().progress.field_restarts == 1, 60.0)
        done = wait_for_state(worker, TrainingState.DONE)
        grown_min, grown_max = done.progress.box.bounds_m
        first_min, first_max = first_box.bounds_m
        assert done.progress.step == 6 and grown_max[0] > first_max[0] + 1.0
        assert session.layer.serving_trainer is session.layer.trainer
    finally:
        worker.stop()
    text = logger.text()
    assert f"field restart 1 on a grown scene box (a keyframe sees beyond it): {first_box} -> " \
        in text
    assert "field restarted on the grown box ready at step" in text
    assert "restarted 1x on a grown box" in text  # the DONE summary


def test_worker_failure_is_reported_and_start_retries(monkeypatch):
    session, pair = refined_session(total_steps=6)
    for frame, segmentation in scene_frames(3):
        pair.integrate(frame, segmentation)
    original = session.train
    monkeypatch.setattr(session, "train", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("out of memory")))
    logger = ListLogger()
    worker = started(TrainingWorker(session, TrainingWorkerConfig(), logger))
    try:
        failed = wait_for_state(worker, TrainingState.FAILED)
        assert "RuntimeError: out of memory" in failed.error
        monkeypatch.setattr(session, "train", original)
        assert worker.request_training().state == TrainingState.TRAINING
        assert wait_for_state(worker, TrainingState.DONE).progress.step == 6
    finally:
        worker.stop()
    assert any(level == "error" and "out of memory" in text for level, text in logger.lines)


def test_worker_yields_to_waiting_frames():
    """While frames wait, a chunk is followed by a pause of chunk time * (1 - share) / share."""
    session, pair = refined_session(total_steps=1000)
    for frame, segmentation in scene_frames(3):
        pair.integrate(frame, segmentation)
    pending = threading.Event()
    pending.set()
    calls: list[float] = []
    original = session.train

    def timed_train(num_steps, deadline_s=None):
        calls.append(time.monotonic())
        return original(1, deadline_s)

    session.train = timed_train
    worker = started(TrainingWorker(session, TrainingWorkerConfig(max_share=0.2), ListLogger(),
                                    frames_waiting=lambda: int(pending.is_set())))
    try:
        assert helpers.wait_until(lambda: len(calls) >= 3, 60.0)
        gaps = np.diff(calls[:3])
        pending.clear()  # nothing waits: chunks follow each other
        count = len(calls)
        assert helpers.wait_until(lambda: len(calls) >= count + 3, 60.0)
        free_gaps = np.diff(calls[count:count + 3])
    finally:
        worker.stop()
    # with a 20 % share, each gap is at least 5x the chunk's own time
    assert np.median(gaps) > 2.5 * np.median(free_gaps), (gaps, free_gaps)


def test_worker_pauses_while_integration_falls_behind():
    """With a backlog of ``pause_backlog_frames`` frames the worker does not train at all."""
    session, pair = refined_session(total_steps=1000)
    for frame, segmentation in scene_frames(3):
        pair.integrate(frame, segmentation)
    waiting = [5]
    worker = started(TrainingWorker(session, TrainingWorkerConfig(pause_backlog_frames=3),
                                    ListLogger(), frames_waiting=lambda: waiting[0]))
    try:
        time.sleep(1.5)
        assert session.progress().step == 0  # a backlog: no step
        waiting[0] = 0
        assert helpers.wait_until(lambda: session.progress().step > 0, 60.0)
    finally:
        worker.stop()


# ---- the nodes ---------------------------------------------------------------------------------
def sensor_topics(graph) -> dict[str, str]:
    return {"input.topics.rgb": graph.topic("rgb"), "input.topics.depth": graph.topic("depth"),
            "input.topics.camera_info": graph.topic("camera_info"),
            "input.topics.pose": graph.topic("pose"),
            "input.topics.segmentation": graph.topic("segmentation")}


def make_instant(graph, name: str, **overrides) -> InstantSemanticsNode:
    params = {**sensor_topics(graph), "planner_api.serve": False, "output.rate_hz": 10.0,
              "diagnostics_period_s": 0.2, "queue_size": 50, **overrides}
    node = InstantSemanticsNode(
        context=graph.context, parameter_overrides=[Parameter(k, value=v)
                                                    for k, v in params.items()],
        cli_args=["--ros-args", "-r", f"__node:={name}"])
    graph.add(node)
    return node


def make_mapper(graph, namespace: str, name: str, instant_name: str = "",
                **overrides) -> MapperNode:
    """A mapper node; its prior is the instant node ``instant_name`` of this process (or, with
    ``prior.source: topics`` in ``overrides``, that node's topics)."""
    params = {"planner_api.namespace": namespace, "planner_api.discovery_wait_s": 0.0,
              "output.rate_hz": 10.0, "diagnostics_period_s": 0.2, "queue_size": 50,
              "prior.instant_node": instant_name or "instant_semantics_node",
              "training.autostart": False, "training.chunk_steps": 5, **sensor_topics(graph),
              **SMALL_MAP, **overrides}
    node = MapperNode(context=graph.context,
                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
                      cli_args=["--ros-args", "-r", f"__node:={name}"])
    graph.add(node)
    return node


def control(graph, node, command, extra_steps: int = 0):
    return graph.call(TrainingControl, f"/{node.get_name()}/training_control",
                      TrainingControl.Request(command=command, extra_steps=extra_steps))


class DiagnosticsProbe:
    def __init__(self, graph, name: str):
        self.values: list[dict[str, str]] = []
        self._name = name
        self._sub = graph.probe.create_subscription(DiagnosticArray, "/diagnostics",
                                                    self._on_msg, 10)

    def _on_msg(self, msg):
        for status in msg.status:
            if status.name == self._name:
                self.values.append({kv.key: kv.value for kv in status.values})

    def latest(self) -> dict[str, str]:
        return self.values[-1] if self.values else {}


@pytest.fixture(scope="module")
def mapper():
    """An instant node and a mapper node deriving from it (training not started), after 12
    frames of the scene."""
    prefix = f"/pm_mapper_{os.getpid()}"
    graph = helpers.NodeGraph(prefix)
    instant = make_instant(graph, "fixture_instant")
    node = make_mapper(graph, prefix + "/api", "fixture_mapper", "fixture_instant")
    diagnostics = DiagnosticsProbe(graph, node.get_name())
    try:
        assert autostart(instant) and autostart(node)
        assert node.prior_mode == "colocated"
        graph.wait_for_subscribers(instant.get_name())
        for i in range(12):
            graph.publish(helpers.frame_messages(i))
        assert helpers.wait_until(lambda: node.session.snapshot.num_frames == 12, 60.0), \
            (instant.stats.counters(), instant.stats.problems.counts,
             instant.session.snapshot.num_frames, node.session.snapshot.num_frames)
        yield graph, node, prefix + "/api", diagnostics, instant
    finally:
        node.release(save=False)
        instant.release(save=False)
        graph.shutdown()


def instance_ids(graph, api) -> dict[int, str]:
    answer = graph.call(ListInstances, f"{api}/list_instances", ListInstances.Request())
    assert answer.success, answer.message
    return {i.id: i.label for i in answer.instances}


def test_the_stream_is_integrated_once(mapper):
    graph, node, _, diagnostics, instant = mapper
    # The mapper has no input of its own: every frame went into the instant map, once, and
    # every one was offered to the refined layer as a keyframe candidate.
    assert node.input is None and node.session.layer.prior.session is instant.session
    assert instant.stats.counters()["frames_integrated"] == 12
    assert instant.session.stats.frames_accepted == 12
    assert node.stats.counters()["keyframes_kept"] == 12 == len(node.session.layer.store)
    assert helpers.wait_until(lambda: diagnostics.latest().get("prior_source") == "colocated")


@pytest.mark.slow
def test_answers_from_the_prior_then_the_field_with_the_same_ids(mapper, tmp_path):
    graph, node, api, diagnostics, instant = mapper
    status = control(graph, node, TrainingControl.Request.STATUS)
    assert status.success and status.state == "stopped" and not status.ready
    assert status.step == 0 and status.total_steps == 100 and status.num_keyframes == 12
    before = instance_ids(graph, api)  # the prior (the co-located instant map)
    assert sorted(before.values()) == ["box", "wall"]
    assert diagnostics.latest().get("answers_from") == "prior"
    # the newest frame in what is served (diagnostics come every 0.2 s)
    assert helpers.wait_until(
        lambda: diagnostics.latest().get("snapshot_stamp_s") == f"{1.0 + 0.1 * 11:.3f}", 5.0)

    started_ = control(graph, node, TrainingControl.Request.START)
    assert started_.success and started_.state == "training", started_.message
    assert helpers.wait_until(lambda: diagnostics.latest().get("answers_from") == "field", 120)
    after = instance_ids(graph, api)
    assert after == before  # the tokens kept the prior's ids
    values = diagnostics.latest()
    assert values["field_ready"] == "true" and int(values["training_step"]) >= 60
    assert int(values["training_tokens"]) >= 1 and "loss.total" in values
    assert values["field_restarts"] == "0" and values["field_box"].endswith(" m")
    assert values["training_device"] == str(resolve_device("auto"))
    assert values["planner_api"] == "served"

    box = graph.call(QueryObjects, f"{api}/query_objects", QueryObjects.Request(query="box"))
    assert box.success and [i.label for i in box.instances] == ["box"], box.message
    assert box.instances[0].centroid.z == pytest.approx(helpers.BOX_Z_M, abs=0.1)
    meshes = []
    sub = graph.probe.create_subscription(PanopticMesh, f"{api}/mesh", meshes.append,
                                          LATCHED_MAP_QOS)
    try:
        assert helpers.wait_until(lambda: meshes, 10.0)
    finally:
        graph.probe.destroy_subscription(sub)
    assert meshes[-1].source == "refined"
    assert {helpers.WALL_ID, helpers.BOX_ID} <= set(np.asarray(meshes[-1].label_ids).tolist())

    stopped = control(graph, node, TrainingControl.Request.STOP)
    assert stopped.success and stopped.state == "stopped"
    step = stopped.step
    time.sleep(0.5)
    assert control(graph, node, TrainingControl.Request.STATUS).step == step  # no more steps

    path = tmp_path / "refined.npz"
    assert graph.call(SaveMap, f"{api}/save_map", SaveMap.Request(path=str(path))).success
    assert graph.call(Trigger, f"{api}/reset", Trigger.Request()).success
    assert instance_ids(graph, api) == {}
    assert instant.session.num_frames == 0  # the reset of the served map empties the prior
    reset = control(graph, node, TrainingControl.Request.STATUS)
    assert reset.step == 0 and not reset.ready and reset.num_keyframes == 0
    loaded = graph.call(LoadMap, f"{api}/load_map", LoadMap.Request(path=str(path)))
    assert loaded.success, loaded.message
    restored = control(graph, node, TrainingControl.Request.STATUS)
    assert restored.ready and restored.step == step and restored.num_keyframes == 12
    assert instance_ids(graph, api) == before
    assert instant.session.num_frames == 12  # one file held the instant map too
    assert node.session.serves_field


def test_training_control_rejects_bad_requests(mapper):
    graph, node, _, _, _ = mapper
    bad = control(graph, node, 7)
    assert not bad.success and "command" in bad.message and "7" in bad.message
    extra = control(graph, node, TrainingControl.Request.STOP, extra_steps=5)
    assert not extra.success and "extra_steps" in extra.message


def test_one_planner_endpoint_with_both_nodes():
    """The launch plan's settings: the mapper serves, the instant node keeps its map private."""
    prefix = f"/pm_pair_{os.getpid()}"
    api = prefix + "/api"
    graph = helpers.NodeGraph(prefix)
    instant = make_instant(graph, "pair_instant", **{"planner_api.namespace": api})
    mapper_node = make_mapper(graph, api, "pair_mapper", "pair_instant",
                              **{"planner_api.discovery_wait_s": 1.0})
    try:
        assert autostart(instant) and autostart(mapper_node)
        assert instant.api is None and mapper_node.api is not None
        assert instant.outputs.namespace == "~" and mapper_node.outputs.namespace == api
        assert helpers.wait_until(lambda: servers_of(graph.probe, f"{api}/query_objects")
                                  == [mapper_node.get_fully_qualified_name()], 10.0)
        names = dict(graph.probe.get_topic_names_and_types())
        assert "/pair_instant/mesh" in names and f"{api}/mesh" in names
        assert "/pair_instant/instance_table" in names
        graph.wait_for_subscribers("both")
        graph.publish(helpers.frame_messages(0))
        assert helpers.wait_until(lambda: instant.session.snapshot.num_frames == 1
                                  and mapper_node.session.snapshot.num_frames == 1, 20.0)
    finally:
        for node in (mapper_node, instant):
            node.release(save=False)
        graph.shutdown()


def test_an_empty_pair_saves_and_a_relaunched_pair_loads_it(tmp_path):
    """Issue 16 through the mapper's services: the empty refined map (field not started) of a
    co-located pair saves, loads, and loads at start in a relaunched pair."""
    prefix = f"/pm_empty_pair_{os.getpid()}"
    api = prefix + "/api"
    graph = helpers.NodeGraph(prefix)
    path = tmp_path / "empty_pair.npz"
    try:
        instant = make_instant(graph, "empty_instant")
        mapper_node = make_mapper(graph, api, "empty_mapper", "empty_instant")
        assert autostart(instant) and autostart(mapper_node)
        saved = graph.call(SaveMap, f"{api}/save_map", SaveMap.Request(path=str(path)))
        assert saved.success, saved.message
        loaded = graph.call(LoadMap, f"{api}/load_map", LoadMap.Request(path=str(path)))
        assert loaded.success, loaded.message
        for node in (mapper_node, instant):
            node.release(save=False)
        instant = make_instant(graph, "empty_instant2")
        mapper_node = make_mapper(graph, api, "empty_mapper2", "empty_instant2",
                                  load_on_start_path=str(path))
        assert autostart(instant) and autostart(mapper_node)
        assert instance_ids(graph, api) == {}
        assert control(graph, mapper_node, TrainingControl.Request.STATUS).num_keyframes == 0
        for node in (mapper_node, instant):
            node.release(save=False)
    finally:
        graph.shutdown()


def test_restart_and_resume_keeps_the_instance_ids(tmp_path):
    """Save the map, stop the pair, relaunch it with the map loaded, feed the rest of the
    stream: the ids served before the restart are still served for the same objects."""
    prefix = f"/pm_resume_{os.getpid()}"
    api = prefix + "/api"
    graph = helpers.NodeGraph(prefix)
    path = tmp_path / "resume.npz"
    try:
        instant = make_instant(graph, "resume_instant")
        mapper_node = make_mapper(graph, api, "resume_mapper", "resume_instant",
                                  save_on_shutdown_path=str(path))
        assert autostart(instant) and autostart(mapper_node)
        graph.wait_for_subscribers("both")
        for i in range(6):
            graph.publish(helpers.frame_messages(i))
        assert helpers.wait_until(lambda: mapper_node.session.snapshot.num_frames == 6, 60.0), \
            str((instant.stats.counters(), instant.stats.problems.counts, mapper_node.session.snapshot.num_frames))
        before = graph.call(ListInstances, f"{api}/list_instances", ListInstances.Request())
        for node in (mapper_node, instant):
            node.release(save=True)  # what Ctrl-C does: the mapper saves the whole map
        assert path.is_file()
        instant = make_instant(graph, "resume_instant2")
        mapper_node = make_mapper(graph, api, "resume_mapper2", "resume_instant2",
                                  load_on_start_path=str(path))
        assert autostart(instant) and autostart(mapper_node)
        assert instant.session.num_frames == 6  # the instant map came back with the file
        # the publishers still count the released nodes' subscriptions for a while: wait until
        # the new node's own subscriptions are matched
        sensors = {graph.topic(name) for name in helpers.TOPICS}
        assert helpers.wait_until(lambda: all(sub.get_publisher_count() > 0
                                              for sub in instant._subscriptions
                                              if sub.topic_name in sensors), 30.0)
        for i in range(6, 12):
            graph.publish(helpers.frame_messages(i))
        assert helpers.wait_until(lambda: mapper_node.session.snapshot.num_frames == 12, 60.0), \
            str((instant.stats.counters(), instant.stats.problems.counts,
                 mapper_node.session.snapshot.num_frames))
        after = {i.id: i for i in graph.call(ListInstances, f"{api}/list_instances",
                                             ListInstances.Request()).instances}
        for old in before.instances:
            new = after.get(old.id)
            assert new is not None and new.label == old.label, (old.id, old.label)
            if old.is_thing:  # the same object: its centre stays within a few centimetres
                moved = np.hypot(new.centroid.x - old.centroid.x,
                                 new.centroid.y - old.centroid.y)
                assert moved < 0.15, (old.id, moved)
        for node in (mapper_node, instant):
            node.release(save=False)
    finally:
        graph.shutdown()


def test_a_colocated_prior_that_is_missing_fails_configure():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = MapperNode(context=context, parameter_overrides=[
            Parameter("prior.source", value="colocated"),
            Parameter("prior.instant_node", value="nobody_here")])
        assert not autostart(node)
        node.release(save=False)
        node.destroy_node()
    finally:
        context.try_shutdown()


@pytest.mark.slow
def test_a_mapper_elsewhere_takes_its_prior_from_the_instant_topics(tmp_path):
    """prior.source: topics (a GPU host): the instant node publishes its mesh and instance
    table, the mapper keeps keyframes from the sensor stream and derives from what it receives;
    a saved map holds the received prior and loads in a fresh mapper."""
    prefix = f"/pm_remote_{os.getpid()}"
    api = prefix + "/api"
    graph = helpers.NodeGraph(prefix)
    instant = make_instant(graph, "remote_instant")
    remote = make_mapper(graph, api, "remote_mapper", **{
        "prior.source": "topics", "prior.mesh_topic": "/remote_instant/mesh",
        "prior.instance_table_topic": "/remote_instant/instance_table"})
    try:
        assert autostart(instant) and autostart(remote)
        assert remote.prior_mode == "topics"
        graph.wait_for_subscribers("both")
        for i in range(6):
            graph.publish(helpers.frame_messages(i))
        assert helpers.wait_until(lambda: instant.session.snapshot.num_frames == 6, 20.0)
        # the mapper's snapshot is the received prior: mesh and instance table
        assert helpers.wait_until(
            lambda: sorted(instance_ids(graph, api).values()) == ["box", "wall"], 20.0)
        assert helpers.wait_until(
            lambda: remote.session.snapshot.mesh.num_vertices
            == instant.session.snapshot.mesh.num_vertices > 0, 20.0)
        counters = remote.stats.counters()
        assert counters.get("keyframes_kept", 0) == len(remote.session.layer.store) >= 3
        assert "frames_integrated" not in counters  # nothing integrated here
        path = tmp_path / "remote.npz"
        assert graph.call(SaveMap, f"{api}/save_map", SaveMap.Request(path=str(path))).success
        ids = instance_ids(graph, api)
    finally:
        for node in (remote, instant):
            node.release(save=False)
        graph.shutdown()
    graph = helpers.NodeGraph(prefix)
    fresh = make_mapper(graph, api, "fresh_mapper", **{
        "prior.source": "topics", "load_on_start_path": str(path)})
    try:
        assert autostart(fresh)
        assert instance_ids(graph, api) == ids
        assert len(fresh.session.layer.store) >= 3
    finally:
        fresh.release(save=False)
        graph.shutdown()
