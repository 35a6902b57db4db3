"""The rosbags type store of ROS 2 Kilted plus panoptic_mapper's own messages (``msg/*.msg``).

Our ``.msg`` files are found like the shipped config (``resources``): ``$PANOPTIC_MAPPER_MSG_DIR``,
the source checkout (``<repo>/msg``), then ``<prefix>/share/panoptic_mapper/msg`` of every prefix
on ``AMENT_PREFIX_PATH`` and of ``sys.prefix`` (rosidl installs the ``.msg`` files there).

Owns: the type store used to (de)serialise bag messages without rclpy.
Does not own: message <-> core conversions (``bag_messages``) or rclpy types (``ros/``).
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.io.resources import PACKAGE_NAME

OWN_MESSAGES = ("Segment", "PanopticSegmentation", "MapInstance", "PanopticMesh")
"""Our message names; registered as ``panoptic_mapper/msg/<name>``."""


def msg_dirs() -> list[Path]:
    """Candidate folders holding our ``.msg`` files, most specific first."""
    dirs: list[Path] = []
    env = os.environ.get("PANOPTIC_MAPPER_MSG_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parents[3] / "msg")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    dirs.extend(Path(prefix) / "share" / PACKAGE_NAME / "msg" for prefix in prefixes)
    return dirs


def find_msg_dir() -> Path:
    """The first folder of :func:`msg_dirs` that holds all of :data:`OWN_MESSAGES`."""
    for folder in msg_dirs():
        if all((folder / f"{name}.msg").is_file() for name in OWN_MESSAGES):
            return folder
    raise DataFormatError("msg", list(OWN_MESSAGES),
                          f"message definitions not found in any of "
                          f"{[str(d) for d in msg_dirs()]}; is panoptic_mapper installed or "
                          "PANOPTIC_MAPPER_MSG_DIR set?", kind="missing_file")


@functools.lru_cache(maxsize=1)
def panoptic_typestore() -> Typestore:
    """The ROS 2 Kilted type store with our messages registered (built once per process)."""
    store = get_typestore(Stores.ROS2_KILTED)
    folder = find_msg_dir()
    types = {}
    for name in OWN_MESSAGES:
        text = (folder / f"{name}.msg").read_text(encoding="utf-8")
        types.update(get_types_from_msg(text, f"{PACKAGE_NAME}/msg/{name}"))
    store.register(types)
    return store
