"""The training schedule, scaled to a step budget (PR++ section 1.12).

Phases, as fractions of ``total_steps``: geometry only; then semantics, instances and token
classes; then the panoptic loss; Dice leaves the instance loss at ``drop_dice_start`` (the paper:
"after the instance ID assignment becomes relatively stable"). After the budget the last phase
continues. The learning rate decays by ``lr_decay_per_epoch`` per ``total_steps / epochs`` steps.
With a prior map, its labels are distilled into the field until ``prior_distill_until``.

Owns: :class:`TrainingPhase`, :func:`phase_at`, :func:`lr_factor`. Does not own: the optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass

from panoptic_mapper.core.field.config import ScheduleConfig


@dataclass(frozen=True)
class TrainingPhase:
    """Which losses are active at a step."""

    name: str
    """``geometry``, ``segmentation`` or ``panoptic``."""
    segmentation: bool
    """Semantic, instance and class losses (and the Hungarian matching) run."""
    semantic: bool
    """The semantic loss is on."""
    panoptic: bool
    """The panoptic loss is on."""
    dice: bool
    """Dice is part of the instance loss."""
    prior_distill: bool
    """The prior-distillation loss is on (when a prior is given)."""


def phase_at(step: int, total_steps: int, config: ScheduleConfig) -> TrainingPhase:
    """The phase of 0-based ``step`` in a budget of ``total_steps``."""
    progress = step / max(total_steps, 1)
    segmentation = progress >= config.segmentation_start
    panoptic = config.panoptic_head and progress >= config.panoptic_start
    dice = progress < config.drop_dice_start
    semantic = segmentation and (config.semantic_with_panoptic or not panoptic)
    name = "panoptic" if panoptic else "segmentation" if segmentation else "geometry"
    return TrainingPhase(name, segmentation, semantic, panoptic, dice,
                         progress < config.prior_distill_until)


def lr_factor(step: int, total_steps: int, config: ScheduleConfig) -> float:
    """Learning-rate multiplier at ``step``: ``decay ** (epochs * step / total)`` (held after
    the budget)."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return config.lr_decay_per_epoch ** (config.epochs * progress)
