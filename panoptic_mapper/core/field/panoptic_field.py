"""The neural panoptic field: world point -> SDF, semantic logits, instance keys, token masks.

Three hash-grid volumes (PR++ section 1.3-1.6): ``s(p) = h_G(Psi_G(p))`` (metres),
``l_S(p) = h_S(Psi_S(p))`` (C logits), ``f_k(p) = Psi_I(p)`` (no MLP), plus the instance tokens
and the token-side networks. The S-density sharpness ``xi = exp(log_inv_s)`` lives here too,
since it belongs to the geometry.

Owns: :class:`SceneBox` (world <-> unit cube, per axis), :class:`FieldOutput`,
:class:`PanopticField`.
Does not own: ray sampling and rendering (``rendering.py``), losses, training.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import PanopticFieldConfig, TokenConfig
from panoptic_mapper.core.field.encodings import HashGridEncoding
from panoptic_mapper.core.field.gaussian_tokens import (InstanceModule, InstanceTokens,
                                                        attention_mask)
from panoptic_mapper.core.field.panoptic_head import bayes_panoptic_probabilities


class FieldOutput(enum.Enum):
    """What the field can evaluate at a point."""

    SDF = "sdf"
    """[P] signed distance, metres (positive outside)."""
    SEMANTIC_LOGITS = "semantic_logits"
    """[P, C] semantic logits."""
    SEMANTIC_PROBS = "semantic_probs"
    """[P, C] softmax of the semantic logits."""
    INSTANCE_KEYS = "instance_keys"
    """[P, D] key features f_k."""
    TOKEN_MASKS = "token_masks"
    """[P, N] token mask probabilities m_i."""
    PANOPTIC_PROBS = "panoptic_probs"
    """[P, 1 + S + N] Bayes panoptic distribution."""


MIN_HALF_SIZE_M = 0.05
"""Smallest half size of the scene box on any axis, metres (a flat or single-point cloud would
otherwise give a box so thin that depth noise lands outside it)."""
MAX_ASPECT_RATIO = 4.0
"""A box axis is at least 1 / this of the longest axis. Each axis maps to the unit cube on its
own, so a short axis gets proportionally finer hash-grid cells; the bound keeps the finest level
at most this anisotropic, and the cells a wall touches (hash collisions at the fine levels) at
most this many times those of the cube around the same box. A room (about 2:1) is not
affected."""


def _half_sizes(value) -> tuple[float, float, float]:
    """[3] half sizes from one number (a cube) or three."""
    values = np.broadcast_to(np.asarray(value, np.float64), (3,))
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class SceneBox:
    """An axis-aligned box in the world frame that the hash grids cover.

    Each axis is mapped to [0, 1] on its own (:meth:`normalize`), so the grids' resolution is per
    box axis: a box shorter along z has finer z cells. Built from points or bounds, a box keeps
    every axis at least :data:`MIN_HALF_SIZE_M` and 1 / :data:`MAX_ASPECT_RATIO` of its longest
    axis. ``half_size_m`` may be given as one number (a cube: checkpoints written before the
    box was per axis).
    """

    center_m: tuple[float, float, float]
    """Box centre, metres."""
    half_size_m: tuple[float, float, float]
    """Half edge length per axis (x, y, z), metres."""

    def __post_init__(self) -> None:
        center = tuple(float(c) for c in np.asarray(self.center_m, np.float64).reshape(3))
        half = _half_sizes(self.half_size_m)
        if not (all(np.isfinite(center)) and all(np.isfinite(h) and h > 0 for h in half)):
            raise InvalidInputError("scene_box", f"{list(center)} +- {list(half)}",
                                    "needs a finite centre and positive finite half sizes",
                                    kind="field")
        object.__setattr__(self, "center_m", center)
        object.__setattr__(self, "half_size_m", half)

    @classmethod
    def from_points(cls, points_m: np.ndarray, margin_m: float) -> "SceneBox":
        """The smallest box around ``points_m`` [N, 3] (N >= 1) plus ``margin_m`` on every side
        (then widened to the minimum size and aspect ratio)."""
        points = np.asarray(points_m, np.float64).reshape(-1, 3)
        if len(points) == 0 or not np.all(np.isfinite(points)):
            raise InvalidInputError("points_m", len(points),
                                    "need finite points to fix the scene box", kind="field")
        return cls.around_bounds(points.min(axis=0) - margin_m, points.max(axis=0) + margin_m)

    @classmethod
    def around_bounds(cls, min_m: np.ndarray, max_m: np.ndarray) -> "SceneBox":
        """The box ``min_m`` .. ``max_m`` ([3] each), widened about its centre where an axis is
        below :data:`MIN_HALF_SIZE_M` or 1 / :data:`MAX_ASPECT_RATIO` of the longest axis."""
        low, high = np.asarray(min_m, np.float64), np.asarray(max_m, np.float64)
        return cls.widened((low + high) / 2.0, (high - low) / 2.0)

    @classmethod
    def widened(cls, center_m: np.ndarray, half_size_m: np.ndarray) -> "SceneBox":
        """The box ``center_m`` +- ``half_size_m`` ([3] each) with every axis at least
        :data:`MIN_HALF_SIZE_M` and 1 / :data:`MAX_ASPECT_RATIO` of the longest axis (about the
        same centre; axes that need no widening keep their exact half size)."""
        half = np.maximum(np.asarray(half_size_m, np.float64), MIN_HALF_SIZE_M)
        half = np.maximum(half, half.max() / MAX_ASPECT_RATIO)
        return cls(tuple(center_m), tuple(half))

    @property
    def bounds_m(self) -> tuple[np.ndarray, np.ndarray]:
        """([3] min corner, [3] max corner), metres."""
        center, half = np.asarray(self.center_m), np.asarray(self.half_size_m)
        return center - half, center + half

    @property
    def size_m(self) -> np.ndarray:
        """[3] edge lengths, metres."""
        return 2.0 * np.asarray(self.half_size_m)

    def __str__(self) -> str:
        low, high = self.bounds_m
        return (f"[{', '.join(f'{v:.2f}' for v in low)}] .. "
                f"[{', '.join(f'{v:.2f}' for v in high)}] m")

    def normalize(self, points_m: torch.Tensor) -> torch.Tensor:
        """[N, 3] world points -> unit-cube coordinates, each axis on its own (not clamped)."""
        center = torch.as_tensor(self.center_m, dtype=points_m.dtype, device=points_m.device)
        half = torch.as_tensor(self.half_size_m, dtype=points_m.dtype, device=points_m.device)
        return (points_m - center) / (2.0 * half) + 0.5

    def outside_distance_m(self, points_m: np.ndarray) -> np.ndarray:
        """[N] how far each point lies outside the box, metres: the largest excess over the
        half size on any axis (<= 0 inside)."""
        offset = np.abs(np.asarray(points_m, np.float64).reshape(-1, 3) - np.asarray(self.center_m))
        return (offset - np.asarray(self.half_size_m)).max(axis=1)

    def contains(self, points_m: np.ndarray) -> np.ndarray:
        """[N] bool: points inside the box (faces included)."""
        offset = np.abs(np.asarray(points_m, np.float64) - np.asarray(self.center_m))
        return np.all(offset <= np.asarray(self.half_size_m), axis=-1)


def _decoder(in_dim: int, hidden_dim: int, out_dim: int, beta: float) -> nn.Sequential:
    """One hidden layer with Softplus(beta), then a linear output (the code's PositionDecoder)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Softplus(beta=beta),
                         nn.Linear(hidden_dim, out_dim))


class PanopticField(nn.Module):
    """The three volumes, the decoders, the tokens and the token-side networks.

    Args:
        config: encodings and decoders.
        token_config: mask constants and the Gaussian-prior switch.
        classes: semantic and token class spaces.
        box: the box the grids cover.
        tokens: the instance tokens (may hold zero tokens); moved to ``device``.
        init_inv_s_per_m: initial S-density sharpness, 1/m.
        device: where every parameter lives and the field computes (None: the CPU); the
            grids choose their implementation for it (tiny-cuda-nn only on CUDA).
    """

    def __init__(self, config: PanopticFieldConfig, token_config: TokenConfig,
                 classes: ClassSpace, box: SceneBox, tokens: InstanceTokens,
                 init_inv_s_per_m: float, device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        self.token_config = token_config
        self.classes = classes
        self.box = box
        self.sdf_encoding = HashGridEncoding(config.sdf_grid, device)
        self.sdf_decoder = _decoder(config.sdf_grid.output_dim, config.decoder_hidden_dim, 1,
                                    config.softplus_beta)
        self.semantic_encoding = HashGridEncoding(config.semantic_grid, device)
        self.semantic_decoder = _decoder(config.semantic_grid.output_dim,
                                         config.decoder_hidden_dim,
                                         classes.num_semantic_classes, config.softplus_beta)
        self.instance_encoding = HashGridEncoding(config.instance_grid, device)
        key_dim = config.instance_grid.output_dim
        self.instance_module = InstanceModule(key_dim, key_dim, config.class_head_hidden_dim,
                                              classes.num_token_classes)
        self.tokens = tokens
        self.log_inv_s = nn.Parameter(torch.tensor(math.log(init_inv_s_per_m)))
        if device is not None:
            self.to(device)

    @property
    def key_dim(self) -> int:
        """D: dimension of key and query features."""
        return self.config.instance_grid.output_dim

    def inv_s(self) -> torch.Tensor:
        """Scalar S-density sharpness xi, 1/m."""
        return torch.exp(self.log_inv_s)

    def sdf(self, points_m: torch.Tensor) -> torch.Tensor:
        """[P] signed distance at [P, 3] world points, metres."""
        return self.sdf_decoder(self.sdf_encoding(self.box.normalize(points_m)))[:, 0]

    def semantic_logits(self, points_m: torch.Tensor) -> torch.Tensor:
        """[P, C] semantic logits."""
        return self.semantic_decoder(self.semantic_encoding(self.box.normalize(points_m)))

    def instance_keys(self, points_m: torch.Tensor) -> torch.Tensor:
        """[P, D] key features f_k."""
        return self.instance_encoding(self.box.normalize(points_m))

    def token_masks(self, points_m: torch.Tensor,
                    keys: torch.Tensor | None = None) -> torch.Tensor:
        """[P, N] token mask probabilities (keys are computed when not given)."""
        if keys is None:
            keys = self.instance_keys(points_m)
        if self.tokens.num_tokens == 0:
            return keys.new_zeros(keys.shape[0], 0)
        queries = self.instance_module.queries(self.tokens.features)
        gaussian = self.tokens.gaussian(points_m) if self.token_config.gaussian_prior else None
        return attention_mask(keys, queries, gaussian, self.token_config.gaussian_eps)

    def token_class_logits(self) -> torch.Tensor:
        """[N, T + 1] class logits of the tokens (index 0 = no object)."""
        return self.instance_module.class_logits(self.tokens.class_features)

    def forward(self, points_m: torch.Tensor,
                outputs: Iterable[FieldOutput]) -> dict[FieldOutput, torch.Tensor]:
        """Evaluate the requested outputs at [P, 3] world points."""
        wanted = set(outputs)
        result: dict[FieldOutput, torch.Tensor] = {}
        if FieldOutput.SDF in wanted:
            result[FieldOutput.SDF] = self.sdf(points_m)
        needs_semantic = wanted & {FieldOutput.SEMANTIC_LOGITS, FieldOutput.SEMANTIC_PROBS,
                                   FieldOutput.PANOPTIC_PROBS}
        if needs_semantic:
            logits = self.semantic_logits(points_m)
            result[FieldOutput.SEMANTIC_LOGITS] = logits
            result[FieldOutput.SEMANTIC_PROBS] = torch.softmax(logits, dim=-1)
        needs_masks = wanted & {FieldOutput.INSTANCE_KEYS, FieldOutput.TOKEN_MASKS,
                                FieldOutput.PANOPTIC_PROBS}
        if needs_masks:
            keys = self.instance_keys(points_m)
            result[FieldOutput.INSTANCE_KEYS] = keys
            result[FieldOutput.TOKEN_MASKS] = self.token_masks(points_m, keys)
        if FieldOutput.PANOPTIC_PROBS in wanted:
            result[FieldOutput.PANOPTIC_PROBS] = bayes_panoptic_probabilities(
                result[FieldOutput.SEMANTIC_PROBS], result[FieldOutput.TOKEN_MASKS],
                self.classes.num_stuff)
        return {key: value for key, value in result.items() if key in wanted}
