"""Loss terms of PanopticRecon++ (Eq. 24-33), each a plain function returning a scalar tensor.

Probabilities that are already normalised are scored with NLL on ``log(p + eps)`` and plain
BCE, not with the code's softmax-on-probabilities quirks (reference note, section 6.3).

Owns: :class:`LossName` and the loss functions. Does not own: weights or schedule (config),
sampling, matching.
"""
from __future__ import annotations

import enum

import torch
import torch.nn.functional as F

from panoptic_mapper.core.field.matching import PROB_EPS

LOG_EPS = 1e-8
"""Added to rendered probabilities before the log of the NLL losses."""
IGNORE = -1
"""Target value of pixels that carry no loss."""


class LossName(enum.Enum):
    """Keys of the per-step loss dictionary (also the names in progress logs)."""

    DEPTH = "depth"
    SDF_NEAR = "sdf_near"
    SDF_FREE = "sdf_free"
    EIKONAL = "eikonal"
    SEMANTIC = "semantic"
    INSTANCE_DICE = "instance_dice"
    INSTANCE_BCE = "instance_bce"
    TOKEN_CLASS = "token_class"
    PANOPTIC = "panoptic"
    QUERY_SEPARATION = "query_separation"
    PRIOR_DISTILL = "prior_distill"
    TOTAL = "total"


def depth_l1(rendered_range_m: torch.Tensor, observed_range_m: torch.Tensor) -> torch.Tensor:
    """E26: mean |D - u_d| over rays, metres."""
    return (rendered_range_m - observed_range_m).abs().mean()


def sdf_losses(sdf_m: torch.Tensor, ranges_m: torch.Tensor, observed_range_m: torch.Tensor,
               truncation_m: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """E24 near-surface and free-space SDF losses.

    With the projective SDF ``b = D - rho``: samples with ``|b| <= tau`` get ``|s - b|``;
    samples in front of the band (``b > tau``) get ``max(0, exp(-beta s) - 1, s - b)``.
    Samples behind the band get nothing: ``b`` says nothing about occluded space.

    Args:
        sdf_m: [R, S] predicted SDF at the samples.
        ranges_m: [R, S] sample ranges.
        observed_range_m: [R] observed ranges.

    Returns:
        (near, free): means over their samples (0 when a set is empty).
    """
    b = observed_range_m[:, None] - ranges_m
    near = b.abs() <= truncation_m
    free = b > truncation_m
    zero = sdf_m.sum() * 0.0
    near_loss = (sdf_m - b).abs()[near].mean() if bool(near.any()) else zero
    if bool(free.any()):
        s, bf = sdf_m[free], b[free]
        free_loss = torch.maximum(torch.maximum(torch.zeros_like(s), torch.exp(-beta * s) - 1.0),
                                  s - bf).mean()
    else:
        free_loss = zero
    return near_loss, free_loss


def eikonal(gradients: torch.Tensor) -> torch.Tensor:
    """E25: mean ``(1 - |grad s|)^2`` over [P, 3] gradients."""
    return ((gradients.norm(dim=-1) - 1.0) ** 2).mean()


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def probability_nll(probs: torch.Tensor, target: torch.Tensor, ignore_index: int,
                    weights: torch.Tensor | None = None,
                    also_target: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``-log p[target]`` over rows whose target is not ``ignore_index`` (E32, E33),
    weighted by ``weights`` [R] when given. ``also_target`` [R, K] (0/1) marks more columns
    that count as right for a row: its loss is then ``-log(p[target] + sum of those)``."""
    keep = target != ignore_index
    if not bool(keep.any()):
        return probs.sum() * 0.0
    chosen = probs[keep].gather(1, target[keep][:, None])[:, 0]
    if also_target is not None:
        extra = also_target[keep].clone()
        extra.scatter_(1, target[keep][:, None], 0.0)
        chosen = chosen + (probs[keep] * extra).sum(dim=1)
    nll = -torch.log(chosen + LOG_EPS)
    return _weighted_mean(nll, None if weights is None else weights[keep])


def matched_mask_losses(pred: torch.Tensor, target: torch.Tensor, pairs: list[tuple[int, int]],
                        dice_eps: float, mask_weights: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """E30 on matched pairs only: mean Dice and mean BCE.

    Args:
        pred: [N, X] rendered token masks on the frame's rays.
        target: [L, X] binary 2D masks.
        pairs: (mask index, token row) of accepted matches.
        mask_weights: optional [L] weight of each mask (e.g. its detection score).

    Returns:
        (dice, bce), each the (weighted) mean over pairs (0 without pairs).
    """
    return grouped_mask_losses(pred, target, [(m, (t,)) for m, t in pairs], dice_eps,
                               mask_weights)


def grouped_mask_losses(pred: torch.Tensor, target: torch.Tensor,
                        groups: list[tuple[int, tuple[int, ...]]], dice_eps: float,
                        mask_weights: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """E30 where a mask may stand for several tokens: Dice and BCE of each mask against the
    union ``1 - prod_n (1 - m_n)`` of its tokens' masks (one token: E30 itself).

    Args:
        pred: [N, X] rendered token masks on the frame's rays.
        target: [L, X] binary 2D masks.
        groups: (mask index, token rows) of accepted matches.
        mask_weights: optional [L] weight of each mask.

    Returns:
        (dice, bce), each the (weighted) mean over groups (0 without groups).
    """
    if not groups:
        zero = pred.sum() * 0.0
        return zero, zero
    masks = torch.tensor([m for m, _ in groups], dtype=torch.long, device=pred.device)
    unions = [pred[rows[0]] if len(rows) == 1
              else 1.0 - torch.prod(1.0 - pred[list(rows)], dim=0) for _, rows in groups]
    p = torch.stack(unions).clamp(PROB_EPS, 1.0 - PROB_EPS)  # [K, X]
    t = target[masks]
    dice = 1.0 - (2.0 * (p * t).sum(dim=1) + dice_eps) / (p.sum(dim=1) + t.sum(dim=1) + dice_eps)
    bce = F.binary_cross_entropy(p, t, reduction="none").mean(dim=1)
    weights = None if mask_weights is None else mask_weights[masks]
    return _weighted_mean(dice, weights), _weighted_mean(bce, weights)


def token_class_loss(class_logits: torch.Tensor, token_rows: torch.Tensor,
                     token_classes: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """E31 as softmax cross-entropy: matched tokens against their masks' classes (1..T),
    weighted by ``weights`` when given."""
    if token_rows.numel() == 0:
        return class_logits.sum() * 0.0
    ce = F.cross_entropy(class_logits[token_rows], token_classes, reduction="none")
    return _weighted_mean(ce, weights)


def query_separation(queries: torch.Tensor, margin: float) -> torch.Tensor:
    """The code's hinge ``mean_{i != j} max(0, margin - |q_i - q_j|)`` on projected queries."""
    n = queries.shape[0]
    if n < 2:
        return queries.sum() * 0.0
    distance = torch.cdist(queries, queries)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=queries.device)
    return F.relu(margin - distance)[off_diagonal].mean()
