"""The core library must never import ROS: it runs in tools, benchmarks and notebooks without it."""
import ast
from pathlib import Path

import panoptic_mapper.core

FORBIDDEN_ROOTS = {"rclpy", "cv_bridge", "tf2_ros", "tf2_py", "message_filters", "launch",
                   "launch_ros", "rosbag2_py", "sensor_msgs_py", "ament_index_python",
                   "rosidl_runtime_py"}


def _is_forbidden(module: str) -> bool:
    root = module.split(".")[0]
    if root in FORBIDDEN_ROOTS or root.endswith("_msgs") or root.endswith("_srvs"):
        return True
    # our own generated interfaces are ROS types too
    return module.startswith("panoptic_mapper.msg") or module.startswith("panoptic_mapper.srv")


def test_core_imports_no_ros():
    core_dir = Path(panoptic_mapper.core.__file__).parent
    offenders = []
    files = sorted(core_dir.rglob("*.py"))
    assert files, "no core sources found"
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(core_dir)}:{node.lineno} imports {n}"
                          for n in names if _is_forbidden(n)]
    assert not offenders, "ROS imports in panoptic_mapper/core:\n" + "\n".join(offenders)
