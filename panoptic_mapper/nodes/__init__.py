"""Thin rclpy nodes: parameters -> config dataclass -> core object."""
