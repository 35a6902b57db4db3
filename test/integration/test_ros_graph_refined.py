"""End to end over DDS with the refined map: player -> segmenter (replay) -> instant semantics
node + mapper node, in separate processes started from the launch plan's defaults, on a short
synthetic scene.

The mapper serves the planner API (the instant node does not); it answers from its prior until
the field is ready, then from the field, and the instance ids a planner saw before stay valid.
Training is started through ``~/training_control`` once the bag is mapped, so "before" is
well defined; SIGINT saves the map with its field checkpoint.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from panoptic_mapper.core.io.resources import config_path
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.refined_map import RefinedPanopticMap
from panoptic_mapper.core.types import OrientedBox
from panoptic_mapper.msg import PanopticMesh
from panoptic_mapper.ros.graph_client import GraphClient
from panoptic_mapper.runtime.launch_plan import plan
from panoptic_mapper.ros.panoptic_conversions import map_instance_from_msg
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS
from panoptic_mapper.nodes.planner_api import servers_of
from panoptic_mapper.srv import ListInstances, QueryObjects, TrainingControl
from panoptic_mapper.tools.launch import ACTIVE_LINE, GraphProcesses, node_commands, player_command

pytestmark = [pytest.mark.slow, pytest.mark.ros]

API = "/panoptic_mapper"
FRAMES = 24
TRAIN_STEPS = 150
BOX_MARGIN_M = 0.3


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("ros_graph_refined") / "scene"
    result = subprocess.run(
        [sys.executable, "-m", "panoptic_mapper.tools.cli", "make-scene", "--seed", "2",
         "--frames", str(FRAMES), "--rate", "10", "--scale", "0.5", "--noise", "clean",
         "--no-progress", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def same_object(a, b) -> bool:
    """``b``'s centre lies in ``a``'s box grown by BOX_MARGIN_M."""
    grown = OrientedBox(a.bbox.center_m, a.bbox.R_world_box, a.bbox.size_m + 2 * BOX_MARGIN_M)
    return bool(grown.contains(b.centroid_m[None])[0])


def control(probe: GraphClient, command: int) -> TrainingControl.Response:
    client = probe.node.create_client(TrainingControl, "/mapper_node/training_control")
    try:
        assert client.wait_for_service(timeout_sec=30.0)
        future = client.call_async(TrainingControl.Request(command=command))
        assert probe.wait_until(future.done, 30.0, 0.01)
        return future.result()
    finally:
        probe.node.destroy_client(client)


def things(probe: GraphClient) -> dict[int, object]:
    answer = probe.call(ListInstances, "list_instances", ListInstances.Request(things_only=True))
    assert answer.success, answer.message
    return {i.id: i for i in answer.instances}


@pytest.fixture(scope="module")
def graph(scene, tmp_path_factory):
    """The default graph (all three nodes) after the bag was mapped; training not started."""
    work = tmp_path_factory.mktemp("refined_graph")
    planned = plan({"label_file": str(scene / "labels.yaml")}, str(config_path("mapper.yaml")))
    assert [n.spec.key for n in planned] == ["segmenter", "instant", "mapper"]
    for node in planned:
        if node.spec.key in ("instant", "mapper"):
            node.overrides.update({"diagnostics_period_s": 0.5, "output.rate_hz": 2.0,
                                   "queue_size": FRAMES})
        if node.spec.key == "mapper":
            node.overrides.update({"training.autostart": False,
                                   "map.training.trainer.total_steps": TRAIN_STEPS,
                                   "save_on_shutdown_path": str(work / "refined.npz")})
    processes = GraphProcesses(node_commands(planned, work), log=None)
    probe = GraphClient("refined_graph_probe")
    try:
        for node in planned:
            assert processes.wait_for_line(node.spec.name, ACTIVE_LINE, 180), \
                "".join(processes.output[node.spec.name])
        player = processes.start("player", player_command(str(scene / "bag"), 1.0, planned))
        assert player.wait(timeout=180) == 0, "".join(processes.output["player"])
        for name in ("instant_semantics_node", "mapper_node"):
            assert probe.wait_for_idle(name, 180), (name, probe.diagnostics(name))
        yield processes, probe, work
    finally:
        probe.shutdown()
        processes.stop()


def test_mapper_serves_the_prior_then_the_field_with_the_same_ids(graph, scene):
    processes, probe, work = graph
    mapper = lambda: probe.diagnostics("mapper_node")  # noqa: E731
    assert mapper()["planner_api"] == "served"
    assert probe.diagnostics("instant_semantics_node")["planner_api"] == "not served"
    assert servers_of(probe.node, f"{API}/query_objects") == ["/mapper_node"]
    assert mapper()["answers_from"] == "prior"
    integrated = int(probe.diagnostics("instant_semantics_node")["frames_integrated"])
    assert integrated >= 0.8 * FRAMES  # a loaded machine may drop one
    # the mapper integrated nothing itself: its snapshot is the instant map's
    assert "frames_integrated" not in mapper() and mapper()["prior_source"] == "colocated"
    assert int(mapper()["snapshot_frames"]) == integrated

    before = things(probe)
    assert len(before) >= 3
    label = max({i.label for i in before.values()},
                key=lambda lab: sum(i.label == lab for i in before.values()))
    query = QueryObjects.Request(query=label)
    answer_before = probe.call(QueryObjects, "query_objects", query)
    assert answer_before.success and answer_before.instances, answer_before.message

    started = control(probe, TrainingControl.Request.START)
    assert started.success and started.state == "training", started.message
    assert probe.wait_until(lambda: mapper().get("answers_from") == "field", 120), mapper()
    status = control(probe, TrainingControl.Request.STATUS)
    assert status.ready and status.step >= 0.6 * TRAIN_STEPS and status.num_tokens >= 1

    after = things(probe)
    kept = [i for i in before if i in after and after[i].label == before[i].label]
    assert len(kept) >= 0.8 * len(before), (before.keys(), after.keys())
    for instance_id in kept:  # the same object: one's centre lies in the other's box
        a, b = (map_instance_from_msg(i[instance_id]) for i in (before, after))
        assert same_object(a, b) or same_object(b, a), (a, b)
    answer_after = probe.call(QueryObjects, "query_objects", query)
    assert answer_after.success and answer_after.instances, answer_after.message
    assert {i.id for i in answer_after.instances} & {i.id for i in answer_before.instances}

    gt_labels = {i["label"] for i in json.loads((scene / "scene.json").read_text())["instances"]}
    assert {i.label for i in after.values()} <= gt_labels  # no hallucinated class
    meshes = []
    sub = probe.node.create_subscription(PanopticMesh, f"{API}/mesh", meshes.append,
                                         LATCHED_MAP_QOS)
    try:
        assert probe.wait_until(lambda: meshes, 20)
    finally:
        probe.node.destroy_subscription(sub)
    assert meshes[-1].source == "refined" and len(meshes[-1].label_ids) > 0

    stopped = control(probe, TrainingControl.Request.STOP)
    assert stopped.success and stopped.state == "stopped"
    count = len(probe.call(ListInstances, "list_instances", ListInstances.Request()).instances)
    codes = processes.stop()
    assert codes["mapping_process"] == 0, codes  # the instant and mapper nodes' process
    assert "map saved to" in "".join(processes.output["mapping_process"])
    restored = RefinedPanopticMap(LabelRegistry.from_yaml(scene / "labels.yaml"))
    restored.load(work / "refined.npz")
    restored.update_mesh()  # the mesh (and so the instances) as of the last update
    assert restored.is_ready and restored.progress().step == stopped.step
    assert len(restored.get_instances()) == count
