"""Error types of the core library.

Every rejection of bad input raises an :class:`InvalidInputError` that names the offending field and
value, so a node can log it once per kind and keep running. Nothing here knows about ROS.
"""
from __future__ import annotations

from typing import Any


class PanopticMapperError(Exception):
    """Base class of all errors raised on purpose by panoptic_mapper."""


class InvalidInputError(PanopticMapperError, ValueError):
    """An input (frame, segmentation, message, file, config value) is unusable.

    Attributes:
        field: dotted name of the offending field, e.g. ``"depth_m"`` or ``"tsdf.voxel_size_m"``.
        value: the offending value, or a short summary of it (``"min -0.31"``).
        kind: a stable short category used to count and rate-limit log messages
            (defaults to ``field``), e.g. ``"encoding"``, ``"size_mismatch"``.
    """

    def __init__(self, field: str, value: Any, reason: str, kind: str | None = None):
        self.field = field
        self.value = value
        self.reason = reason
        self.kind = kind or field
        super().__init__(f"{field}={_short(value)}: {reason}")


class ConfigError(InvalidInputError):
    """A configuration value is invalid (wrong type, out of range, unknown key)."""


class DataFormatError(InvalidInputError):
    """A file or dataset on disk is missing, truncated or malformed."""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
