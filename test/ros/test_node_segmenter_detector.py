"""segmenter_node with the ``detector`` backend: a real 7-Scenes frame (rgb, depth, camera info,
pose) in, a segmentation with the chairs, the table and the floor out, with the RGB stamp and the
backend's per-frame cost in the diagnostics. Needs the model cache (``make models``) and the data
in ``../shared`` (skipped without it)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

sys.path.insert(0, str(Path(__file__).parent))
import ros_graph_helpers as helpers  # noqa: E402

from panoptic_mapper.core.io.datasets import open_dataset  # noqa: E402
from panoptic_mapper.msg import PanopticSegmentation  # noqa: E402
from panoptic_mapper.nodes.node_base import autostart  # noqa: E402
from panoptic_mapper.nodes.segmenter_node import SegmenterNode, _backend_stats  # noqa: E402
from panoptic_mapper.ros import conversions as conv  # noqa: E402
from panoptic_mapper.ros.panoptic_conversions import segmentation_from_msg  # noqa: E402
from panoptic_mapper.ros.qos import SENSOR_QOS  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def graph():
    graph = helpers.NodeGraph(f"/pm_segdet_{os.getpid()}_{time.monotonic_ns()}")
    yield graph
    graph.shutdown()


def test_detector_backend_segments_a_real_frame(graph, seven_scenes_dir):
    frame = next(iter(open_dataset(seven_scenes_dir, start=217, max_frames=1)
                      .iter_samples())).frame  # frame-000868: two chairs and the table
    gravity = [float(v) for v in np.loadtxt(seven_scenes_dir / "gravity-direction.txt")]
    p = graph.prefix
    params = {"backend": "detector", "topics.rgb": p + "/rgb", "topics.depth": p + "/depth",
              "topics.camera_info": p + "/info", "topics.pose": p + "/pose",
              "topics.output": p + "/out", "detector.stuff.gravity_in_map": gravity,
              "detector.text_matching": False}
    node = SegmenterNode(context=graph.context,
                         parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    graph.add(node)
    assert autostart(node)
    out: list = []
    graph.probe.create_subscription(PanopticSegmentation, p + "/out", out.append, SENSOR_QOS)
    pubs = {name: graph.probe.create_publisher(msg_type, p + "/" + name, SENSOR_QOS)
            for name, msg_type in (("info", CameraInfo), ("pose", PoseStamped),
                                   ("depth", Image), ("rgb", Image))}
    assert helpers.wait_until(lambda: all(pub.get_subscription_count() for pub in pubs.values()),
                              10)
    stamp = 5 * 10**9
    pubs["info"].publish(conv.camera_info_msg_from_intrinsics(frame.intrinsics, stamp, "cam"))
    pubs["pose"].publish(conv.pose_stamped_msg_from_transform(conv.StampedTransform(
        T_parent_child=frame.T_world_cam, parent_frame_id="map", child_frame_id="cam",
        stamp_ns=stamp)))
    pubs["depth"].publish(conv.image_msg_from_depth(frame.depth_m, stamp, "cam"))
    pubs["rgb"].publish(conv.image_msg_from_rgb(frame.rgb, stamp, "cam"))
    assert helpers.wait_until(lambda: out, 30), node.stats.counters()
    seg = segmentation_from_msg(out[0])
    assert seg.stamp_ns == stamp and out[0].header.frame_id == "cam"
    labels = [s.label for s in seg.segments]
    assert labels.count("chair") >= 2 and "table" in labels and "floor" in labels
    stats = _backend_stats(node._backend)
    assert stats["backend.total_ms"] > 0 and stats["backend.mask_method"] == "depth"
    assert stats["backend.num_boxes_segmented"] >= 3
    node.release()
