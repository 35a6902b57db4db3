"""segmenter_node in-process: replay forwards checked recorded segmentations, the emulator
backend segments from ground-truth topics with the RGB stamp, a busy backend skips frames."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

sys.path.insert(0, str(Path(__file__).parent))
import ros_graph_helpers as helpers  # noqa: E402

from panoptic_mapper.core.types import PanopticSegmentation2D, Segment  # noqa: E402
from panoptic_mapper.msg import PanopticSegmentation  # noqa: E402
from panoptic_mapper.nodes.node_base import autostart  # noqa: E402
from panoptic_mapper.nodes.segmenter_node import SegmenterNode  # noqa: E402
from panoptic_mapper.ros.panoptic_conversions import (segmentation_from_msg,  # noqa: E402
                                                      segmentation_msg_from_core)
from panoptic_mapper.ros.qos import SENSOR_QOS  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def graph():
    graph = helpers.NodeGraph(f"/pm_seg_{os.getpid()}_{time.monotonic_ns()}")
    yield graph
    graph.shutdown()


def make_segmenter(graph, backend: str, **overrides) -> SegmenterNode:
    p = graph.prefix
    params = {"backend": backend, "topics.rgb": p + "/rgb", "topics.depth": p + "/depth",
              "topics.ground_truth_labels": p + "/gt_labels",
              "topics.ground_truth_instances": p + "/gt_instances",
              "topics.recorded_segmentation": p + "/recorded", "topics.output": p + "/out",
              **overrides}
    node = SegmenterNode(context=graph.context,
                         parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    graph.add(node)
    assert autostart(node)
    return node


def listen(graph, topic: str) -> list:
    received: list = []
    graph.probe.create_subscription(PanopticSegmentation, topic, received.append, SENSOR_QOS)
    return received


def publisher(graph, msg_type, topic: str):
    pub = graph.probe.create_publisher(msg_type, topic, SENSOR_QOS)
    assert helpers.wait_until(lambda: pub.get_subscription_count() > 0, 10)
    return pub


def emulator_inputs(graph):
    """Publishers of the emulator backend's inputs; returns ``publish(stamp_ns)``, which sends
    one rendered frame (GT labels and instances, depth, then RGB) with that stamp."""
    pubs = {name: publisher(graph, Image, graph.prefix + "/" + name)
            for name in ("rgb", "depth", "gt_labels", "gt_instances")}
    rgb, depth, ids = helpers.render(0)
    conv = helpers.conv

    def publish(stamp: int) -> None:
        pubs["gt_labels"].publish(conv.image_msg_from_array(ids.astype(np.uint16), "16UC1",
                                                            stamp, "cam"))
        pubs["gt_instances"].publish(conv.image_msg_from_array(
            np.zeros_like(ids, np.uint16), "16UC1", stamp, "cam"))
        pubs["depth"].publish(conv.image_msg_from_depth(depth, stamp, "cam"))
        pubs["rgb"].publish(conv.image_msg_from_rgb(rgb, stamp, "cam"))

    return publish


def test_replay_forwards_valid_segmentations_only(graph):
    node = make_segmenter(graph, "replay")
    out = listen(graph, graph.prefix + "/out")
    recorded = publisher(graph, PanopticSegmentation, graph.prefix + "/recorded")
    good = segmentation_msg_from_core(helpers.segmentation(helpers.render(0)[2], 5 * 10**8),
                                      helpers.CAMERA_FRAME)
    unknown = segmentation_msg_from_core(PanopticSegmentation2D(
        np.ones((2, 2), np.int32), (Segment(1, "unicorn", 99, True),), 6 * 10**8), "cam")
    recorded.publish(good)
    recorded.publish(unknown)
    recorded.publish(good)
    assert helpers.wait_until(lambda: len(out) == 2, 10)
    forwarded = segmentation_from_msg(out[0])
    assert forwarded.stamp_ns == 5 * 10**8 and out[0].header.frame_id == helpers.CAMERA_FRAME
    assert {s.label for s in forwarded.segments} == {"wall", "box"}
    assert helpers.wait_until(lambda: node.stats.problems.counts == {"unknown_label": 1}, 5)
    assert node.stats.counters()["frames_published"] == 2
    node.release()


def test_emulator_segments_from_ground_truth_with_the_rgb_stamp(graph):
    node = make_segmenter(graph, "emulator", emulator_level="clean")
    out = listen(graph, graph.prefix + "/out")
    pubs = {name: publisher(graph, Image, graph.prefix + "/" + name)
            for name in ("rgb", "depth", "gt_labels", "gt_instances")}
    rgb, depth, ids = helpers.render(0)
    labels = np.where(ids == 2, helpers.BOX_ID, helpers.WALL_ID).astype(np.uint16)
    instances = np.where(ids == 2, 7, 0).astype(np.uint16)
    stamp = 123 * 10**7
    conv = helpers.conv
    pubs["gt_labels"].publish(conv.image_msg_from_array(labels, "16UC1", stamp, "cam"))
    pubs["gt_instances"].publish(conv.image_msg_from_array(instances, "16UC1", stamp, "cam"))
    pubs["depth"].publish(conv.image_msg_from_depth(depth, stamp, "cam"))
    pubs["rgb"].publish(conv.image_msg_from_rgb(rgb, stamp, helpers.CAMERA_FRAME))
    assert helpers.wait_until(lambda: out, 20)
    seg = segmentation_from_msg(out[0])
    assert seg.stamp_ns == stamp and out[0].header.frame_id == helpers.CAMERA_FRAME
    by_label = {s.label: s for s in seg.segments}
    assert set(by_label) == {"wall", "box"} and by_label["box"].is_thing
    box_pixels = seg.segment_ids == by_label["box"].id
    assert (box_pixels == (ids == 2)).mean() > 0.99  # clean level: the ground truth itself
    node.release()


def test_busy_backend_skips_to_the_latest_frame(graph):
    node = make_segmenter(graph, "emulator", emulator_level="clean")
    release = threading.Event()
    segment = node._backend.segment

    def slow_segment(request):
        release.wait(10)
        return segment(request)

    node._backend.segment = slow_segment
    out = listen(graph, graph.prefix + "/out")
    publish_frame = emulator_inputs(graph)
    for k in range(5):
        publish_frame((k + 1) * 10**8)
    assert helpers.wait_until(lambda: node.stats.counters().get("frames_skipped_busy", 0) >= 3, 10)
    release.set()
    assert helpers.wait_until(lambda: len(out) >= 2, 20)
    stamps = [segmentation_from_msg(m).stamp_ns for m in out]
    assert stamps[-1] == 5 * 10**8 and len(stamps) == 5 - node.stats.counters()["frames_skipped_busy"]
    node.release()


def test_backend_exception_is_counted_and_the_worker_goes_on(graph):
    node = make_segmenter(graph, "emulator", emulator_level="clean")
    segment = node._backend.segment
    calls = []

    def flaky_segment(request):
        calls.append(request.stamp_ns)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return segment(request)

    node._backend.segment = flaky_segment
    out = listen(graph, graph.prefix + "/out")
    publish_frame = emulator_inputs(graph)
    for k in range(2):
        publish_frame((k + 1) * 10**8)
        # The first frame fails; wait for it so that the second is not skipped as busy.
        assert helpers.wait_until(lambda: len(calls) > k, 10)
    assert helpers.wait_until(lambda: len(out) >= 1, 20)
    assert node.stats.counters().get("frames_failed") == 1
    assert segmentation_from_msg(out[-1]).stamp_ns == 2 * 10**8
    assert node.stats.problems.counts.get("backend_error") == 1
    assert "RuntimeError: CUDA out of memory" in node.stats.problems.first_message("backend_error")
    node.release()


def test_model_backend_stage_costs_go_to_the_diagnostics_values():
    from types import SimpleNamespace

    from panoptic_mapper.core.segmentation.grounded_sam import GroundedSamStats
    from panoptic_mapper.nodes.segmenter_node import _backend_stats

    stats = GroundedSamStats(device="cuda", detect_ms=12.345, num_boxes_segmented=4)
    values = _backend_stats(SimpleNamespace(last_stats=stats))
    assert values["backend.device"] == "cuda" and values["backend.detect_ms"] == 12.3
    assert values["backend.num_boxes_segmented"] == 4
    assert _backend_stats(SimpleNamespace()) == {}  # replay / emulator report nothing more
