"""One token maintenance of the trainer: 3D masks on surface points, then prune / merge / split /
spawn by the token manager.

The duplicate test compares the tokens' 3D masks (``m_i(p) > token_manager.mask_threshold``) on
the keyframes' surface points, voxel-downsampled at ``iom_voxel_size_m`` and capped at
``max_iom_points`` (a random subset, from the trainer's numpy generator). Split and spawn are
allowed until ``grow_until`` of the budget.

Owns: :func:`iom_points`, :func:`maintain_tokens`. Does not own: the decisions
(``token_manager.py``) or what the trainer does with the change (prior distillation).
"""
from __future__ import annotations

import numpy as np
import torch

from panoptic_mapper.core.field.config import TokenManagerConfig
from panoptic_mapper.core.field.panoptic_field import PanopticField
from panoptic_mapper.core.field.token_init import voxel_downsample_mean
from panoptic_mapper.core.field.token_manager import TokenChange, TokenManager, TokenManagerState


def iom_points(scene_points_m: np.ndarray, config: TokenManagerConfig,
               rng: np.random.Generator) -> np.ndarray:
    """[P, 3] surface points on which 3D token masks are compared (voxel-downsampled, at most
    ``max_iom_points``)."""
    points = voxel_downsample_mean(scene_points_m, config.iom_voxel_size_m)
    if len(points) > config.max_iom_points:
        points = points[rng.choice(len(points), config.max_iom_points, replace=False)]
    return points


def maintain_tokens(field: PanopticField, manager: TokenManager, state: TokenManagerState,
                    optimizer: torch.optim.Optimizer, points_m: np.ndarray | None,
                    step: int, total_steps: int) -> TokenChange:
    """Run one maintenance on ``field.tokens`` (rows and optimiser state follow).

    Args:
        points_m: [P, 3] the :func:`iom_points` (None or empty: no duplicate test).
        step, total_steps: where the schedule stands (split and spawn until ``grow_until``).
    """
    masks = None
    tokens = field.tokens
    if tokens.num_tokens and points_m is not None and len(points_m):
        with torch.no_grad():
            device = field.log_inv_s.device
            masks = field.token_masks(torch.as_tensor(points_m, dtype=torch.float32,
                                                      device=device))
        # The manager's bookkeeping runs on the CPU (one decision per token pair).
        masks = (masks > manager.config.mask_threshold).cpu()
    growth = step < manager.config.grow_until * total_steps
    return manager.maintain(state, tokens, optimizer, masks, step, allow_growth=growth)
