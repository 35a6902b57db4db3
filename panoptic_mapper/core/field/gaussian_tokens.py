"""Instance tokens as learnable 3D Gaussians, and the Gaussian-modulated cross-attention mask.

A token i is a Gaussian (mean ``mu_i`` in metres, rotation quaternion ``q_i = (w, x, y, z)``,
per-axis standard deviation ``lambda_i = exp(log_scale_i)``), a query feature ``f_q,i`` and a class
feature ``F_i`` (PR++ Eq. 5-8). Its soft 3D mask at a point p with key feature ``f_k(p)`` is::

    Sigma_i = R(q_i) diag(lambda_i)^2 R(q_i)^T
    G_i(p)  = exp(-0.5 (p - mu_i)^T Sigma_i^-1 (p - mu_i))            # peak-normalised, in (0, 1]
    m_i(p)  = clip(sigmoid(f_k(p) . LayerNorm(W f_q,i + b)) * (G_i(p) + eps), 0, 1)

Each token keeps a stable integer id across pruning, splitting and spawning.

Owns: :class:`InstanceTokens` (parameters, ids, row surgery with optimizer state),
:class:`InstanceModule` (query projection and class head h_SI) and the mask math.
Does not own: when tokens are pruned or split (``token_manager.py``).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

TOKEN_PARAMETERS = ("means", "quats", "log_scales", "features", "class_features")
"""Names of the per-token parameters (one row per token)."""


def quaternion_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [N, 3, 3] of quaternions [N, 4] ``(w, x, y, z)`` (normalised here)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).view(*q.shape[:-1], 3, 3)


def rotation_to_quaternion(rotations: np.ndarray) -> np.ndarray:
    """Quaternions [N, 4] ``(w, x, y, z)`` of rotation matrices [N, 3, 3]."""
    xyzw = Rotation.from_matrix(np.asarray(rotations, np.float64).reshape(-1, 3, 3)).as_quat()
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)


def gaussian_modulation(points_m: torch.Tensor, means_m: torch.Tensor, quats: torch.Tensor,
                        scales_m: torch.Tensor) -> torch.Tensor:
    """Peak-normalised Gaussian densities G [P, N] of points [P, 3] under N Gaussians.

    ``G = exp(-0.5 * |diag(1/lambda) R^T (p - mu)|^2)``, which equals the Mahalanobis form with
    ``Sigma = R diag(lambda)^2 R^T``.
    """
    rotations = quaternion_to_rotation(quats)  # [N, 3, 3]
    offsets = points_m[:, None, :] - means_m[None, :, :]  # [P, N, 3]
    local = torch.einsum("pnj,njk->pnk", offsets, rotations) / scales_m[None]
    return torch.exp(-0.5 * (local * local).sum(dim=-1))


def attention_mask(keys: torch.Tensor, queries: torch.Tensor, gaussian: torch.Tensor | None,
                   eps: float) -> torch.Tensor:
    """Token mask probabilities m [P, N] from key features [P, D] and projected queries [N, D].

    ``m = clip(sigmoid(keys . queries) * (G + eps), 0, 1)``; without ``gaussian`` (the ablation
    without the spatial prior) ``m = sigmoid(keys . queries)``. Per-token independent binary
    probabilities: no softmax over points or over tokens.
    """
    similarity = torch.sigmoid(keys @ queries.T)
    if gaussian is None:
        return similarity
    return (similarity * (gaussian + eps)).clamp(0.0, 1.0)


class InstanceTokens(nn.Module):
    """N instance tokens: Gaussian parameters, query features, class features and stable ids."""

    def __init__(self, means_m: torch.Tensor, sigmas_m: torch.Tensor, quats: torch.Tensor,
                 features: torch.Tensor, class_features: torch.Tensor, ids: torch.Tensor):
        super().__init__()
        self.means = nn.Parameter(means_m.float())  # [N, 3] metres, world frame
        self.quats = nn.Parameter(quats.float())  # [N, 4] (w, x, y, z)
        self.log_scales = nn.Parameter(torch.log(sigmas_m.float()))  # [N, 3]
        self.features = nn.Parameter(features.float())  # [N, D] f_q
        self.class_features = nn.Parameter(class_features.float())  # [N, D_c] F_i
        self.register_buffer("ids", ids.long().clone())  # [N] stable token ids

    @classmethod
    def create(cls, means_m: np.ndarray, sigmas_m: np.ndarray, ids: np.ndarray,
               feature_dim: int, class_feature_dim: int, generator: torch.Generator,
               rotations: np.ndarray | None = None) -> "InstanceTokens":
        """New tokens at ``means_m`` [N, 3] with std ``sigmas_m`` [N, 3].

        Query features start small and random (N(0, 0.1^2)) so that tokens differ before any
        gradient; class features start at zero (uniform class distribution), as in the code.
        ``rotations`` [N, 3, 3] defaults to the identity.
        """
        means = np.asarray(means_m, np.float32).reshape(-1, 3)
        n = len(means)
        quats = (np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)) if rotations is None
                 else rotation_to_quaternion(rotations))
        return cls(torch.from_numpy(means),
                   torch.from_numpy(np.asarray(sigmas_m, np.float32).reshape(n, 3)),
                   torch.from_numpy(np.asarray(quats, np.float32).reshape(n, 4)),
                   0.1 * torch.randn(n, feature_dim, generator=generator),
                   torch.zeros(n, class_feature_dim),
                   torch.from_numpy(np.asarray(ids, np.int64).reshape(n)))

    @property
    def num_tokens(self) -> int:
        return int(self.means.shape[0])

    def scales(self) -> torch.Tensor:
        """[N, 3] standard deviations along the token axes, metres."""
        return torch.exp(self.log_scales)

    def covariances(self) -> torch.Tensor:
        """[N, 3, 3] ``Sigma = R diag(lambda)^2 R^T``, square metres."""
        rotations = quaternion_to_rotation(self.quats)
        scaled = rotations * self.scales()[:, None, :]
        return scaled @ scaled.transpose(1, 2)

    def gaussian(self, points_m: torch.Tensor) -> torch.Tensor:
        """[P, N] peak-normalised densities of points [P, 3]."""
        return gaussian_modulation(points_m, self.means, self.quats, self.scales())

    def ids_list(self) -> list[int]:
        """Stable ids in row order."""
        return [int(i) for i in self.ids.tolist()]

    @torch.no_grad()
    def take_rows(self, index: torch.Tensor, ids: torch.Tensor,
                  optimizer: torch.optim.Optimizer | None = None) -> None:
        """Replace the tokens by rows ``index`` of the current ones, with new ``ids``.

        Removes tokens (rows left out) and clones them (a row repeated); the Adam moments of
        every parameter follow their rows, so a clone starts with its source's moments (as the
        code's ``update_optimizater_add``). Parameters are new objects afterwards; ``optimizer``
        is updated in place. ``index`` and ``ids`` may be on any device.
        """
        index = index.long().to(self.means.device)
        for name in TOKEN_PARAMETERS:
            old = getattr(self, name)
            new = nn.Parameter(old.data.index_select(0, index).clone())
            if optimizer is not None:
                _swap_in_optimizer(optimizer, old, new, index)
            setattr(self, name, new)
        self.ids = ids.long().clone().to(self.ids.device)

    @torch.no_grad()
    def append_rows(self, means_m: np.ndarray, sigmas_m: np.ndarray, ids: np.ndarray,
                    optimizer: torch.optim.Optimizer | None = None,
                    generator: torch.Generator | None = None,
                    rotations: np.ndarray | None = None) -> None:
        """Add new tokens [R] at ``means_m`` [R, 3] with std ``sigmas_m`` [R, 3] along the axes
        ``rotations`` [R, 3, 3] (identity by default), fresh query features and zero class
        features; their Adam moments are zero."""
        count = len(np.asarray(ids).reshape(-1))
        device = self.means.device
        quats = (np.tile([1.0, 0.0, 0.0, 0.0], (count, 1)) if rotations is None
                 else rotation_to_quaternion(rotations))
        fresh = {
            "means": torch.as_tensor(np.asarray(means_m), dtype=torch.float32).view(count, 3),
            "quats": torch.as_tensor(quats, dtype=torch.float32).view(count, 4),
            "log_scales": torch.log(torch.as_tensor(np.asarray(sigmas_m),
                                                    dtype=torch.float32).view(count, 3)),
            "features": 0.1 * torch.randn(count, self.features.shape[1], generator=generator),
            "class_features": torch.zeros(count, self.class_features.shape[1]),
        }
        for name in TOKEN_PARAMETERS:
            old = getattr(self, name)
            new = nn.Parameter(torch.cat([old.data, fresh[name].to(device)]))
            if optimizer is not None:
                _extend_in_optimizer(optimizer, old, new, count)
            setattr(self, name, new)
        self.ids = torch.cat([self.ids, torch.as_tensor(np.asarray(ids), dtype=torch.long,
                                                        device=self.ids.device).view(count)])

    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor, means_m: torch.Tensor, sigmas_m: torch.Tensor,
                   optimizer: torch.optim.Optimizer | None = None) -> None:
        """Move tokens ``rows`` to new means [R, 3] and isotropic-axis sigmas [R, 3] and clear
        their Adam moments (used for tokens spawned or split towards a new place). The inputs
        may be on any device."""
        device = self.means.device
        rows = rows.long().to(device)
        self.means.data[rows] = means_m.float().to(device)
        self.log_scales.data[rows] = torch.log(sigmas_m.float()).to(device)
        if optimizer is None:
            return
        rows_total = self.num_tokens
        for name in ("means", "log_scales"):
            state = optimizer.state.get(getattr(self, name), {})
            for value in state.values():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows_total:
                    value[rows] = 0


def _swap_in_optimizer(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter,
                       index: torch.Tensor) -> None:
    """Point ``optimizer`` at ``new`` instead of ``old``, moving per-row state with ``index``."""
    for group in optimizer.param_groups:
        for i, param in enumerate(group["params"]):
            if param is old:
                group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if state is None:
        return
    rows = old.shape[0]
    optimizer.state[new] = {
        key: (value.index_select(0, index).clone()
              if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows
              else value)
        for key, value in state.items()}


def _extend_in_optimizer(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter,
                        count: int) -> None:
    """Point ``optimizer`` at ``new`` (``old`` plus ``count`` rows), with zero state rows."""
    for group in optimizer.param_groups:
        for i, param in enumerate(group["params"]):
            if param is old:
                group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if state is None:
        return
    rows = old.shape[0]
    optimizer.state[new] = {
        key: (torch.cat([value, value.new_zeros((count,) + tuple(value.shape[1:]))])
              if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows
              else value)
        for key, value in state.items()}


class InstanceModule(nn.Module):
    """The token-side networks: query projection ``LayerNorm(W f_q + b)`` and class head h_SI."""

    def __init__(self, feature_dim: int, class_feature_dim: int, hidden_dim: int,
                 num_token_classes: int):
        super().__init__()
        self.query_proj = nn.Linear(feature_dim, feature_dim)
        self.query_norm = nn.LayerNorm(feature_dim)
        self.class_head = nn.Sequential(nn.Linear(class_feature_dim, hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, num_token_classes))

    def queries(self, features: torch.Tensor) -> torch.Tensor:
        """[N, D] projected queries of token features [N, D]."""
        return self.query_norm(self.query_proj(features))

    def class_logits(self, class_features: torch.Tensor) -> torch.Tensor:
        """[N, T + 1] class logits (index 0 = no object) of class features [N, D_c]."""
        return self.class_head(class_features)
