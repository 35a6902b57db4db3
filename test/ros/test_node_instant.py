"""instant_semantics_node in-process: frames in over DDS, planner services, latched outputs,
bad input counted once per kind, the single-server guard, run-time parameters.

The node and a probe node share one rclpy context and a MultiThreadedExecutor (the same wiring
as the node's process); the scene is the analytic wall + box of ``ros_graph_helpers``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker

sys.path.insert(0, str(Path(__file__).parent))
import ros_graph_helpers as helpers  # noqa: E402

from panoptic_mapper.core.io.ply import read_ply  # noqa: E402
from panoptic_mapper.msg import PanopticMesh  # noqa: E402
from panoptic_mapper.nodes.instant_semantics_node import InstantSemanticsNode  # noqa: E402
from panoptic_mapper.nodes.node_base import autostart  # noqa: E402
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS  # noqa: E402
from panoptic_mapper.srv import (ExportMesh, ListInstances, LoadMap, QueryObjects,  # noqa: E402
                                 SaveMap)

pytestmark = pytest.mark.ros


def make_node(graph, namespace: str, name: str = "", **overrides) -> InstantSemanticsNode:
    params = {"planner_api.namespace": namespace, "planner_api.discovery_wait_s": 0.0,
              "output.rate_hz": 10.0, "diagnostics_period_s": 0.2, "queue_size": 50,
              "input.topics.rgb": graph.topic("rgb"), "input.topics.depth": graph.topic("depth"),
              "input.topics.camera_info": graph.topic("camera_info"),
              "input.topics.pose": graph.topic("pose"),
              "input.topics.segmentation": graph.topic("segmentation"), **overrides}
    node = InstantSemanticsNode(
        context=graph.context, parameter_overrides=[Parameter(k, value=v)
                                                    for k, v in params.items()],
        cli_args=["--ros-args", "-r", f"__node:={name}"] if name else None)
    graph.add(node)
    return node


@pytest.fixture(scope="module")
def mapped():
    """A node that has integrated 8 good frames of the wall + box scene."""
    prefix = f"/pm_instant_{os.getpid()}"
    graph = helpers.NodeGraph(prefix)
    node = make_node(graph, prefix + "/api")
    try:
        assert autostart(node)
        graph.wait_for_subscribers(node.get_name())
        for i in range(8):
            graph.publish(helpers.frame_messages(i))
        assert helpers.wait_until(lambda: node.stats.counters().get("frames_integrated", 0) == 8)
        assert helpers.wait_until(lambda: node.session.snapshot.num_frames == 8)
        yield graph, node, prefix + "/api"
    finally:
        node.release(save=False)
        graph.shutdown()


def test_frames_are_integrated_and_listed(mapped):
    graph, node, api = mapped
    answer = graph.call(ListInstances, f"{api}/list_instances", ListInstances.Request())
    assert answer.success, answer.message
    by_label = {i.label: i for i in answer.instances}
    assert set(by_label) == {"wall", "box"}
    assert not by_label["wall"].is_thing and by_label["box"].is_thing
    box = by_label["box"]
    assert box.num_observations == 8
    # box front face at z = 1.1 m, 0.6 m wide, centred on x = 0 (the camera moved in x only)
    assert box.centroid.z == pytest.approx(helpers.BOX_Z_M, abs=0.05)
    assert box.centroid.x == pytest.approx(0.0, abs=0.05)
    assert max(box.bbox_size.x, box.bbox_size.y, box.bbox_size.z) == pytest.approx(0.6, abs=0.1)
    things = graph.call(ListInstances, f"{api}/list_instances",
                        ListInstances.Request(label="cardboard box", things_only=True))
    assert [i.label for i in things.instances] == ["box"]
    unknown = graph.call(ListInstances, f"{api}/list_instances",
                         ListInstances.Request(label="unicorn"))
    assert not unknown.success and "unicorn" in unknown.message
    assert node.stats.problems.counts == {}


def test_query_objects_answers_free_text(mapped):
    graph, node, api = mapped
    for text in ("box", "a cardboard box"):
        answer = graph.call(QueryObjects, f"{api}/query_objects", QueryObjects.Request(query=text))
        assert answer.success, answer.message
        assert [i.label for i in answer.instances] == ["box"], (text, answer.message)
        assert answer.instances[0].score >= node.config.query.min_score
    answer = graph.call(QueryObjects, f"{api}/query_objects",
                        QueryObjects.Request(query="giraffe", max_results=3))
    assert answer.success and answer.instances == []
    empty = graph.call(QueryObjects, f"{api}/query_objects", QueryObjects.Request(query=" "))
    assert not empty.success and "query" in empty.message


def test_late_subscriber_receives_the_latched_mesh(mapped):
    graph, node, api = mapped
    received = []
    sub = graph.probe.create_subscription(PanopticMesh, f"{api}/mesh", received.append,
                                          LATCHED_MAP_QOS)
    try:
        assert helpers.wait_until(lambda: received, 10.0)
        mesh = received[-1]
        assert mesh.header.frame_id == "map" and mesh.source == "instant"
        labels = set(np.asarray(mesh.label_ids).tolist())
        assert {helpers.WALL_ID, helpers.BOX_ID} <= labels
        assert len(mesh.vertices) == 3 * len(mesh.label_ids) > 0
    finally:
        graph.probe.destroy_subscription(sub)


def test_save_export_reset_load_round_trip(mapped, tmp_path):
    graph, node, api = mapped
    saved = graph.call(SaveMap, f"{api}/save_map", SaveMap.Request(path=str(tmp_path / "m.npz")))
    assert saved.success, saved.message
    exported = graph.call(ExportMesh, f"{api}/export_mesh",
                          ExportMesh.Request(path=str(tmp_path / "m.ply"), color_mode="semantic"))
    assert exported.success and exported.num_vertices > 0
    ply = read_ply(tmp_path / "m.ply")
    assert ply.num_vertices == exported.num_vertices
    assert {helpers.WALL_ID, helpers.BOX_ID} <= set(ply.label_ids.tolist())
    bad = graph.call(ExportMesh, f"{api}/export_mesh",
                     ExportMesh.Request(path=str(tmp_path / "m.ply"), color_mode="neon"))
    assert not bad.success and "color_mode" in bad.message
    before = {(i.id, i.label) for i in graph.call(
        ListInstances, f"{api}/list_instances", ListInstances.Request()).instances}
    assert graph.call(Trigger, f"{api}/reset", Trigger.Request()).success
    assert graph.call(ListInstances, f"{api}/list_instances",
                      ListInstances.Request()).instances == []
    missing = graph.call(LoadMap, f"{api}/load_map", LoadMap.Request(path=str(tmp_path / "x")))
    assert not missing.success and "not found" in missing.message
    loaded = graph.call(LoadMap, f"{api}/load_map", LoadMap.Request(path=str(tmp_path / "m.npz")))
    assert loaded.success, loaded.message
    after = {(i.id, i.label) for i in graph.call(
        ListInstances, f"{api}/list_instances", ListInstances.Request()).instances}
    assert after == before


def test_an_empty_map_saves_and_loads_through_the_services(tmp_path):
    """Issue 16: a map saved before any frame (and after a reset) loads again, through the
    planner services and through load_on_start_path; a relaunch resumes a saved map with its
    instance ids."""
    prefix = f"/pm_empty_{os.getpid()}"
    api = prefix + "/api"
    graph = helpers.NodeGraph(prefix)
    node = make_node(graph, api, "empty_map")
    try:
        assert autostart(node)
        empty = tmp_path / "empty.npz"
        saved = graph.call(SaveMap, f"{api}/save_map", SaveMap.Request(path=str(empty)))
        assert saved.success and "0 frame(s)" in saved.message, saved.message
        loaded = graph.call(LoadMap, f"{api}/load_map", LoadMap.Request(path=str(empty)))
        assert loaded.success, loaded.message
        graph.wait_for_subscribers(node.get_name())
        for i in range(4):
            graph.publish(helpers.frame_messages(i))
        assert helpers.wait_until(lambda: node.session.snapshot.num_frames == 4)
        full = tmp_path / "full.npz"
        assert graph.call(SaveMap, f"{api}/save_map", SaveMap.Request(path=str(full))).success
        listed = {(i.id, i.label) for i in graph.call(
            ListInstances, f"{api}/list_instances", ListInstances.Request()).instances}
        assert graph.call(Trigger, f"{api}/reset", Trigger.Request()).success
        after_reset = tmp_path / "reset.npz"
        assert graph.call(SaveMap, f"{api}/save_map", SaveMap.Request(path=str(after_reset))).success
        assert graph.call(LoadMap, f"{api}/load_map",
                          LoadMap.Request(path=str(after_reset))).success
    finally:
        node.release(save=False)
    relaunched = make_node(graph, api, "resumed_map", load_on_start_path=str(full))
    try:
        assert autostart(relaunched)
        assert relaunched.session.num_frames == 4
        assert {(i.id, i.label) for i in graph.call(
            ListInstances, f"{api}/list_instances", ListInstances.Request()).instances} == listed
    finally:
        relaunched.release(save=False)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a map")
    refused = make_node(graph, api, "refused_map", load_on_start_path=str(broken))
    try:
        assert not autostart(refused)  # logs the reason: not a readable map file
    finally:
        refused.release(save=False)
        graph.shutdown()


def test_mesh_colour_mode_changes_at_run_time(mapped):
    graph, node, api = mapped
    markers = []
    sub = graph.probe.create_subscription(Marker, f"{api}/mesh_marker", markers.append,
                                          LATCHED_MAP_QOS)
    try:
        assert helpers.wait_until(lambda: markers, 10.0)
        count = len(markers)
        result = node.set_parameters([Parameter("output.mesh_color_mode", value="instance")])[0]
        assert result.successful
        assert helpers.wait_until(lambda: len(markers) > count, 10.0)
        refused = node.set_parameters([Parameter("output.rate_hz", value=2.0)])[0]
        assert not refused.successful and "read-only" in refused.reason
    finally:
        graph.probe.destroy_subscription(sub)


def test_second_server_of_the_namespace_is_refused(mapped):
    graph, node, api = mapped
    other = make_node(graph, api, "second_mapper", **{"planner_api.discovery_wait_s": 2.0})
    try:
        assert autostart(other)  # it runs, but without the planner API
        assert other.api is None and node.api is not None
        assert other.outputs.namespace == "~"
    finally:
        other.release(save=False)
        graph.executor.remove_node(other)
        other.destroy_node()


def test_bad_input_is_counted_once_per_kind_and_the_node_keeps_running(capfd):
    prefix = f"/pm_bad_{os.getpid()}"
    graph = helpers.NodeGraph(prefix)
    node = make_node(graph, prefix + "/api")
    try:
        assert autostart(node)
        graph.wait_for_subscribers(node.get_name())
        for i in range(2):  # wrong colour encoding (depth-like image on the rgb topic)
            msgs = helpers.frame_messages(i)
            msgs["rgb"].encoding = "32FC1"
            graph.publish(msgs)
        msgs = helpers.frame_messages(2)  # depth of another size than the camera
        msgs["depth"] = helpers.conv.image_msg_from_depth(np.ones((60, 80), np.float32),
                                                          msgs["rgb"].header.stamp.sec * 10**9 +
                                                          msgs["rgb"].header.stamp.nanosec,
                                                          helpers.CAMERA_FRAME)
        graph.publish(msgs)
        for i in (3, 4):  # depth all NaN (REP 118 "no measurement") -> no valid depth
            msgs = helpers.frame_messages(i)
            nan = np.full(helpers.INTRINSICS.shape, np.nan, np.float32)
            stamp = helpers.NS_PER_S + i * helpers.NS_PER_S // 10
            msgs["depth"] = helpers.conv.image_msg_from_array(nan, "32FC1", stamp,
                                                              helpers.CAMERA_FRAME)
            graph.publish(msgs)
        graph.publish(helpers.frame_messages(6))
        assert helpers.wait_until(lambda: node.stats.counters().get("frames_integrated", 0) == 1)
        for _ in range(2):  # stale: older than the frame just integrated
            graph.publish(helpers.frame_messages(5))
        graph.publish(helpers.frame_messages(7))
        assert helpers.wait_until(lambda: node.stats.counters().get("frames_integrated", 0) == 2)
        assert helpers.wait_until(lambda: node.stats.problems.counts.get("stale_stamp", 0) >= 2)
        counts = node.stats.problems.counts
        assert counts["encoding"] == 2
        assert counts["size_mismatch"] == 1
        assert sum(v for k, v in counts.items() if k.startswith("frame_rejected")) == 2
        time.sleep(0.5)  # let a diagnostics period pass
    finally:
        node.release(save=False)
        graph.shutdown()
    err = capfd.readouterr().err
    assert err.count("[encoding]") == 1
    assert err.count("[size_mismatch]") == 1
    assert err.count("[stale_stamp]") == 1
    assert "input problems so far:" in err and "encoding=2" in err


@contextlib.contextmanager
def short_wait_node(tag: str):
    """A started node in its own graph that gives up on a frame's partners after 0.5 s."""
    prefix = f"/pm_{tag}_{os.getpid()}"
    graph = helpers.NodeGraph(prefix)
    node = make_node(graph, prefix + "/api", **{"sync.max_wait_s": 0.5,
                                                "sync.time_jump_back_s": 5.0})
    try:
        assert autostart(node)
        graph.wait_for_subscribers(node.get_name())
        yield graph, node
    finally:
        node.release(save=False)
        graph.shutdown()


def test_missing_camera_info_is_reported(capfd):
    with short_wait_node("nocam") as (graph, node):
        for i in range(10):  # 0.1 s apart (message and wall time): no camera_info
            msgs = helpers.frame_messages(i)
            del msgs["camera_info"]
            graph.publish(msgs)
            time.sleep(0.1)
        assert helpers.wait_until(
            lambda: node.stats.problems.counts.get("missing_camera_info", 0) >= 4, 10.0)
        assert node.stats.counters().get("frames_integrated", 0) == 0
    assert capfd.readouterr().err.count("[missing_camera_info]") == 1


def test_a_segmentation_later_than_max_wait_is_warned_about(capfd):
    with short_wait_node("late") as (graph, node):
        frames = [helpers.frame_messages(i) for i in range(10)]
        for msgs in frames:  # 0.1 s apart: the segmenter has not answered yet
            graph.publish({k: v for k, v in msgs.items() if k != "segmentation"})
            time.sleep(0.1)
        assert helpers.wait_until(
            lambda: node.stats.counters().get("sync_missing_segmentation", 0) >= 2, 10.0)
        for i in (0, 1):  # the slow segmenter's results for frames already dropped
            graph.publish({"segmentation": frames[i]["segmentation"]})
        assert helpers.wait_until(
            lambda: node.stats.problems.counts.get("late_segmentation", 0) == 2, 10.0)
        assert node.stats.counters().get("frames_integrated", 0) == 0
    err = capfd.readouterr().err
    assert err.count("[late_segmentation]") == 1  # rate-limited
    assert "raise sync.max_wait_s above" in err and "sync.max_pending above" in err


def test_segment_warnings_are_counted_by_kind():
    from panoptic_mapper.nodes.instant_semantics_node import reason_key as _reason_key

    assert _reason_key("segment 3 (label 'unicorn', label_id 0) skipped: unknown label "
                       "'unicorn'") == "segment_unknown_label"
    assert _reason_key("segment 4: is_thing=False disagrees with the registry label 'chair' "
                       "(is_thing=True); using the registry") == "segment_is_thing_mismatch"
    assert _reason_key("depth_m: no valid pixels") == "depth_m"
    assert _reason_key("something else entirely") == "other"


def test_silence_on_every_input_is_reported_once(monkeypatch):
    import panoptic_mapper.nodes.frame_input as module

    monkeypatch.setattr(module, "SILENCE_HINT_S", 0.0)
    prefix = f"/pm_silent_{os.getpid()}"
    graph = helpers.NodeGraph(prefix)
    node = make_node(graph, prefix + "/api")
    warnings = []
    try:
        assert autostart(node)
        monkeypatch.setattr(node, "get_logger",
                            lambda: type("L", (), {"warning": warnings.append,
                                                   "info": lambda *a: None})())
        node.input.hint_missing_inputs({})
        node.input.hint_missing_inputs({})
        assert len(warnings) == 1 and "nothing received on any input" in warnings[0]
        assert graph.topic("rgb") in warnings[0] and graph.topic("pose") in warnings[0]
    finally:
        node.release(save=False)
        graph.shutdown()
