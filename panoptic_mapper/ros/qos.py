"""QoS profiles shared by every panoptic_mapper publisher and subscriber.

Owns: the two profiles the package uses, so that publishers and subscribers in different nodes
always match. Does not own: topic names or node wiring (``panoptic_mapper.nodes``).

Why reliable sensor QoS: with Fast DDS from the PyPI wheels, best-effort 640x480 streams lost
20-70 % of the frames at 30 Hz on the reference machine, while reliable delivery kept 30/30 fps
(``../shared/reference/ros2-from-pypi.md`` section 3). Mapping needs every RGB-D frame.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""RGB, depth, camera info, pose and 2D segmentation streams: reliable, the last 10 messages.

A best-effort publisher (e.g. a camera driver using ``qos_profile_sensor_data``) does not
match a reliable subscriber; subscribe with ``qos_profile_sensor_data`` to such drivers.
"""

LATCHED_MAP_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""Map products (mesh, instances, markers): the latest message, delivered to late joiners too."""
