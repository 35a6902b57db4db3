"""Distillation of a prior map's labels into the field (not in the paper).

At random prior mesh vertices per step: the semantic NLL against the prior's label, per-token
Dice + BCE against the prior's instances (each tied to the token it seeded) and the token class
CE against the seeding instance's class. The tie between prior instances and tokens follows the
token maintenance: a merged token's vertices go to the token it joined, and (with
``token_manager.split_releases_prior``) a split token's vertices stop being distilled.

Owns: :class:`PriorTargets`, :class:`PriorDistillation`. Does not own: where the targets come
from (``core/mapping/refined_map.py``) or the schedule (``schedule.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.losses import (matched_mask_losses, probability_nll,
                                               token_class_loss)
from panoptic_mapper.core.field.step_context import StepContext
from panoptic_mapper.core.field.token_init import TokenSeeds
from panoptic_mapper.core.field.token_manager import TokenChange


@dataclass
class PriorTargets:
    """Labels of a prior map at its mesh vertices, for the prior-distillation loss."""

    points_m: np.ndarray
    """[M, 3] float32 vertex positions."""
    semantic_class: np.ndarray
    """[M] int64 semantic class index of the prior's label (0 = unlabelled, ignored)."""
    instance_ids: np.ndarray
    """[M] int64 the prior's instance id (0 = none)."""


@dataclass
class PriorDistillation:
    """The targets and which token (by stable id) each vertex and token class belongs to."""

    targets: PriorTargets
    token_ids: np.ndarray
    """[M] int64 stable id of the token distilled at each vertex (0 = none)."""
    token_classes: dict[int, int] = field(default_factory=dict)
    """Token class (1..T) distilled into each token seeded from a prior instance, by id."""

    @classmethod
    def from_seeds(cls, targets: PriorTargets, seeds: TokenSeeds,
                   classes: ClassSpace) -> "PriorDistillation":
        """Tie each vertex's prior instance to the token it seeded (token ``i`` of the seeds
        has id ``i + 1``)."""
        token_of_prior = {int(p): i + 1 for i, p in enumerate(seeds.prior_ids) if p > 0}
        token_ids = np.array([token_of_prior.get(int(p), 0) for p in targets.instance_ids],
                             np.int64)
        token_classes: dict[int, int] = {}
        if seeds.label_ids is not None:
            token_class = classes.semantic_to_token_class(
                classes.label_to_semantic_class(seeds.label_ids))
            token_classes = {i + 1: int(c) for i, c in enumerate(token_class)
                             if c > 0 and seeds.prior_ids[i] > 0}
        return cls(targets, token_ids, token_classes)

    @classmethod
    def from_token_map(cls, targets: PriorTargets, token_of_prior: dict[int, int],
                       token_classes: dict[int, int]) -> "PriorDistillation":
        """Tie each vertex to the token of its prior instance (``token_of_prior``: prior id ->
        token id; instances without one are not distilled)."""
        ids = targets.instance_ids
        token_ids = np.zeros(len(ids), np.int64)
        if token_of_prior and len(ids):
            keys = np.array(sorted(token_of_prior), np.int64)
            values = np.array([token_of_prior[int(k)] for k in keys], np.int64)
            pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
            hit = keys[pos] == ids
            token_ids[hit] = values[pos[hit]]
        return cls(targets, token_ids, dict(token_classes))

    def token_of_prior(self) -> dict[int, int]:
        """Prior instance id -> the token its vertices are distilled into now (after merges;
        instances released by a split, or never seeded, are absent)."""
        tied = self.token_ids > 0
        if not tied.any():
            return {}
        pairs, counts = np.unique(np.stack([self.targets.instance_ids[tied],
                                            self.token_ids[tied]], axis=1),
                                  axis=0, return_counts=True)
        out: dict[int, tuple[int, int]] = {}
        for (prior_id, token_id), count in zip(pairs.tolist(), counts.tolist()):
            if prior_id > 0 and count > out.get(prior_id, (0, -1))[1]:
                out[prior_id] = (token_id, count)
        return {prior_id: token for prior_id, (token, _) in out.items()}

    def retargeted(self, targets: PriorTargets, new_token_of_prior: dict[int, int],
                   new_token_classes: dict[int, int]) -> "PriorDistillation":
        """The same ties on a newer prior mesh (``targets``), plus the ties of tokens seeded
        for prior instances since (``new_token_of_prior``, ``new_token_classes``)."""
        token_of_prior = {**new_token_of_prior, **self.token_of_prior()}
        return PriorDistillation.from_token_map(targets, token_of_prior,
                                                {**self.token_classes, **new_token_classes})

    def loss(self, ctx: StepContext) -> torch.Tensor:
        """Semantic NLL and per-token Dice + BCE (+ token class CE) at
        ``loss.prior_distill_points`` random vertices (drawn from ``ctx.rng``)."""
        targets = self.targets
        count = min(ctx.config.loss.prior_distill_points, len(targets.points_m))
        chosen = ctx.rng.integers(0, len(targets.points_m), count)
        points = ctx.on_device(np.asarray(targets.points_m[chosen], np.float32))
        semantic = torch.softmax(ctx.field.semantic_logits(points), dim=-1)
        loss = probability_nll(semantic, ctx.on_device(targets.semantic_class[chosen]),
                               ignore_index=0)
        tokens = ctx.field.tokens
        if tokens.num_tokens:
            row_of_id = {token_id: row for row, token_id in enumerate(tokens.ids_list())}
            rows = np.array([row_of_id.get(int(t), -1) for t in self.token_ids[chosen]])
            target = torch.zeros(tokens.num_tokens, count, device=ctx.device)
            has_row = rows >= 0
            target[ctx.on_device(rows[has_row]), ctx.on_device(np.flatnonzero(has_row))] = 1
            pairs = [(int(r), int(r)) for r in np.unique(rows[has_row])]
            masks = ctx.field.token_masks(points).T  # [N, count]
            dice, bce = matched_mask_losses(masks, target, pairs, ctx.config.loss.dice_eps)
            loss = loss + dice + bce
            classed = [(row_of_id[t], c) for t, c in self.token_classes.items()
                       if t in row_of_id]
            if classed:
                loss = loss + token_class_loss(ctx.field.token_class_logits(),
                                               ctx.on_device([r for r, _ in classed]),
                                               ctx.on_device([c for _, c in classed]))
        return loss

    def follow(self, change: TokenChange, split_releases_prior: bool) -> None:
        """Keep the vertex-token ties right after a token maintenance."""
        # A merged token's prior vertices belong to the token it was one object with.
        for dropped, kept in change.merged.items():
            self.token_ids[self.token_ids == dropped] = kept
        if change.split and split_releases_prior:
            # The masks show two objects where the prior has one instance: stop copying it.
            released = np.isin(self.token_ids, list(change.split.values()))
            self.token_ids = np.where(released, 0, self.token_ids)

    def to_state(self) -> dict:
        """CPU tensors for a checkpoint."""
        return {"points_m": torch.from_numpy(self.targets.points_m),
                "semantic_class": torch.from_numpy(self.targets.semantic_class),
                "instance_ids": torch.from_numpy(self.targets.instance_ids),
                "token_ids": torch.from_numpy(self.token_ids),
                "token_classes": torch.tensor(sorted(self.token_classes.items()),
                                              dtype=torch.long).view(-1, 2)}

    @classmethod
    def from_state(cls, state: dict) -> "PriorDistillation":
        """Inverse of :meth:`to_state`."""
        targets = PriorTargets(state["points_m"].numpy(), state["semantic_class"].numpy(),
                               state["instance_ids"].numpy())
        return cls(targets, state["token_ids"].numpy(),
                   {int(t): int(c) for t, c in state["token_classes"].tolist()})
