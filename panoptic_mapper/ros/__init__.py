"""Conversions between ROS 2 messages and core types (the only place they meet).

* ``conversions``: time, images (colour, depth), camera info, poses/transforms, point clouds,
  and the assembly of an ``RgbdFrame`` from its messages.
* ``panoptic_conversions``: our own interfaces (segmentation, map instances, mesh).
* ``markers``: RViz markers of the mesh and of instance boxes.
* ``qos``: the QoS profiles shared by all publishers and subscribers.
"""
