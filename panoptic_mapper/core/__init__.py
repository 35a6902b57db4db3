"""ROS-free core library of panoptic_mapper.

Nothing below this package may import rclpy, *_msgs, cv_bridge, tf2_ros, message_filters or launch
(enforced by ``test/core/test_core_is_ros_free.py``).
"""
