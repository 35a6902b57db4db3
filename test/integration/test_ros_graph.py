"""End to end over DDS: player -> segmenter (replay) -> instant semantics node, in separate
processes started by the pip launcher from the launch plan, on a short synthetic scene.

A client in this process checks the planner services against the scene's ground truth, takes
the latched mesh as a late subscriber, sends bad input through the topics, and finally stops the
graph with SIGINT (the instant node saves its map on shutdown).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from std_srvs.srv import Trigger

from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.io.ply import read_ply
from panoptic_mapper.core.io.resources import config_path
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import create_map
from panoptic_mapper.core.types import CameraIntrinsics, PanopticSegmentation2D
from panoptic_mapper.msg import PanopticMesh
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.graph_client import GraphClient
from panoptic_mapper.runtime.launch_plan import plan
from panoptic_mapper.ros.panoptic_conversions import segmentation_msg_from_core
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS, SENSOR_QOS
from panoptic_mapper.srv import ExportMesh, ListInstances, LoadMap, QueryObjects, SaveMap
from panoptic_mapper.tools.launch import GraphProcesses, node_commands, player_command

pytestmark = [pytest.mark.slow, pytest.mark.ros]

API = "/panoptic_mapper"
FRAMES, RATE_HZ = 40, 10.0
MIN_VISIBLE_FRACTION, MIN_VISIBLE_FRAMES = 0.015, 5
BOX_MARGIN_M = 0.3


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A clean-segmentation synthetic scene (dataset folder + bag), 40 frames at 320x240."""
    out = tmp_path_factory.mktemp("ros_graph") / "scene"
    result = subprocess.run(
        [sys.executable, "-m", "panoptic_mapper.tools.cli", "make-scene", "--seed", "2",
         "--frames", str(FRAMES), "--rate", str(RATE_HZ), "--scale", "0.5", "--noise",
         "clean", "--no-progress", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def ground_truth(scene):
    """GT thing instances seen well: {gt id: (label, bbox centre, bbox size)}."""
    info = {i["id"]: i for i in json.loads((scene / "scene.json").read_text())["instances"]}
    seen: dict[int, int] = {}
    for sample in open_dataset(scene):
        ids, counts = np.unique(sample.ground_truth.instance_ids, return_counts=True)
        for gt_id, count in zip(ids.tolist(), counts.tolist()):
            if gt_id and count >= MIN_VISIBLE_FRACTION * sample.ground_truth.instance_ids.size:
                seen[gt_id] = seen.get(gt_id, 0) + 1
    visible = {gt_id: (info[gt_id]["label"], np.array(info[gt_id]["bbox_center_m"]),
                       np.array(info[gt_id]["bbox_size_m"]))
               for gt_id, frames in seen.items() if frames >= MIN_VISIBLE_FRAMES}
    assert len(visible) >= 3, "scene too sparse for the test"
    return visible


def wait_until(predicate, timeout_s: float, period_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return False


@pytest.fixture(scope="module")
def graph(scene, tmp_path_factory):
    """The graph after the whole bag was played and integrated."""
    work = tmp_path_factory.mktemp("graph")
    planned = plan({"label_file": str(scene / "labels.yaml"), "with_mapper": "false"},
                   str(config_path("mapper.yaml")))
    for node in planned:
        if node.spec.key == "instant":
            # a queue that holds the whole bag: this test checks the map, not the throughput
            node.overrides.update({"diagnostics_period_s": 0.5, "output.rate_hz": 2.0,
                                   "queue_size": FRAMES,
                                   "save_on_shutdown_path": str(work / "shutdown_map.npz")})
    processes = GraphProcesses(node_commands(planned, work), log=None)
    probe = GraphClient("ros_graph_probe")
    try:
        assert processes.wait_for_line("instant_semantics_node", "active: listening", 180), \
            "".join(processes.output["instant_semantics_node"])
        player = processes.start("player", player_command(str(scene / "bag"), 1.0, planned))
        assert player.wait(timeout=180) == 0, "".join(processes.output["player"])
        assert probe.wait_for_idle("instant_semantics_node", 180), \
            probe.diagnostics("instant_semantics_node")
        yield processes, probe, work
    finally:
        probe.shutdown()
        processes.stop()


def near(instance, center, size) -> bool:
    c = np.array([instance.centroid.x, instance.centroid.y, instance.centroid.z])
    return bool(np.all(np.abs(c - center) <= size / 2 + BOX_MARGIN_M))


def test_instances_match_the_ground_truth(graph, ground_truth, scene):
    _, probe, _ = graph
    answer = probe.call(ListInstances, "list_instances", ListInstances.Request(things_only=True))
    assert answer.success, answer.message
    scene_labels = {label for label, _, _ in ground_truth.values()} | {
        i["label"] for i in json.loads((scene / "scene.json").read_text())["instances"]}
    assert {i.label for i in answer.instances} <= scene_labels  # no hallucinated class
    found = [gt for gt, (label, center, size) in ground_truth.items()
             if any(i.label == label and near(i, center, size) for i in answer.instances)]
    assert len(found) >= 0.7 * len(ground_truth), (found, ground_truth, answer.instances)


def test_query_objects_finds_the_most_common_class(graph, ground_truth):
    _, probe, _ = graph
    labels = [label for label, _, _ in ground_truth.values()]
    label = max(set(labels), key=labels.count)
    answer = probe.call(QueryObjects, "query_objects", QueryObjects.Request(query=label))
    assert answer.success, answer.message
    assert answer.instances and all(i.label == label for i in answer.instances)
    best = answer.instances[0]
    assert any(near(best, c, s) for lab, c, s in ground_truth.values() if lab == label)
    assert list(answer.instances) == sorted(answer.instances, key=lambda i: -i.score)


def test_late_subscriber_gets_the_mesh_and_export_matches(graph, tmp_path):
    _, probe, _ = graph
    meshes = []
    sub = probe.node.create_subscription(PanopticMesh, f"{API}/mesh", meshes.append,
                                         LATCHED_MAP_QOS)
    try:
        assert wait_until(lambda: meshes, 20)
    finally:
        probe.node.destroy_subscription(sub)
    exported = probe.call(ExportMesh, "export_mesh",
                          ExportMesh.Request(path=str(tmp_path / "mesh.ply")))
    assert exported.success, exported.message
    assert len(meshes[-1].vertices) == 3 * exported.num_vertices > 0
    ply = read_ply(tmp_path / "mesh.ply")
    registry = LabelRegistry.default()
    assert set(ply.label_ids.tolist()) - {0} <= {lab.id for lab in registry}


def test_save_reset_load_round_trip(graph, tmp_path):
    _, probe, _ = graph
    before = probe.call(ListInstances, "list_instances", ListInstances.Request())
    saved = probe.call(SaveMap, "save_map", SaveMap.Request(path=str(tmp_path / "map.npz")))
    assert saved.success, saved.message
    assert probe.call(Trigger, "reset", Trigger.Request()).success
    assert probe.call(ListInstances, "list_instances", ListInstances.Request()).instances == []
    loaded = probe.call(LoadMap, "load_map", LoadMap.Request(path=str(tmp_path / "map.npz")))
    assert loaded.success, loaded.message
    after = probe.call(ListInstances, "list_instances", ListInstances.Request())
    assert [(i.id, i.label) for i in after.instances] == \
        [(i.id, i.label) for i in before.instances]


def bad_frame(stamp_ns: int) -> dict[str, object]:
    """A complete 4x4 frame whose colour image has a depth encoding (32FC1)."""
    frame_id = "camera_color_optical_frame"
    intrinsics = CameraIntrinsics(width=4, height=4, fx=3.0, fy=3.0, cx=1.5, cy=1.5)
    empty = PanopticSegmentation2D.empty(4, 4, stamp_ns)
    return {
        "/camera/color/image_raw": conv.image_msg_from_array(
            np.zeros((4, 4), np.float32), "32FC1", stamp_ns, frame_id),
        "/camera/depth/image_raw": conv.image_msg_from_depth(np.ones((4, 4), np.float32),
                                                             stamp_ns, frame_id),
        "/camera/color/camera_info": conv.camera_info_msg_from_intrinsics(intrinsics, stamp_ns,
                                                                          frame_id),
        "/camera/pose": conv.pose_stamped_msg_from_transform(
            conv.StampedTransform(np.eye(4), "map", frame_id, stamp_ns)),
        "/panoptic/segmentation": segmentation_msg_from_core(empty, frame_id),
    }


def test_bad_input_is_logged_once_and_the_node_keeps_serving(graph):
    processes, probe, _ = graph
    frames = [bad_frame(10**12 + k * 10**8) for k in range(3)]  # newer than the bag
    publishers = {topic: probe.node.create_publisher(type(msg), topic, SENSOR_QOS)
                  for topic, msg in frames[0].items()}
    status = lambda: probe.diagnostics("instant_semantics_node")  # noqa: E731
    try:
        assert wait_until(lambda: all(p.get_subscription_count() for p in publishers.values()),
                          20)
        for frame in frames:
            for topic, msg in frame.items():
                publishers[topic].publish(msg)
        assert wait_until(lambda: int(status().get("problem.encoding", 0)) == 3, 30), status()
    finally:
        for publisher in publishers.values():
            probe.node.destroy_publisher(publisher)
    log = "".join(processes.output["instant_semantics_node"])
    assert log.count("[encoding]") == 1
    answer = probe.call(ListInstances, "list_instances", ListInstances.Request())
    assert answer.success and answer.instances
    assert processes.exited() == {"player": 0}


def test_sigint_stops_cleanly_and_saves_the_map(graph, scene):
    processes, probe, work = graph
    count = len(probe.call(ListInstances, "list_instances", ListInstances.Request()).instances)
    codes = processes.stop()
    assert codes["instant_semantics_node"] == 0 and codes["segmenter_node"] == 0, codes
    log = "".join(processes.output["instant_semantics_node"])
    assert "map saved to" in log
    restored = create_map("instant", LabelRegistry.from_yaml(scene / "labels.yaml"))
    restored.load(work / "shutdown_map.npz")
    assert len(restored.get_instances()) == count
