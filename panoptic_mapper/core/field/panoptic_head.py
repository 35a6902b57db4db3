"""The parameter-free Bayes panoptic head and the inference rules that read labels from it.

Bayes head (PR++ Eq. 18-21), per point::

    P_thing(p) = sum_{c in things} l_S,c(p)
    l_P(p)     = [ l_S,0(p), l_S,stuff_1..S(p), P_thing(p) * m_i(p) / sum_k m_k(p) for i in 1..N ]

which sums to one because the semantic probabilities do. Inference (PR++ section 1.8): panoptic
class = argmax l_P; a stuff winner gives its stuff label; a token winner gives the token's
instance and, by default, the token class ``argmax h_SI(F_i)`` as its label.

Owns: :func:`bayes_panoptic_probabilities`, :func:`decode_panoptic` and :class:`PanopticDecoding`.
Does not own: rendering of these probabilities or the losses on them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NO_TOKEN = -1
"""Token index of points that belong to no token."""


def bayes_panoptic_probabilities(semantic_probs: torch.Tensor, token_masks: torch.Tensor,
                                 num_stuff: int) -> torch.Tensor:
    """Panoptic distribution [P, 1 + S + N] from semantic probabilities and token masks.

    Args:
        semantic_probs: [P, 1 + S + T] softmax of the semantic head (class 0 = unlabelled).
        token_masks: [P, N] per-token binary mask probabilities m_i(p).
        num_stuff: S.

    Returns:
        [P, 1 + S + N]; rows sum to one. With no tokens (N = 0) the thing mass has no token
        to go to and is given to class 0 (unlabelled).
    """
    stuff = semantic_probs[:, :1 + num_stuff]
    thing_mass = semantic_probs[:, 1 + num_stuff:].sum(dim=-1, keepdim=True)  # [P, 1]
    if token_masks.shape[1] == 0:
        return torch.cat([stuff[:, :1] + thing_mass, stuff[:, 1:]], dim=-1)
    total = token_masks.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.cat([stuff, thing_mass * token_masks / total], dim=-1)


@dataclass
class PanopticDecoding:
    """Per-point labels read from the field (all [P])."""

    semantic_class: torch.Tensor
    """int64 semantic class index (0 = unlabelled), see :class:`ClassSpace`."""
    token_index: torch.Tensor
    """int64 row of the winning token, or :data:`NO_TOKEN`."""
    confidence: torch.Tensor
    """float probability of the winning panoptic (or semantic) class."""


def decode_panoptic(semantic_probs: torch.Tensor, token_masks: torch.Tensor,
                    token_class_probs: torch.Tensor, num_stuff: int, use_panoptic_head: bool,
                    thing_label_from_token: bool,
                    stuff_ambiguity: tuple[float, float] = (0.0, 0.0)) -> PanopticDecoding:
    """Labels per point.

    Args:
        semantic_probs: [P, 1 + S + T] semantic probabilities.
        token_masks: [P, N] token mask probabilities.
        token_class_probs: [N, T + 1] softmax of h_SI (index 0 = no object).
        num_stuff: S.
        use_panoptic_head: argmax of the Bayes distribution (True), or the ablation without it:
            argmax of the semantic head, and the argmax token for thing points.
        thing_label_from_token: a thing point's class is its token's ``argmax h_SI`` over the
            thing classes (True), or the semantic head's argmax over the thing classes.
        stuff_ambiguity: points whose stuff mass lies strictly inside ``(low, high)`` become
            unlabelled (the code uses (0.2, 0.8)); ``low >= high`` disables the rule.
    """
    num_points = semantic_probs.shape[0]
    num_tokens = token_masks.shape[1]
    stuff_end = 1 + num_stuff
    if use_panoptic_head:
        panoptic = bayes_panoptic_probabilities(semantic_probs, token_masks, num_stuff)
        confidence, winner = panoptic.max(dim=-1)
        is_thing = winner >= stuff_end
        token_index = torch.where(is_thing, winner - stuff_end, torch.full_like(winner, NO_TOKEN))
        semantic_class = torch.where(is_thing, torch.zeros_like(winner), winner)
    else:
        confidence, semantic_winner = semantic_probs.max(dim=-1)
        is_thing = (semantic_winner >= stuff_end) & (num_tokens > 0)
        if num_tokens:
            best_token = token_masks.argmax(dim=-1)
        else:
            best_token = torch.zeros(num_points, dtype=torch.long, device=semantic_probs.device)
        token_index = torch.where(is_thing, best_token, torch.full_like(best_token, NO_TOKEN))
        semantic_class = torch.where(is_thing, torch.zeros_like(semantic_winner),
                                     semantic_winner)
    if num_tokens and bool(is_thing.any()):
        if thing_label_from_token:
            token_thing_class = token_class_probs[:, 1:].argmax(dim=-1) + 1  # [N] in 1..T
            thing_class = token_thing_class[token_index.clamp_min(0)] + num_stuff
        else:
            thing_class = semantic_probs[:, stuff_end:].argmax(dim=-1) + stuff_end
        semantic_class = torch.where(is_thing, thing_class, semantic_class)
    low, high = stuff_ambiguity
    if low < high:
        stuff_mass = semantic_probs[:, :stuff_end].sum(dim=-1)
        ambiguous = (stuff_mass > low) & (stuff_mass < high)
        semantic_class = torch.where(ambiguous, torch.zeros_like(semantic_class), semantic_class)
        token_index = torch.where(ambiguous, torch.full_like(token_index, NO_TOKEN), token_index)
    return PanopticDecoding(semantic_class.long(), token_index.long(), confidence)
