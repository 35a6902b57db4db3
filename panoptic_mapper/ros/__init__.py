"""Conversions between ROS 2 messages and core types (the only place they meet)."""
