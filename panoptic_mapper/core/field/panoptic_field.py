"""The neural panoptic field: world point -> SDF, semantic logits, instance keys, token masks.

Three hash-grid volumes (PR++ section 1.3-1.6): ``s(p) = h_G(Psi_G(p))`` (metres),
``l_S(p) = h_S(Psi_S(p))`` (C logits), ``f_k(p) = Psi_I(p)`` (no MLP), plus the instance tokens
and the token-side networks. The S-density sharpness ``xi = exp(log_inv_s)`` lives here too,
since it belongs to the geometry.

Owns: :class:`SceneBox` (world <-> unit cube), :class:`FieldOutput`, :class:`PanopticField`.
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


@dataclass(frozen=True)
class SceneBox:
    """An axis-aligned cube in the world frame that the hash grids cover (uniform scale)."""

    center_m: tuple[float, float, float]
    """Cube centre, metres."""
    half_size_m: float
    """Half edge length, metres."""

    @classmethod
    def from_points(cls, points_m: np.ndarray, margin_m: float) -> "SceneBox":
        """The smallest cube around ``points_m`` [N, 3] (N >= 1) plus ``margin_m``."""
        points = np.asarray(points_m, np.float64).reshape(-1, 3)
        if len(points) == 0 or not np.all(np.isfinite(points)):
            raise InvalidInputError("points_m", len(points),
                                    "need finite points to fix the scene box", kind="field")
        low, high = points.min(axis=0), points.max(axis=0)
        center = (low + high) / 2.0
        half = float((high - low).max() / 2.0 + margin_m)
        return cls(tuple(float(c) for c in center), max(half, 1e-3))

    @classmethod
    def around_bounds(cls, min_m: np.ndarray, max_m: np.ndarray) -> "SceneBox":
        """The smallest cube around the axis-aligned box ``min_m`` .. ``max_m`` ([3] each)."""
        low, high = np.asarray(min_m, np.float64), np.asarray(max_m, np.float64)
        return cls(tuple(float(c) for c in (low + high) / 2.0),
                   max(float((high - low).max() / 2.0), 1e-3))

    @property
    def bounds_m(self) -> tuple[np.ndarray, np.ndarray]:
        """([3] min corner, [3] max corner), metres."""
        center = np.asarray(self.center_m)
        return center - self.half_size_m, center + self.half_size_m

    def __str__(self) -> str:
        low, high = self.bounds_m
        return (f"[{', '.join(f'{v:.2f}' for v in low)}] .. "
                f"[{', '.join(f'{v:.2f}' for v in high)}] m")

    def normalize(self, points_m: torch.Tensor) -> torch.Tensor:
        """[N, 3] world points -> unit-cube coordinates (not clamped)."""
        center = torch.as_tensor(self.center_m, dtype=points_m.dtype, device=points_m.device)
        return (points_m - center) / (2.0 * self.half_size_m) + 0.5

    def contains(self, points_m: np.ndarray) -> np.ndarray:
        """[N] bool: points inside the cube."""
        offset = np.abs(np.asarray(points_m, np.float64) - np.asarray(self.center_m))
        return np.all(offset <= self.half_size_m, axis=-1)


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
        box: the cube the grids cover.
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
