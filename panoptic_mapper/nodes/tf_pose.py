"""Camera poses from tf (``pose_source: tf``), where ``tf2_ros`` is installed.

``tf2_ros`` is not on PyPI, so the pip environment of this package has no tf; on a ROS 2
install it has. :func:`tf2_available` tells which; the nodes refuse ``pose_source: tf`` with a
clear message where it is missing instead of silently falling back to the pose topic.

Owns: the tf buffer/listener of a node and lookups of ``T_map_camera`` at an image stamp.
Does not own: pose topics (``panoptic_mapper.ros.conversions``).
"""
from __future__ import annotations

import importlib.util

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.ros.conversions import transform_from_transform_stamped_msg


def tf2_available() -> bool:
    """True when ``tf2_ros`` can be imported (a ROS 2 install, not the pip wheels)."""
    return importlib.util.find_spec("tf2_ros") is not None


class TfPoseSource:
    """Looks up ``T_<map_frame>_<camera frame>`` at image stamps from /tf and /tf_static."""

    def __init__(self, node: Node, map_frame: str, cache_time_s: float = 30.0):
        """Raises:
            ConfigError: tf2_ros is not installed.
        """
        if not tf2_available():
            raise ConfigError("input.pose_source", "tf",
                              "tf2_ros is not installed (it is not on PyPI); use pose_stamped "
                              "or odometry, or run on a ROS 2 install")
        import tf2_ros

        self._tf2 = tf2_ros
        self._map_frame = map_frame
        self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s))
        self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)

    def lookup(self, camera_frame: str, stamp_ns: int, timeout_s: float = 0.2) -> np.ndarray:
        """[4, 4] ``T_map_camera`` at ``stamp_ns`` (waits up to ``timeout_s`` for tf data).

        Raises:
            InvalidInputError: (kind ``tf_lookup``) no transform between the frames at that time.
        """
        try:
            transform = self._buffer.lookup_transform(
                self._map_frame, camera_frame, Time(nanoseconds=int(stamp_ns)),
                timeout=Duration(seconds=timeout_s))
        except (self._tf2.LookupException, self._tf2.ConnectivityException,
                self._tf2.ExtrapolationException) as exc:
            raise InvalidInputError("tf", f"{self._map_frame} <- {camera_frame} at {stamp_ns} ns",
                                    f"no transform: {exc}", kind="tf_lookup") from exc
        return transform_from_transform_stamped_msg(transform).T_parent_child
