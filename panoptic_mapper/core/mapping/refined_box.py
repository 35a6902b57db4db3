"""When the refined layer's field must restart on a grown scene box.

A keyframe sees beyond the field's box when more than ``scene_box.outside_share`` of its surface
points lie farther than ``outside_tolerance_m`` outside it (``core/field/box_growth.py``).
:class:`BoxWatch` checks each stored keyframe once per field (keyframes found inside are
remembered), and, for an offline run's end (``cover_everything``), whether any keyframe point or
prior mesh vertex lies beyond the box.

Owns: :class:`BoxWatch`. Does not own: the rule (``box_growth.py``) or the restart itself
(``refined_layer.py``).
"""
from __future__ import annotations

import numpy as np

from panoptic_mapper.core.field.box_growth import (SceneBoxConfig, keyframe_surface_sample,
                                                   outside_share)
from panoptic_mapper.core.field.keyframes import Keyframe, KeyframeStore
from panoptic_mapper.core.field.trainer import FieldTrainer


class BoxWatch:
    """Finds keyframes that see beyond a field's box (see the module docstring)."""

    def __init__(self, rule: SceneBoxConfig, store: KeyframeStore):
        self.rule = rule
        self.store = store
        self._checked: tuple[FieldTrainer | None, set[int]] = (None, set())
        """(trainer, stamps of the keyframes that do not see beyond its box)."""

    def keyframe_beyond(self, trainer: FieldTrainer) -> tuple[Keyframe, float] | None:
        """A stored keyframe that sees beyond the box of ``trainer``'s field, with the share of
        its points beyond it; None when none does (or the box does not grow)."""
        rule = self.rule
        if not rule.grows or not trainer.is_setup:
            return None
        box = trainer.field.box
        # No lock: status polls call this beside training and queries, and a race between two
        # callers only checks a keyframe twice.
        checked_for, inside = self._checked
        if checked_for is not trainer:
            inside = set()
            self._checked = (trainer, inside)
        for keyframe in self.store.snapshot():
            if keyframe.stamp_ns in inside:
                continue
            share = outside_share(keyframe_surface_sample(keyframe, self.store.near_m), box,
                                  rule.outside_tolerance_m)
            if share > rule.outside_share:
                return keyframe, share
            inside.add(keyframe.stamp_ns)
        return None

    def growth_reason(self, trainer: FieldTrainer, prior_points_m: np.ndarray,
                      cover_everything: bool) -> str | None:
        """Why ``trainer``'s box must grow (for the log), or None. With ``cover_everything``,
        any keyframe point or prior mesh vertex (``prior_points_m`` [M, 3]) beyond it counts."""
        if cover_everything and self.rule.grows and trainer.is_setup:
            points = np.concatenate([trainer.scene_points(), prior_points_m])
            share = outside_share(points, trainer.field.box, self.rule.outside_tolerance_m)
            if share > 0:
                return (f"{100 * share:.1f} % of the keyframes' points and the prior's mesh lie "
                        "beyond the field's box")
        beyond = self.keyframe_beyond(trainer)
        if beyond is None:
            return None
        keyframe, share = beyond
        return (f"the keyframe at {keyframe.stamp_ns} ns sees beyond the field's box "
                f"({100 * share:.0f} % of its points)")
