"""The instant node follows loop corrections from a nav_msgs/Path topic; bad ones are refused."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from nav_msgs.msg import Path as PathMsg
from rclpy.parameter import Parameter

sys.path.insert(0, str(Path(__file__).parent))
import ros_graph_helpers as helpers  # noqa: E402

from panoptic_mapper.core.mapping.pose_corrections import KeyframeCorrection  # noqa: E402
from panoptic_mapper.nodes.instant_semantics_node import InstantSemanticsNode  # noqa: E402
from panoptic_mapper.nodes.node_base import autostart  # noqa: E402
from panoptic_mapper.ros import conversions as conv  # noqa: E402
from panoptic_mapper.ros.qos import SENSOR_QOS  # noqa: E402

DRIFT_M = 0.2
"""The drifting odometry places every frame this far along +x from the truth."""


def drifted_messages(index: int) -> dict[str, object]:
    messages = helpers.frame_messages(index)
    T = helpers.camera_pose(index)  # noqa: N806
    T[0, 3] += DRIFT_M
    stamp_ns = conv.stamp_ns_from_time_msg(messages["pose"].header.stamp)
    messages["pose"] = conv.pose_stamped_msg_from_transform(
        conv.StampedTransform(T, "map", helpers.CAMERA_FRAME, stamp_ns))
    return messages


def box_centre_x(node) -> float:
    box = [i for i in node.session.snapshot.instances if i.is_thing]
    assert len(box) == 1, box
    return float(box[0].centroid_m[0]), box[0].id


def test_a_correction_moves_the_map_and_a_bad_one_is_refused():
    prefix = f"/pm_corr_{os.getpid()}"
    graph = helpers.NodeGraph(prefix)
    topic = prefix + "/slam/optimized_keyframes"
    try:
        node = InstantSemanticsNode(context=graph.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {
                **{f"input.topics.{name}": graph.topic(name) for name in helpers.TOPICS},
                "input.topics.keyframe_corrections": topic, "planner_api.serve": False,
                "output.rate_hz": 10.0, "diagnostics_period_s": 0.2, "queue_size": 50,
                "corrections.min_distance_m": 0.0}.items()])
        graph.add(node)
        assert autostart(node)
        graph.wait_for_subscribers("instant")
        corrections = graph.probe.create_publisher(PathMsg, topic, SENSOR_QOS)
        assert helpers.wait_until(lambda: corrections.get_subscription_count() > 0, 10.0)
        for i in range(6):
            graph.publish(drifted_messages(i))
        assert helpers.wait_until(lambda: node.session.snapshot.num_frames == 6, 60.0)
        drifted_x, box_id = box_centre_x(node)
        live = node.session.map
        stamps = [helpers.NS_PER_S + i * helpers.NS_PER_S // 10 for i in (0, 2, 4)]
        truth = KeyframeCorrection(2 * helpers.NS_PER_S, np.array(stamps, np.int64),
                                   np.stack([helpers.camera_pose(i) for i in (0, 2, 4)]))
        wrong_frame = conv.path_msg_from_keyframe_correction(truth, "odom")
        corrections.publish(wrong_frame)
        assert helpers.wait_until(
            lambda: node.stats.problems.counts.get("correction_frame", 0) == 1, 20.0)
        assert node.session.map is live  # refused: nothing changed
        corrections.publish(conv.path_msg_from_keyframe_correction(truth, "map"))
        assert helpers.wait_until(lambda: node.corrections.corrector.stats.applied == 1, 60.0), \
            node.corrections.corrector.stats
        assert helpers.wait_until(lambda: node.session.map is not live
                                  and abs(box_centre_x(node)[0] - (drifted_x - DRIFT_M)) < 0.03,
                                  30.0), (drifted_x, box_centre_x(node))
        assert box_centre_x(node)[1] == box_id  # the planner's id is kept
        values = node.corrections.diagnostics_values()
        assert values["corrections_applied"] == 1 and values["corrections_rejected"] == 1
        assert values["last_correction_frames"] == 6
        # the replayed (out of order) correction is refused, the node goes on
        corrections.publish(conv.path_msg_from_keyframe_correction(truth, "map"))
        assert helpers.wait_until(
            lambda: node.stats.problems.counts.get("correction", 0) == 1, 20.0)
        graph.publish(helpers.frame_messages(6))  # live poses are corrected from now on
        assert helpers.wait_until(lambda: node.session.snapshot.num_frames == 7, 30.0)
        node.release(save=False)
    finally:
        graph.shutdown()
