"""``pose_source: tf``: poses from tf where tf2_ros exists (a ROS 2 install), and a clear
refusal where it does not (the pip environment)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

sys.path.insert(0, str(Path(__file__).parent))
import ros_graph_helpers as helpers  # noqa: E402

from panoptic_mapper.nodes.instant_semantics_node import InstantSemanticsNode  # noqa: E402
from panoptic_mapper.ros import conversions as conv  # noqa: E402
from panoptic_mapper.nodes.tf_pose import TfPoseSource, tf2_available  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.mark.skipif(tf2_available(), reason="tf2_ros is installed here")
def test_tf_pose_source_is_refused_without_tf2(capfd):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = InstantSemanticsNode(context=context, parameter_overrides=[
            Parameter("input.pose_source", value="tf"),
            Parameter("planner_api.serve", value=False)])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        node.destroy_node()
    finally:
        context.try_shutdown()
    assert "tf2_ros is not installed" in capfd.readouterr().err


@pytest.mark.skipif(not tf2_available(), reason="tf2_ros is not installed (not on PyPI)")
def test_tf_lookup_returns_the_broadcast_camera_pose():
    import tf2_ros

    graph = helpers.NodeGraph()
    try:
        listener_node = graph.add(rclpy.create_node("tf_listener", context=graph.context))
        source = TfPoseSource(listener_node, "map")
        broadcaster = tf2_ros.StaticTransformBroadcaster(graph.probe)
        T = helpers.camera_pose(3)  # noqa: N806
        broadcaster.sendTransform(conv.transform_stamped_msg_from_transform(
            conv.StampedTransform(T, "map", helpers.CAMERA_FRAME, 0)))
        deadline = time.monotonic() + 10
        while True:
            try:
                found = source.lookup(helpers.CAMERA_FRAME, 0, timeout_s=0.5)
                break
            except Exception:  # noqa: BLE001 - tf data not there yet
                if time.monotonic() > deadline:
                    raise
        np.testing.assert_allclose(found, T, atol=1e-9)
    finally:
        graph.shutdown()
