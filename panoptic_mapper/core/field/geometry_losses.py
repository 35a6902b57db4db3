"""The geometry losses of one training step (PR++ Eq. 24-26).

Rays with depth from random keyframes are rendered by :func:`rendering.render_rays` at the
samples of :func:`rendering.geometry_ranges` (depth guided: free space + band; or the paper's
volume samples); the rendered range gets an L1 to the observed range, the SDF at the samples
the near-surface and free-space terms against the projective SDF, and random samples a
finite-difference eikonal term.

Owns: :func:`add_geometry_losses`. Does not own: the compositing (``rendering.py``) or the
loss formulas (``losses.py``).
"""
from __future__ import annotations

import torch

from panoptic_mapper.core.field.keyframes import Keyframe, sample_geometry_rays
from panoptic_mapper.core.field.losses import LossName, depth_l1, eikonal, sdf_losses
from panoptic_mapper.core.field.rendering import (RayBundle, RenderOutput, geometry_ranges,
                                                  render_rays)
from panoptic_mapper.core.field.step_context import StepContext

GEOMETRY_RENDER = (RenderOutput.DEPTH, RenderOutput.SDF, RenderOutput.POINTS)
"""What the geometry losses read from the render."""


def add_geometry_losses(ctx: StepContext, keyframes: list[Keyframe],
                        losses: dict[LossName, torch.Tensor]) -> None:
    """Add the depth, near-surface SDF, free-space SDF and eikonal losses of one batch of
    ``trainer.geometry_rays_per_step`` rays to ``losses``."""
    cfg = ctx.config
    sampler = cfg.sampler
    rays = sample_geometry_rays(keyframes, cfg.trainer.geometry_rays_per_step,
                                sampler.near_m, ctx.rng).to(ctx.device)
    bundle = RayBundle(rays.origins_m, rays.directions, rays.observed_range_m)
    ranges = geometry_ranges(ctx.field, bundle, sampler, ctx.generator)
    render = render_rays(ctx.field, bundle, sampler, GEOMETRY_RENDER, ranges_m=ranges)
    losses[LossName.DEPTH] = depth_l1(render[RenderOutput.DEPTH], rays.observed_range_m)
    near_loss, free_loss = sdf_losses(render[RenderOutput.SDF], ranges, rays.observed_range_m,
                                      cfg.loss.truncation_m, cfg.loss.free_space_beta)
    losses[LossName.SDF_NEAR] = near_loss
    losses[LossName.SDF_FREE] = free_loss
    count = cfg.trainer.eikonal_points_per_step
    if count:
        flat = render[RenderOutput.POINTS].reshape(-1, 3).detach()
        chosen = flat[ctx.on_device(torch.randint(0, flat.shape[0], (count,),
                                                  generator=ctx.generator))]
        h = cfg.trainer.eikonal_step_m
        offsets = ctx.on_device(torch.cat([torch.eye(3), -torch.eye(3)]) * h)  # [6, 3]
        probe = (chosen[:, None, :] + offsets[None]).reshape(-1, 3)
        values = ctx.field.sdf(probe).view(count, 6)
        gradient = (values[:, :3] - values[:, 3:]) / (2.0 * h)
        losses[LossName.EIKONAL] = eikonal(gradient)
