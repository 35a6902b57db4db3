"""The segmentation losses of one training step (PR++ Eq. 30-33).

Rays from a few segmentation keyframes (a share spread over each frame's 2D segments) are
rendered by :func:`rendering.render_rays` at the samples of
:func:`rendering.segmentation_ranges` (depth guided with one sample: the observed surface
point): semantic distribution, token masks and, once the panoptic loss is on, the Bayes panoptic
distribution, all composited with detached weights. Then the semantic NLL, the per-frame
matching with its instance and class losses (``frame_matching.py``), the panoptic NLL (a mask's
covered tokens count as right) and the optional token-feature hinge; all weighted by the
segments' detection scores when ``loss.score_weighting``.

Owns: :func:`add_segmentation_losses`. Does not own: the matching (``frame_matching.py``), the
compositing (``rendering.py``) or the loss formulas (``losses.py``).
"""
from __future__ import annotations

import torch

from panoptic_mapper.core.field.frame_matching import match_frames
from panoptic_mapper.core.field.keyframes import (Keyframe, concat_ray_batches, make_ray_batch,
                                                  sample_segmentation_pixels)
from panoptic_mapper.core.field.losses import (IGNORE, LossName, probability_nll,
                                               query_separation)
from panoptic_mapper.core.field.rendering import (RayBundle, RenderOutput, render_rays,
                                                  segmentation_ranges)
from panoptic_mapper.core.field.schedule import TrainingPhase
from panoptic_mapper.core.field.step_context import StepContext
from panoptic_mapper.core.field.token_manager import TokenManager, TokenManagerState


def add_segmentation_losses(ctx: StepContext, manager: TokenManager,
                            manager_state: TokenManagerState, keyframes: list[Keyframe],
                            phase: TrainingPhase, losses: dict[LossName, torch.Tensor]) -> None:
    """Add the losses the phase turns on to ``losses`` (nothing without a labelled keyframe);
    the matching is recorded in ``manager_state``."""
    cfg = ctx.config
    sampler = cfg.sampler
    labelled = [k for k in keyframes
                if k.has_segmentation and len(k.segment_pixels(sampler.near_m))]
    if not labelled:
        return
    chosen = ctx.rng.choice(len(labelled),
                            min(cfg.trainer.segmentation_frames_per_step, len(labelled)),
                            replace=False)
    frames = [labelled[i] for i in chosen]
    batches = [make_ray_batch(k, sample_segmentation_pixels(
        k, cfg.trainer.segmentation_rays_per_frame, cfg.trainer.segment_balanced_fraction,
        sampler.near_m, ctx.rng)).to(ctx.device) for k in frames]
    rays = concat_ray_batches(batches)
    bundle = RayBundle(rays.origins_m, rays.directions, rays.observed_range_m)
    ranges = segmentation_ranges(ctx.field, bundle, sampler, ctx.generator)
    wanted = [RenderOutput.SEMANTIC_PROBS, RenderOutput.TOKEN_MASKS]
    if phase.panoptic:
        wanted.append(RenderOutput.PANOPTIC_PROBS)
    render = render_rays(ctx.field, bundle, sampler, wanted, ranges_m=ranges)
    ray_weights = rays.score if cfg.loss.score_weighting else None
    if phase.semantic:
        losses[LossName.SEMANTIC] = probability_nll(render[RenderOutput.SEMANTIC_PROBS],
                                                    rays.semantic_class, 0, ray_weights)
    panoptic_target, covered_by_ray = match_frames(ctx, manager, manager_state, frames, batches,
                                                   rays, render[RenderOutput.TOKEN_MASKS],
                                                   phase, losses)
    if phase.panoptic:
        panoptic = render[RenderOutput.PANOPTIC_PROBS]
        also = None
        if covered_by_ray is not None:
            # A covered token is as right as the matched one on its mask's rays.
            also = torch.zeros_like(panoptic)
            also[:, 1 + ctx.classes.num_stuff:] = covered_by_ray
        losses[LossName.PANOPTIC] = probability_nll(panoptic, panoptic_target, IGNORE,
                                                    ray_weights, also)
    tokens = ctx.field.tokens
    if cfg.loss.query_separation > 0 and tokens.num_tokens > 1:
        queries = ctx.field.instance_module.queries(tokens.features)
        losses[LossName.QUERY_SEPARATION] = query_separation(
            queries, cfg.loss.query_separation_margin)
