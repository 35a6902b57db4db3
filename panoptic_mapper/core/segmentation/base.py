"""The segmenter backend contract: one RGB frame in, one 2D panoptic segmentation out.

Backends: ``grounded_sam`` (Grounding DINO + SAM, real models from local weights), ``detector``
(a packaged box detector with depth or SAM masks and geometric stuff, offline on a CPU), ``emulator``
(turns ground truth into Grounded-SAM-like output for synthetic scenes) and ``replay`` (the
segmentation was recorded; the node just forwards it). The segmenter node and the tools pick a
backend by name through :func:`create_segmenter`.

Owns: :class:`SegmentationRequest`, the :class:`SegmenterBackend` protocol, the backend registry.
Does not own: any model or emulation logic.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import (CameraIntrinsics, GroundTruthLabels,
                                        PanopticSegmentation2D)


@dataclass
class SegmentationRequest:
    """Everything a backend may use to segment one frame."""

    rgb: np.ndarray
    """[H, W, 3] uint8 RGB image."""
    stamp_ns: int = 0
    """Stamp of the image; copied to the result."""
    depth_m: np.ndarray | None = None
    """[H, W] float32 metres (0 = invalid), when available (the emulator uses it)."""
    ground_truth: GroundTruthLabels | None = None
    """Per-pixel ground truth, only for the emulator backend."""
    intrinsics: CameraIntrinsics | None = None
    """Camera intrinsics of the image, when known (the detector backend's stuff labeller and
    depth masks use them)."""
    T_world_cam: np.ndarray | None = None
    """[4, 4] camera pose in the map frame, when known (the stuff labeller takes gravity and
    the floor height from it)."""


@runtime_checkable
class SegmenterBackend(Protocol):
    """Produces per-frame 2D panoptic segmentations (ids are per frame, not associated)."""

    registry: LabelRegistry
    """The label registry its segments refer to."""

    def segment(self, request: SegmentationRequest) -> PanopticSegmentation2D:
        """Segment one frame. Raises InvalidInputError on unusable input."""


# Backend name -> "module:Class"; each class provides
#   ``from_config(config: dict | None, registry: LabelRegistry) -> SegmenterBackend``.
SEGMENTER_BACKENDS: dict[str, str] = {
    "grounded_sam": "panoptic_mapper.core.segmentation.grounded_sam:GroundedSamSegmenter",
    "emulator": "panoptic_mapper.core.segmentation.emulator:GroundedSamEmulator",
    "detector": "panoptic_mapper.core.segmentation.detector_backend:DetectorSegmenter",
}


def create_segmenter(name: str, registry: LabelRegistry,
                     config: dict[str, Any] | None = None) -> SegmenterBackend:
    """Instantiate a segmenter backend by name (see :data:`SEGMENTER_BACKENDS`)."""
    if name not in SEGMENTER_BACKENDS:
        raise ConfigError("segmenter.backend", name,
                          f"unknown segmenter backend; known: {sorted(SEGMENTER_BACKENDS)}")
    module_name, class_name = SEGMENTER_BACKENDS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_config(config, registry)
