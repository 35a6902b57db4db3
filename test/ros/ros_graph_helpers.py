"""Helpers of the node tests: a tiny analytic scene as ROS messages, and a test-side node.

The scene: a wall (stuff, label ``wall``) at z = 1.5 m in front of a camera looking along +z,
and a box (thing, label ``box``) whose 0.6 m front face is at z = 1.1 m, centred on the
optical axis. Frames move the camera sideways by a few centimetres each. Images are small
(160 x 120) so the nodes integrate them in milliseconds.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import MultiThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image

from panoptic_mapper.core.types import CameraIntrinsics, PanopticSegmentation2D, Segment
from panoptic_mapper.msg import PanopticSegmentation
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.graph_client import call_service
from panoptic_mapper.ros.panoptic_conversions import segmentation_msg_from_core
from panoptic_mapper.ros.qos import SENSOR_QOS

INTRINSICS = CameraIntrinsics(width=160, height=120, fx=120.0, fy=120.0, cx=79.5, cy=59.5)
WALL_Z_M, BOX_Z_M, BOX_HALF_M = 1.5, 1.1, 0.3
WALL_ID, BOX_ID = 1, 20
CAMERA_FRAME = "camera_color_optical_frame"
NS_PER_S = 1_000_000_000


def camera_pose(index: int) -> np.ndarray:
    """T_map_cam of frame ``index``: identity rotation, x = 2 cm per frame."""
    T = np.eye(4)  # noqa: N806
    T[0, 3] = 0.02 * index
    return T


def render(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb [H, W, 3] uint8, depth [H, W] float32 m, segment ids [H, W]: 1 wall, 2 box)."""
    h, w = INTRINSICS.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    ray_x = (u - INTRINSICS.cx) / INTRINSICS.fx
    ray_y = (v - INTRINSICS.cy) / INTRINSICS.fy
    cam_x = camera_pose(index)[0, 3]
    on_box = (np.abs(cam_x + ray_x * BOX_Z_M) <= BOX_HALF_M) & (np.abs(ray_y * BOX_Z_M)
                                                               <= BOX_HALF_M)
    depth = np.where(on_box, BOX_Z_M, WALL_Z_M).astype(np.float32)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[...] = (200, 200, 210)
    rgb[on_box] = (180, 40, 160)
    ids = np.where(on_box, 2, 1).astype(np.int32)
    return rgb, depth, ids


def segmentation(ids: np.ndarray, stamp_ns: int) -> PanopticSegmentation2D:
    return PanopticSegmentation2D(ids, (Segment(1, "wall", WALL_ID, False, 0.9, "wall"),
                                        Segment(2, "box", BOX_ID, True, 0.9, "box")), stamp_ns)


def frame_messages(index: int, stamp_ns: int | None = None) -> dict[str, object]:
    """The five messages of frame ``index`` (stamp = index * 0.1 s + 1 s unless given)."""
    stamp_ns = NS_PER_S + index * NS_PER_S // 10 if stamp_ns is None else stamp_ns
    rgb, depth, ids = render(index)
    pose = conv.StampedTransform(camera_pose(index), "map", CAMERA_FRAME, stamp_ns)
    return {
        "rgb": conv.image_msg_from_rgb(rgb, stamp_ns, CAMERA_FRAME),
        "depth": conv.image_msg_from_depth(depth, stamp_ns, CAMERA_FRAME),
        "camera_info": conv.camera_info_msg_from_intrinsics(INTRINSICS, stamp_ns, CAMERA_FRAME),
        "pose": conv.pose_stamped_msg_from_transform(pose),
        "segmentation": segmentation_msg_from_core(segmentation(ids, stamp_ns), CAMERA_FRAME),
    }


TOPICS = {"rgb": ("/camera/color/image_raw", Image),
          "depth": ("/camera/depth/image_raw", Image),
          "camera_info": ("/camera/color/camera_info", CameraInfo),
          "pose": ("/camera/pose", PoseStamped),
          "segmentation": ("/panoptic/segmentation", PanopticSegmentation)}


class NodeGraph:
    """Nodes spun by one MultiThreadedExecutor in a background thread, plus a probe node with
    publishers on the sensor topics (``prefix`` keeps parallel tests apart)."""

    def __init__(self, prefix: str = ""):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.prefix = prefix
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.probe = rclpy.create_node("probe", context=self.context)
        self.executor.add_node(self.probe)
        self.publishers = {name: self.probe.create_publisher(msg_type, prefix + topic,
                                                             SENSOR_QOS)
                           for name, (topic, msg_type) in TOPICS.items()}
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def topic(self, name: str) -> str:
        return self.prefix + TOPICS[name][0]

    def add(self, node):
        self.executor.add_node(node)
        return node

    def publish(self, messages: dict[str, object], order=None) -> None:
        for name in order or ("camera_info", "pose", "segmentation", "depth", "rgb"):
            if name in messages:
                self.publishers[name].publish(messages[name])

    def wait_for_subscribers(self, node_name: str, timeout_s: float = 10.0) -> None:
        """Until every sensor publisher is matched by a subscription of ``node_name``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{node_name} did not subscribe within {timeout_s} s")

    def call(self, srv_type, name: str, request, timeout_s: float = 20.0):
        return call_service(self.probe, srv_type, name, request, timeout_s)

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)


def wait_until(predicate, timeout_s: float = 20.0, period_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return predicate()
