"""What the loss terms of one training step share: the field, the settings, the random sources
and the device.

The trainer makes one :class:`StepContext` per step from its own state (so a setting changed
between steps, e.g. by a benchmark switching the sampler mode, applies to the next step). The
random sources are the trainer's: numpy's ``rng`` draws rays, keyframes and prior vertices; the
torch ``generator`` (on the CPU, so a seed draws the same samples on every device) draws sample
ranges and eikonal points. Each loss module draws in a fixed order, so a run repeats bit for bit.

Owns: :class:`StepContext`. Does not own: the losses (``geometry_losses``,
``segmentation_losses``, ``prior_distill``) or the trainer's state (``trainer``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import FieldTrainingConfig
from panoptic_mapper.core.field.panoptic_field import PanopticField


@dataclass
class StepContext:
    """The field and what a loss term needs besides it, for one step."""

    field: PanopticField
    config: FieldTrainingConfig
    classes: ClassSpace
    rng: np.random.Generator
    """Numpy draws (rays, keyframes, prior vertices)."""
    generator: torch.Generator
    """Torch draws (sample ranges, eikonal points); lives on the CPU."""
    device: torch.device
    """Where the field computes and every per-step tensor lives."""

    def on_device(self, data, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``data`` (numpy array, list or tensor) as a tensor on :attr:`device`."""
        return torch.as_tensor(data, dtype=dtype, device=self.device)
