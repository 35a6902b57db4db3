"""Per-frame Hungarian assignment of 2D thing masks to tokens, and the losses it decides.

For each segmentation keyframe of a step, on its sampled rays: Dice + BCE (+ class) costs of its
thing masks against the rendered token masks, the assignment (``matching.assign_masks``), the
tokens each matched mask also covers (under-segmentation, ``matching.covered_tokens``), and the
token manager's record of what was matched, claimed and in view. Matched (and covered) tokens
get Dice + BCE against their mask and the token class loss; the rays get the panoptic target
(stuff class, matched token, or ignored).

Owns: :func:`match_frames`, :func:`tokens_in_view`, :data:`MIN_RAYS_IN_VIEW`. Does not own: the
costs and the assignment (``matching.py``), the token bookkeeping (``token_manager.py``).
"""
from __future__ import annotations

import numpy as np
import torch

from panoptic_mapper.core.field.keyframes import NO_MASK, Keyframe, RayBatch
from panoptic_mapper.core.field.losses import (IGNORE, LossName, grouped_mask_losses,
                                               token_class_loss)
from panoptic_mapper.core.field.matching import (UNMATCHED, MaskAssignment, assign_masks,
                                                 bce_cost, covered_tokens, dice_cost)
from panoptic_mapper.core.field.schedule import TrainingPhase
from panoptic_mapper.core.field.step_context import StepContext
from panoptic_mapper.core.field.token_manager import TokenManager, TokenManagerState

MIN_RAYS_IN_VIEW = 3
"""A token is in view in a sampled frame when at least this many of its rays hit its core."""


@torch.no_grad()
def tokens_in_view(ctx: StepContext, surface_points: torch.Tensor,
                   rendered_masks: torch.Tensor) -> torch.Tensor:
    """[R, N] bool: the ray's surface point lies in the token's core (Gaussian > 0.5, or the
    mask > 0.5 when the Gaussian prior is off)."""
    tokens = ctx.field.tokens
    if tokens.num_tokens == 0:
        return torch.zeros(surface_points.shape[0], 0, dtype=torch.bool, device=ctx.device)
    if ctx.config.tokens.gaussian_prior:
        return tokens.gaussian(surface_points) > 0.5
    return rendered_masks.detach() > 0.5


def match_frames(ctx: StepContext, manager: TokenManager, manager_state: TokenManagerState,
                 frames: list[Keyframe], batches: list[RayBatch], rays: RayBatch,
                 rendered_masks: torch.Tensor, phase: TrainingPhase,
                 losses: dict[LossName, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hungarian matching per frame, instance and class losses (added to ``losses``).

    Args:
        frames: the step's segmentation keyframes; ``batches`` their rays, in order, and
            ``rays`` all of them concatenated.
        rendered_masks: [R, N] token masks rendered on ``rays``.

    Returns:
        The [R] panoptic target (stuff class, 1 + S + matched token row, or IGNORE) and, when
        some mask covers more tokens than its matched one, the [R, N] 0/1 covered tokens of
        each ray's mask (else None).
    """
    cfg = ctx.config
    num_stuff = ctx.classes.num_stuff
    tokens = ctx.field.tokens
    semantic = rays.semantic_class
    target = torch.where((semantic >= 1) & (semantic <= num_stuff) & (rays.thing_mask < 0),
                         semantic, torch.full_like(semantic, IGNORE))
    num_tokens = tokens.num_tokens
    class_logits = ctx.field.token_class_logits() if num_tokens else None
    dice_terms, bce_terms, class_rows, class_targets, class_weights = [], [], [], [], []
    covered_by_ray: torch.Tensor | None = None
    surface_points = rays.surface_points()
    surface = surface_points.cpu().numpy()
    in_view = tokens_in_view(ctx, surface_points, rendered_masks).cpu()
    start = 0
    for batch, keyframe in zip(batches, frames):
        stop = start + batch.num_rays
        visible = np.flatnonzero((in_view[start:stop].sum(dim=0) >= MIN_RAYS_IN_VIEW)
                                 .numpy()) if num_tokens else None
        local_masks = batch.thing_mask
        present = torch.unique(local_masks[local_masks != NO_MASK])
        if len(present) == 0:
            start = stop
            continue
        gt = (local_masks[None, :] == present[:, None]).float()  # [L, X]
        mask_of_ray = local_masks.cpu().numpy()
        present_masks = present.cpu().numpy()
        centroids = np.stack([np.median(surface[start:stop][mask_of_ray == m], axis=0)
                              for m in present_masks])
        if num_tokens == 0:
            none = np.zeros((len(present), 0))
            unmatched = MaskAssignment(np.full(len(present), UNMATCHED, np.int64),
                                       np.zeros(len(present), bool), none, none)
            manager.record(manager_state, tokens, unmatched, centroids, visible)
            start = stop
            continue
        pred = rendered_masks[start:stop].T  # [N, X]
        with torch.no_grad():
            dice = dice_cost(pred, gt, cfg.loss.dice_eps).cpu().numpy()
            bce = bce_cost(pred, gt).cpu().numpy()
            class_cost = None
            if cfg.loss.match_class_cost > 0:
                probs = torch.softmax(class_logits, dim=-1).cpu()
                mask_classes = torch.as_tensor(keyframe.thing_classes[present_masks])
                cost = -probs[:, mask_classes].T.numpy()  # [L, N]
                class_cost = cfg.loss.match_class_cost * (cost - cost.min())
            token_class = class_logits[:, 1:].argmax(dim=1).cpu().numpy() + 1
        same_class = keyframe.thing_classes[present_masks][:, None] == token_class[None, :]
        assignment = assign_masks(dice, bce, cfg.token_manager.reject_dice_cost, class_cost,
                                  same_class if cfg.token_manager.split_same_class else None)
        if cfg.token_manager.union_containment > 0:
            with torch.no_grad():
                inside = (gt @ pred.T).cpu().numpy()  # [L, N]
                mass = pred.sum(dim=1).cpu().numpy()  # [N]
            # Only a token of the mask's class may stand for part of it.
            assignment.covered = covered_tokens(inside, mass, assignment, visible,
                                                cfg.token_manager.union_containment,
                                                cfg.token_manager.union_min_rays, same_class)
        manager.record(manager_state, tokens, assignment, centroids, visible)
        pairs = assignment.matched_pairs
        if pairs:
            mask_scores = None
            if cfg.loss.score_weighting:
                scores = batch.score[None, :] * gt
                mask_scores = scores.sum(dim=1) / gt.sum(dim=1).clamp_min(1.0)
            dice_loss, bce_loss = grouped_mask_losses(pred, gt, assignment.mask_groups,
                                                      cfg.loss.dice_eps, mask_scores)
            dice_terms.append(dice_loss)
            bce_terms.append(bce_loss)
            for mask, row in pairs:
                class_rows.append(row)
                class_targets.append(int(keyframe.thing_classes[present_masks[mask]]))
                class_weights.append(1.0 if mask_scores is None else float(mask_scores[mask]))
                target[start:stop][local_masks == present[mask]] = 1 + num_stuff + row
            for row, mask in assignment.covered:
                if covered_by_ray is None:
                    covered_by_ray = torch.zeros(rays.num_rays, num_tokens, device=ctx.device)
                covered_by_ray[start:stop, row] = (local_masks == present[mask]).float()
        start = stop
    if bce_terms:
        if phase.dice:
            losses[LossName.INSTANCE_DICE] = torch.stack(dice_terms).mean()
        losses[LossName.INSTANCE_BCE] = torch.stack(bce_terms).mean()
        losses[LossName.TOKEN_CLASS] = token_class_loss(
            class_logits, ctx.on_device(class_rows), ctx.on_device(class_targets),
            ctx.on_device(class_weights))
    return target, covered_by_ray
