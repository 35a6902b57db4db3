"""Locate the package's shipped configuration files (``config/``), wherever it is installed.

Search order: ``$PANOPTIC_MAPPER_CONFIG_DIR``; the source checkout (``<repo>/config``); the ament
share directory (``<prefix>/share/panoptic_mapper/config``) of every prefix on
``AMENT_PREFIX_PATH``, then of ``sys.prefix`` (the venv route installs there).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from panoptic_mapper.core.errors import DataFormatError

PACKAGE_NAME = "panoptic_mapper"


def config_dirs() -> list[Path]:
    """Candidate ``config`` directories, most specific first."""
    dirs: list[Path] = []
    env = os.environ.get("PANOPTIC_MAPPER_CONFIG_DIR")
    if env:
        dirs.append(Path(env))
    source = Path(__file__).resolve().parents[3] / "config"
    dirs.append(source)
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        dirs.append(Path(prefix) / "share" / PACKAGE_NAME / "config")
    return dirs


def config_path(relative: str) -> Path:
    """Absolute path of a shipped config file, e.g. ``config_path("mapper.yaml")``."""
    for base in config_dirs():
        candidate = base / relative
        if candidate.is_file():
            return candidate
    raise DataFormatError("config", relative,
                          f"not found in any of {[str(d) for d in config_dirs()]}; is "
                          "panoptic_mapper installed (make setup) or PANOPTIC_MAPPER_CONFIG_DIR set?")
