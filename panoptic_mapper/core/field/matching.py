"""Per-frame Hungarian assignment of 2D thing masks to instance tokens (PR++ Eq. 27-30).

On the sampled rays of one frame, with L binary 2D masks ``M_l`` and N rendered token masks
``Mbar_n`` (probabilities)::

    Dice[l, n] = 1 - (2 sum_x Mbar_n M_l + eps) / (sum_x Mbar_n + sum_x M_l + eps)
    BCE[l, n]  = -(1/|X|) sum_x [M_l log Mbar_n + (1 - M_l) log(1 - Mbar_n)]
    C          = Dice + BCE (+ optional class term), solved with scipy linear_sum_assignment

A match whose Dice cost exceeds the rejection threshold is dropped (its pixels are ignored).
A split signal is raised for token n when a mask's Dice-best token n is matched to another mask.

Under-segmentation (not in the paper): a segmenter that merges touching objects gives one mask
for several tokens, and one-to-one matching then teaches the matched token the union, so the
tokens of a pair that is merged in most frames merge too. :func:`covered_tokens` finds, for each
matched mask, the unmatched tokens in view whose rendered mass on the frame's rays lies mostly
inside it; the trainer supervises the mask with the union of its matched and covered tokens.

Owns: the cost functions, :func:`assign_masks`, :class:`MaskAssignment`, :func:`covered_tokens`.
Does not own: the losses on matched pairs (``losses.py``) or what tokens do with split signals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

PROB_EPS = 1e-6
"""Probabilities are clamped to [eps, 1 - eps] before taking logs."""
UNMATCHED = -1
"""Token index of masks that got no token (or whose match was rejected)."""


def dice_cost(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """[L, N] Dice cost between targets [L, X] (0/1) and predictions [N, X] (probabilities)."""
    intersection = target @ pred.T
    total = target.sum(dim=1, keepdim=True) + pred.sum(dim=1)[None, :]
    return 1.0 - (2.0 * intersection + eps) / (total + eps)


def bce_cost(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[L, N] mean binary cross-entropy of predictions [N, X] against targets [L, X]."""
    pred = pred.clamp(PROB_EPS, 1.0 - PROB_EPS)
    positive = target @ torch.log(pred).T
    negative = (1.0 - target) @ torch.log(1.0 - pred).T
    return -(positive + negative) / max(target.shape[1], 1)


@dataclass
class MaskAssignment:
    """The result of matching one frame's masks to the tokens."""

    mask_to_token: np.ndarray
    """[L] token row matched to each mask, or :data:`UNMATCHED`."""
    rejected: np.ndarray
    """[L] bool: a token was assigned but its Dice cost exceeded the threshold."""
    cost: np.ndarray
    """[L, N] total matching cost."""
    dice: np.ndarray
    """[L, N] Dice part of the cost."""
    split_claims: list[tuple[int, int]] = field(default_factory=list)
    """(token row, mask index) pairs: the token is the mask's Dice-best token but is matched to
    another mask (the paper's split signal)."""
    covered: list[tuple[int, int]] = field(default_factory=list)
    """(token row, mask index) pairs: an unmatched token that lies inside a matched mask (set by
    :func:`covered_tokens`; the mask supervises the union of its tokens)."""

    @property
    def matched_pairs(self) -> list[tuple[int, int]]:
        """(mask index, token row) of accepted matches."""
        return [(m, int(t)) for m, t in enumerate(self.mask_to_token) if t != UNMATCHED]

    @property
    def mask_groups(self) -> list[tuple[int, tuple[int, ...]]]:
        """(mask index, token rows) of accepted matches: the matched token first, then the
        tokens the mask covers."""
        extra: dict[int, list[int]] = {}
        for row, mask in self.covered:
            extra.setdefault(mask, []).append(row)
        return [(m, (t, *extra.get(m, ()))) for m, t in self.matched_pairs]


def assign_masks(dice: np.ndarray, bce: np.ndarray, reject_dice_cost: float,
                 class_cost: np.ndarray | None = None,
                 may_claim: np.ndarray | None = None) -> MaskAssignment:
    """Hungarian assignment of L masks to N tokens on ``dice + bce (+ class_cost)``.

    Args:
        dice: [L, N] Dice costs.
        bce: [L, N] BCE costs.
        reject_dice_cost: matches with a Dice cost above this are rejected.
        class_cost: optional [L, N] extra cost (the code's class term).
        may_claim: optional [L, N] bool: mask l may raise a split signal for token n (e.g. same
            class); default: all.

    Returns:
        The assignment. With L > N only N masks can be matched; the rest stay unmatched.
    """
    dice = np.asarray(dice, np.float64)
    num_masks, num_tokens = dice.shape
    cost = dice + np.asarray(bce, np.float64)
    if class_cost is not None:
        cost = cost + np.asarray(class_cost, np.float64)
    mask_to_token = np.full(num_masks, UNMATCHED, np.int64)
    rejected = np.zeros(num_masks, bool)
    if num_masks == 0 or num_tokens == 0:
        return MaskAssignment(mask_to_token, rejected, cost, dice)
    rows, cols = linear_sum_assignment(cost)
    for mask, token in zip(rows, cols):
        if dice[mask, token] > reject_dice_cost:
            rejected[mask] = True
        else:
            mask_to_token[mask] = token
    owner = {int(t): int(m) for m, t in enumerate(mask_to_token) if t != UNMATCHED}
    claims = []
    for mask in range(num_masks):
        best = int(np.argmin(dice[mask]))
        if may_claim is not None and not may_claim[mask, best]:
            continue
        if (best != mask_to_token[mask] and dice[mask, best] <= reject_dice_cost
                and owner.get(best, mask) != mask):
            claims.append((best, mask))
    return MaskAssignment(mask_to_token, rejected, cost, dice, claims)


def covered_tokens(inside_mass: np.ndarray, token_mass: np.ndarray,
                   assignment: MaskAssignment, candidate_rows: np.ndarray,
                   min_containment: float, min_inside_mass: float,
                   compatible: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Unmatched tokens that lie inside a matched mask of the frame (under-segmentation).

    A candidate token that no mask matched is covered by the matched mask holding the largest
    share of its rendered mass on the frame's rays, when that share is at least
    ``min_containment``, the mass inside is at least ``min_inside_mass`` (in rays) and the
    token may stand for that mask (``compatible``, e.g. same class).

    Args:
        inside_mass: [L, N] sum over the frame's rays of token n's rendered mask inside mask l.
        token_mass: [N] sum over the frame's rays of token n's rendered mask.
        assignment: the frame's assignment (matched masks and tokens).
        candidate_rows: token rows that may be covered (e.g. the tokens in view).
        min_containment: share of the token's mass that must lie inside the mask, in (0, 1].
        min_inside_mass: mass inside the mask needed, in rays.
        compatible: optional [L, N] bool: token n may be covered by mask l (default: all).

    Returns:
        (token row, mask index) pairs, at most one per token.
    """
    matched_tokens = {t for _, t in assignment.matched_pairs}
    matched_masks = np.array([m for m, _ in assignment.matched_pairs], np.int64)
    if not len(matched_masks):
        return []
    covered = []
    for row in np.asarray(candidate_rows, np.int64):
        if int(row) in matched_tokens or token_mass[row] <= 0:
            continue
        inside = inside_mass[matched_masks, row]
        best = int(np.argmax(inside))
        if compatible is not None and not compatible[matched_masks[best], row]:
            continue
        if (inside[best] >= min_inside_mass
                and inside[best] >= min_containment * token_mass[row]):
            covered.append((int(row), int(matched_masks[best])))
    return covered
