"""Soft semantic voting: 2D panoptic segments -> per-pixel label probabilities -> weighted votes
fused into per-voxel label evidence (the training-free GNeSF scheme of
``shared/reference/method-gnesf.md`` section 4.2, driven by the observed pixels).

Per sampled pixel ``u`` of a frame, the segment covering it (label ``l``, score ``s``) gives the
distribution ``p[l] = s, p[unknown] = 1 - s``; an uncovered pixel gives ``p[unknown] = 1`` with
the reduced weight ``background_vote_weight``. The vote weight is

    w(u) = exp(-distance_decay_per_m * z) * max(cos(incidence), min_incidence_cos)
           * boundary(d_edge) * s ** score_exponent

and a voxel's evidence ``E`` (one non-negative mass per channel; channel 0 = unknown) is updated
as ``E <- E + w * p``, then rescaled so that ``sum(E) <= count_cap``. That is GNeSF's
count-weighted running average ``S <- (C S + c s) / (C + c)`` with ``C = sum(E)`` capped at
``C_max``, so an old voxel still moves by at least ``c / C_max`` per vote.

Owns: label <-> channel mapping, vote weights, the fusion update and the evidence -> label rule.
Does not own: which voxels a pixel votes into (the map) or the instance layer (``core/tracking``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.labels.registry import LabelRegistry
from panoptic_mapper.core.types import VOID_LABEL_ID

UNKNOWN_CHANNEL = 0
"""Evidence channel of "unknown / background"."""


@dataclass
class VotingConfig(ConfigBase):
    """Per-pixel vote weights and the per-voxel label fusion rule."""

    sample_stride_px: int = 4
    """Pixels are sampled on a grid with this step (both axes) for voting and association."""
    background_vote_weight: float = 0.3
    """Weight of a pixel covered by no segment; it votes for the unknown channel."""
    distance_decay_per_m: float = 0.2
    """Vote weight factor exp(-decay * depth): far views count less, 1/m."""
    min_incidence_cos: float = 0.25
    """Floor of the incidence-angle factor cos(angle between surface normal and ray)."""
    boundary_width_px: float = 8.0
    """Distance to the segment boundary (full-resolution pixels) beyond which a pixel gets full
    weight; closer pixels are ramped down linearly to ``boundary_min_weight``."""
    boundary_min_weight: float = 0.2
    """Weight factor of a pixel right at a segment boundary."""
    score_exponent: float = 1.0
    """Vote weight factor score ** exponent (0 disables it; the score also sets p[label])."""
    count_cap: float = 30.0
    """C_max: cap on a voxel's total evidence mass, so that the map can still change."""
    min_label_fraction: float = 0.3
    """A voxel is labelled only if its best label holds at least this share of its evidence
    (the rest goes to other labels or to unknown); otherwise it is void."""
    visibility_delta_voxels: float = 1.5
    """Depth test: a pixel votes only if the fused |sdf| at its voxel is within this many voxels,
    i.e. the fused surface agrees with the measured depth."""

    def validate(self) -> None:
        require(1 <= self.sample_stride_px <= 32, "sample_stride_px", self.sample_stride_px,
                "must be in [1, 32] px")
        require(0.0 <= self.background_vote_weight <= 1.0, "background_vote_weight",
                self.background_vote_weight, "must be in [0, 1]")
        require(self.distance_decay_per_m >= 0.0, "distance_decay_per_m",
                self.distance_decay_per_m, "must be >= 0 1/m")
        require(0.0 <= self.min_incidence_cos <= 1.0, "min_incidence_cos",
                self.min_incidence_cos, "must be in [0, 1]")
        require(self.boundary_width_px >= 0.0, "boundary_width_px", self.boundary_width_px,
                "must be >= 0 px")
        require(0.0 <= self.boundary_min_weight <= 1.0, "boundary_min_weight",
                self.boundary_min_weight, "must be in [0, 1]")
        require(self.score_exponent >= 0.0, "score_exponent", self.score_exponent,
                "must be >= 0")
        require(self.count_cap > 0.0, "count_cap", self.count_cap, "must be > 0")
        require(0.0 <= self.min_label_fraction <= 1.0, "min_label_fraction",
                self.min_label_fraction, "must be in [0, 1]")
        require(self.visibility_delta_voxels > 0.0, "visibility_delta_voxels",
                self.visibility_delta_voxels, "must be > 0 voxels")


class LabelChannels:
    """Dense evidence channels for a registry: channel 0 = unknown, then one per label."""

    def __init__(self, registry: LabelRegistry):
        self.label_ids = np.array([VOID_LABEL_ID] + [lab.id for lab in registry], np.int32)
        """[C] label id of each channel (0 for the unknown channel)."""
        self.channel_of = np.zeros(registry.max_id + 1, np.int64)
        """[max_id + 1] channel of each label id (0 for ids not in the registry)."""
        self.channel_of[self.label_ids[1:]] = np.arange(1, self.label_ids.size)
        self.is_thing = np.array([False] + [lab.is_thing for lab in registry], bool)
        """[C] True for channels of thing labels."""

    @property
    def count(self) -> int:
        return int(self.label_ids.size)


@dataclass
class PixelVotes:
    """Label votes of the sampled pixels of one frame (one row per sample)."""

    channel: np.ndarray
    """[N] int64 evidence channel of the pixel's segment (0 = none)."""
    p_label: np.ndarray
    """[N] float32 probability given to ``channel`` (the score; 0 when ``channel`` is 0)."""
    weight: np.ndarray
    """[N] float32 vote weight (0 = no vote)."""


def boundary_distance_px(segment_ids: np.ndarray, stride_px: int, cap_px: float) -> np.ndarray:
    """Distance from each pixel of a strided segment-id grid to the nearest segment boundary.

    Only distances below ``cap_px`` matter to the vote weights, so the boundary is grown a few
    grid steps (8-neighbourhood, i.e. chessboard distance) instead of running a full distance
    transform.

    Args:
        segment_ids: [h, w] segment ids sampled every ``stride_px`` pixels.
        stride_px: sampling step, to express the result in full-resolution pixels.
        cap_px: distances are clipped to this.

    Returns:
        [h, w] float32 distance in full-resolution pixels; a pixel whose 4-neighbour in the grid
        carries another id is at distance ``stride_px / 2`` (the boundary lies between them).
    """
    ids = segment_ids
    edge = np.zeros(ids.shape, bool)
    horizontal = ids[:, 1:] != ids[:, :-1]
    vertical = ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    dist = np.full(ids.shape, cap_px, np.float32)
    first = 0.5 * stride_px
    if first >= cap_px or not edge.any():
        return dist
    dist[edge] = first
    reached = edge
    steps = int(np.ceil((cap_px - first) / stride_px))
    for step in range(1, steps):
        grown = reached.copy()
        grown[1:, :] |= reached[:-1, :]
        grown[:-1, :] |= reached[1:, :]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        dist[grown & ~reached] = min(cap_px, first + step * stride_px)
        reached = grown
    return dist


def vote_weights(depth_m: np.ndarray, cos_incidence: np.ndarray, edge_distance_px: np.ndarray,
                 score: np.ndarray, config: VotingConfig) -> np.ndarray:
    """Per-pixel vote weight (see module docstring); all inputs [N], output [N] float32."""
    w_dist = np.exp(-config.distance_decay_per_m * depth_m)
    w_angle = np.maximum(np.abs(cos_incidence), config.min_incidence_cos)
    if config.boundary_width_px > 0.0:
        ramp = np.clip(edge_distance_px / config.boundary_width_px, 0.0, 1.0)
        w_edge = config.boundary_min_weight + (1.0 - config.boundary_min_weight) * ramp
    else:
        w_edge = 1.0
    w_score = np.power(score, config.score_exponent) if config.score_exponent else 1.0
    return (w_dist * w_angle * w_edge * w_score).astype(np.float32)


def fuse_label_votes(evidence: np.ndarray, mass: np.ndarray, voxels: np.ndarray,
                     votes: PixelVotes, count_cap: float) -> np.ndarray:
    """Add pixel votes to per-voxel evidence in place, then apply the ``count_cap``.

    Args:
        evidence: [M, C] float32 evidence of all voxels (a view into the grid).
        mass: [M] float32 total evidence per voxel (a view into the grid), kept equal to
            ``evidence.sum(axis=1)``.
        voxels: [N] int64 flat voxel index of each vote (>= 0).
        votes: the votes, one per entry of ``voxels``.
        count_cap: C_max.

    Returns:
        [U] int64 the distinct voxels that were updated.
    """
    keep = votes.weight > 0
    voxels = voxels[keep]
    if voxels.size == 0:
        return np.zeros(0, np.int64)
    channel = votes.channel[keep]
    weight = votes.weight[keep].astype(np.float64)
    p_label = np.where(channel == UNKNOWN_CHANNEL, 0.0, votes.p_label[keep])
    touched, slot = np.unique(voxels, return_inverse=True)
    num_channels = evidence.shape[1]
    size = touched.size * num_channels
    delta = np.bincount(slot * num_channels + channel, weights=weight * p_label, minlength=size)
    delta += np.bincount(slot * num_channels + UNKNOWN_CHANNEL, weights=weight * (1.0 - p_label),
                         minlength=size)
    updated = evidence[touched] + delta.reshape(-1, num_channels).astype(np.float32)
    total = updated.sum(axis=1, keepdims=True)
    scale = np.where(total > count_cap, count_cap / np.maximum(total, 1e-12), 1.0)
    evidence[touched] = updated * scale.astype(np.float32)
    mass[touched] = np.minimum(total[:, 0], count_cap)
    return touched


@dataclass
class VoxelLabels:
    """Labels decided from evidence."""

    label_ids: np.ndarray
    """[M] int32 registry label id (0 = void)."""
    channel: np.ndarray
    """[M] int64 winning channel (0 = void)."""
    confidence: np.ndarray
    """[M] float32 share of the evidence held by the winning label (0 for void)."""


def labels_from_evidence(evidence: np.ndarray, channels: LabelChannels,
                         min_label_fraction: float) -> VoxelLabels:
    """Argmax over the label channels (unknown excluded), void unless the winner holds at least
    ``min_label_fraction`` of the total evidence. ``evidence`` is [M, C]."""
    evidence = np.asarray(evidence, np.float32).reshape(-1, channels.count)
    if evidence.shape[0] == 0:
        return VoxelLabels(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float32))
    best = np.argmax(evidence[:, 1:], axis=1) + 1
    mass = np.take_along_axis(evidence, best[:, None], axis=1)[:, 0]
    total = evidence.sum(axis=1)
    share = np.where(total > 0, mass / np.maximum(total, 1e-12), 0.0).astype(np.float32)
    ok = (mass > 0) & (share >= min_label_fraction)
    channel = np.where(ok, best, 0).astype(np.int64)
    return VoxelLabels(label_ids=channels.label_ids[channel], channel=channel,
                       confidence=np.where(ok, share, 0.0).astype(np.float32))
