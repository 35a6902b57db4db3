"""pip route (plain venv, no ROS install): installs the Python package, console scripts and share/.

The ROS interfaces (msg/srv) are generated separately by CMake + rosidl into the same prefix
(`make setup` runs both; see the Makefile). In a ROS 2 workspace, colcon builds everything through
CMakeLists.txt instead and this file is not used.
"""
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "panoptic_mapper"
ROOT = Path(__file__).parent


def share_files(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that mirror ``folder`` under share/panoptic_mapper/."""
    entries: dict[str, list[str]] = {}
    for path in sorted((ROOT / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(ROOT)
            entries.setdefault(f"share/{PACKAGE}/{rel.parent}", []).append(str(rel))
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Open-vocabulary panoptic 3D mapping for ROS 2 (instant TSDF map + PanopticRecon++).",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("config"),
        *share_files("launch"),
    ],
    entry_points={
        "console_scripts": [
            "panoptic-mapper = panoptic_mapper.tools.cli:main",
            "segmenter_node = panoptic_mapper.nodes.segmenter_node:main",
            "instant_semantics_node = panoptic_mapper.nodes.instant_semantics_node:main",
            "mapper_node = panoptic_mapper.nodes.mapper_node:main",
            "mapping_process = panoptic_mapper.nodes.mapping_process:main",
        ],
    },
    zip_safe=False,
)
