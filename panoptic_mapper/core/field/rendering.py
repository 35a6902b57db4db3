"""Ray sampling and NeuS-style SDF volume rendering of the field's quantities.

Two ways to place samples on a ray (``SamplerConfig.mode``):

* ``volume`` (the paper, section 1.11): stratified samples in a band around the observed depth,
  stratified samples over ``[near, far]`` and NeuS importance samples drawn from a coarse pass
  with a fixed sharpness; without an observed depth (novel views) only the last two.
* ``depth_guided``: stratified samples in a narrow band around the observed depth only (geometry
  rays add a few free-space samples between ``near_m`` and the band). The surface is where the
  depth says it is, so a handful of samples replaces 35 and CPU training becomes feasible
  (``geometry-perf.md`` section 4). With a single sample the labels are read at the observed
  surface point itself (weight 1).

Rendering weights follow PR++ Eq. 10-11 with S-density ``Phi(s) = sigmoid(xi s)``::

    alpha_j = clip((Phi(s_j) - Phi(s_{j+1}) + 1e-5) / (Phi(s_j) + 1e-5), 0, 1)   j < S
    w_j     = alpha_j * prod_{m<j} (1 - alpha_m)

so sample j carries the interval ``[rho_j, rho_{j+1}]`` (its depth is the interval midpoint) and
the last sample carries nothing. Rendered quantities are normalised by ``sum_j w_j``: the samples
cover the surface, and normalised renders are proper distributions for the label losses.

:func:`render_rays` is the one place where NeuS weights are composited along rays: the trainer's
geometry and segmentation losses render through it (with the ranges of
:func:`geometry_ranges` / :func:`segmentation_ranges`) as inference does.

Owns: :class:`RayBundle`, :class:`RenderOutput`, the samplers, :func:`neus_alpha`,
:func:`render_rays`. Does not own: which rays are drawn (``keyframes.py``) or the losses.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable

import torch

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.config import SamplerConfig
from panoptic_mapper.core.field.panoptic_field import FieldOutput, PanopticField
from panoptic_mapper.core.field.panoptic_head import bayes_panoptic_probabilities

ALPHA_EPS = 1e-5
"""Stabiliser of the NeuS opacity ratio (the code's value)."""
WEIGHT_EPS = 1e-6
"""Added to every weight before normalising, so an empty ray renders a uniform average."""


@dataclass
class RayBundle:
    """A batch of world-frame rays (all tensors share the first dimension R)."""

    origins_m: torch.Tensor
    """[R, 3] ray origins (camera centres), metres."""
    directions: torch.Tensor
    """[R, 3] unit directions."""
    observed_range_m: torch.Tensor | None = None
    """[R] distance along the ray to the observed surface (range, not z-depth), metres;
    None or 0 where unknown."""

    @property
    def num_rays(self) -> int:
        return int(self.origins_m.shape[0])

    def points(self, ranges_m: torch.Tensor) -> torch.Tensor:
        """[R, S, 3] points at ranges [R, S]."""
        return self.origins_m[:, None, :] + self.directions[:, None, :] * ranges_m[..., None]


class RenderOutput(enum.Enum):
    """What :func:`render_rays` returns."""

    RANGES = "ranges"
    """[R, S] sample ranges, metres."""
    POINTS = "points"
    """[R, S, 3] sample points, world frame, metres."""
    SDF = "sdf"
    """[R, S] signed distance at the samples, metres (what the geometry losses score)."""
    WEIGHTS = "weights"
    """[R, S] rendering weights w_j (not normalised)."""
    DEPTH = "depth"
    """[R] rendered range along the ray, metres."""
    OPACITY = "opacity"
    """[R] sum of the weights."""
    SEMANTIC_PROBS = "semantic_probs"
    """[R, C] rendered semantic distribution."""
    TOKEN_MASKS = "token_masks"
    """[R, N] rendered token masks."""
    PANOPTIC_PROBS = "panoptic_probs"
    """[R, 1 + S + N] rendered panoptic distribution."""


def stratified_ranges(low_m: torch.Tensor, high_m: torch.Tensor, num_samples: int,
                      generator: torch.Generator | None) -> torch.Tensor:
    """[R, n] sorted ranges, one uniform draw per equal sub-interval of [low, high] (bin
    centres when ``generator`` is None). The draws come from ``generator``'s device (the
    trainer's generator stays on the CPU, so a seed gives the same samples on every device)
    and are moved to the ranges' device."""
    bins = torch.arange(num_samples, dtype=low_m.dtype, device=low_m.device)
    if generator is None:
        offsets = torch.full((low_m.shape[0], num_samples), 0.5, dtype=low_m.dtype,
                             device=low_m.device)
    else:
        offsets = torch.rand(low_m.shape[0], num_samples, generator=generator,
                             dtype=low_m.dtype, device=generator.device).to(low_m.device)
    fraction = (bins[None, :] + offsets) / num_samples
    return low_m[:, None] + (high_m - low_m)[:, None] * fraction


def neus_alpha(sdf_m: torch.Tensor, inv_s: torch.Tensor) -> torch.Tensor:
    """[R, S] opacity of each sample's interval from the SDF at [R, S] sorted samples."""
    phi = torch.sigmoid(sdf_m * inv_s)
    alpha = ((phi[:, :-1] - phi[:, 1:] + ALPHA_EPS) / (phi[:, :-1] + ALPHA_EPS)).clamp(0.0, 1.0)
    return torch.cat([alpha, torch.zeros_like(alpha[:, :1])], dim=1)


def weights_from_alpha(alpha: torch.Tensor) -> torch.Tensor:
    """[R, S] ``w_j = alpha_j prod_{m<j}(1 - alpha_m)``."""
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], dim=1), dim=1)
    return alpha * transmittance


def normalized_weights(weights: torch.Tensor) -> torch.Tensor:
    """[R, S] weights scaled to sum to one per ray (uniform on an empty ray)."""
    shifted = weights + WEIGHT_EPS
    return shifted / shifted.sum(dim=1, keepdim=True)


def interval_midpoints(ranges_m: torch.Tensor) -> torch.Tensor:
    """[R, S] midpoint of each sample's interval (the last sample keeps its range)."""
    mids = 0.5 * (ranges_m[:, :-1] + ranges_m[:, 1:])
    return torch.cat([mids, ranges_m[:, -1:]], dim=1)


def importance_ranges(ranges_m: torch.Tensor, sdf_m: torch.Tensor, inv_s: float,
                      num_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """[R, n] ranges drawn by inverse CDF from the NeuS weights of a coarse pass."""
    weights = weights_from_alpha(neus_alpha(sdf_m, torch.tensor(inv_s)))[:, :-1]  # [R, S-1]
    pdf = weights + ALPHA_EPS
    pdf = pdf / pdf.sum(dim=1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=1)], dim=1)  # [R, S]
    zeros = torch.zeros(ranges_m.shape[0], dtype=ranges_m.dtype, device=ranges_m.device)
    u = stratified_ranges(zeros, torch.ones_like(zeros), num_samples, generator).contiguous()
    upper = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[1] - 1)
    lower = upper - 1
    cdf_low, cdf_high = cdf.gather(1, lower), cdf.gather(1, upper)
    range_low, range_high = ranges_m.gather(1, lower), ranges_m.gather(1, upper)
    t = ((u - cdf_low) / (cdf_high - cdf_low).clamp_min(1e-8)).clamp(0.0, 1.0)
    return range_low + t * (range_high - range_low)


def band_ranges(observed_range_m: torch.Tensor, half_width_m: float, num_samples: int,
                near_m: float, generator: torch.Generator | None) -> torch.Tensor:
    """[R, n] stratified ranges in ``observed +- half_width`` (not closer than ``near_m``)."""
    low = (observed_range_m - half_width_m).clamp_min(near_m)
    return stratified_ranges(low, observed_range_m + half_width_m, num_samples, generator)


@torch.no_grad()
def volume_ranges(field: PanopticField, bundle: RayBundle, config: SamplerConfig,
                  generator: torch.Generator | None) -> torch.Tensor:
    """[R, S] the paper's samples: band (when the depth is known) + uniform + importance."""
    rays = bundle.num_rays
    near = torch.full((rays,), config.near_m, device=bundle.origins_m.device)
    far = torch.full((rays,), config.far_m, device=bundle.origins_m.device)
    parts = [stratified_ranges(near, far, config.volume_uniform_samples, generator)]
    observed = bundle.observed_range_m
    if observed is not None:
        known = observed > 0
        band = band_ranges(torch.where(known, observed, far), config.band_m,
                           config.volume_band_samples, config.near_m, generator)
        # Rays without a depth get their band at the far end, where it costs nothing.
        parts.append(band)
    coarse = torch.sort(torch.cat(parts, dim=1), dim=1).values
    if config.volume_importance_samples == 0:
        return coarse
    sdf = field.sdf(bundle.points(coarse).reshape(-1, 3)).view(rays, -1)
    fine = importance_ranges(coarse, sdf, config.importance_inv_s_per_m,
                             config.volume_importance_samples, generator)
    return torch.sort(torch.cat([coarse, fine], dim=1), dim=1).values


def _observed_ranges(bundle: RayBundle) -> torch.Tensor:
    """[R] the bundle's observed ranges, or InvalidInputError when a ray lacks one."""
    observed = bundle.observed_range_m
    if observed is None or bool((observed <= 0).any()):
        raise InvalidInputError("observed_range_m", "missing or 0",
                                "depth-guided rendering needs an observed range on every ray",
                                kind="field")
    return observed


def free_space_ranges(observed_range_m: torch.Tensor, band_start_m: torch.Tensor,
                      num_samples: int, near_m: float,
                      generator: torch.Generator | None) -> torch.Tensor:
    """[R, n] sorted uniform ranges between ``near_m`` and the start of the band [R] (evenly
    spread without a generator), so the free-space loss sees the space in front of the
    surface."""
    near = torch.full_like(observed_range_m, near_m)
    far = torch.maximum(band_start_m, near)
    rays = observed_range_m.shape[0]
    if generator is None:
        fraction = ((torch.arange(num_samples, dtype=near.dtype, device=near.device) + 0.5)
                    / num_samples).expand(rays, num_samples)
    else:
        fraction = torch.rand(rays, num_samples, generator=generator, dtype=near.dtype,
                              device=generator.device).to(near.device).sort(1).values
    return near[:, None] + (far - near)[:, None] * fraction


def geometry_ranges(field: PanopticField, bundle: RayBundle, config: SamplerConfig,
                    generator: torch.Generator | None) -> torch.Tensor:
    """[R, S] sample ranges of the geometry losses: the paper's volume samples, or (depth
    guided) ``free_space_samples`` between ``near_m`` and the band, then
    ``geometry_band_samples`` in ``observed +- band_m``."""
    if config.mode == "volume":
        return volume_ranges(field, bundle, config, generator)
    observed = _observed_ranges(bundle)
    band = band_ranges(observed, config.band_m, config.geometry_band_samples, config.near_m,
                       generator)
    if not config.free_space_samples:
        return band
    free = free_space_ranges(observed, band[:, 0], config.free_space_samples, config.near_m,
                             generator)
    return torch.cat([free, band], dim=1)


def segmentation_ranges(field: PanopticField, bundle: RayBundle, config: SamplerConfig,
                        generator: torch.Generator | None) -> torch.Tensor:
    """[R, S] sample ranges for rendering labels in the configured mode (depth guided with one
    sample: the observed surface point itself)."""
    if config.mode == "volume":
        return volume_ranges(field, bundle, config, generator)
    observed = _observed_ranges(bundle)
    if config.segmentation_band_samples == 1:
        return observed[:, None]
    return band_ranges(observed, config.segmentation_band_m, config.segmentation_band_samples,
                       config.near_m, generator)


GEOMETRY_OUTPUTS = frozenset({RenderOutput.WEIGHTS, RenderOutput.DEPTH, RenderOutput.OPACITY,
                              RenderOutput.SDF})
"""Outputs that carry the SDF's gradient (the label outputs use detached weights)."""
LABEL_OUTPUTS = {RenderOutput.SEMANTIC_PROBS: FieldOutput.SEMANTIC_PROBS,
                 RenderOutput.TOKEN_MASKS: FieldOutput.TOKEN_MASKS,
                 RenderOutput.PANOPTIC_PROBS: FieldOutput.PANOPTIC_PROBS}
"""Label outputs and the field output each composites."""


def render_rays(field: PanopticField, bundle: RayBundle, config: SamplerConfig,
                outputs: Iterable[RenderOutput], generator: torch.Generator | None = None,
                ranges_m: torch.Tensor | None = None) -> dict[RenderOutput, torch.Tensor]:
    """Render field quantities along rays.

    Geometry weights come from the SDF at all samples; label quantities are evaluated at every
    sample but the last (which carries no weight) and composited with the normalised weights,
    detached, so segmentation never moves geometry (PR++ / code: "3D softmax" with detached
    weights). Gradients flow where the caller's autograd mode allows; when only label outputs
    are asked for, the SDF is evaluated without a graph (it would receive no gradient).

    Args:
        field: the panoptic field.
        bundle: rays; depth-guided mode needs ``observed_range_m`` > 0 on every ray.
        config: sampler settings, including the mode.
        outputs: what to return.
        generator: random source for stratification (None: deterministic bin centres).
        ranges_m: [R, S] sorted sample ranges to use instead of sampling (e.g. from
            :func:`geometry_ranges`); by default :func:`segmentation_ranges`.
    """
    wanted = set(outputs)
    if ranges_m is None:
        ranges_m = segmentation_ranges(field, bundle, config, generator)
    rays, samples = ranges_m.shape
    points = bundle.points(ranges_m)  # [R, S, 3]
    result: dict[RenderOutput, torch.Tensor] = {RenderOutput.RANGES: ranges_m,
                                                RenderOutput.POINTS: points}
    if samples == 1:
        # One sample (depth-guided at the surface): it is the surface, with weight 1.
        weights = torch.ones_like(ranges_m)
        label_weights = weights
        label_points = points[:, 0]
        result[RenderOutput.DEPTH] = ranges_m[:, 0]
        if RenderOutput.SDF in wanted:
            result[RenderOutput.SDF] = field.sdf(label_points).view(rays, 1)
    else:
        with torch.set_grad_enabled(torch.is_grad_enabled() and bool(wanted & GEOMETRY_OUTPUTS)):
            sdf = field.sdf(points.reshape(-1, 3)).view(rays, samples)
            weights = weights_from_alpha(neus_alpha(sdf, field.inv_s()))
            norm = normalized_weights(weights)
            result[RenderOutput.SDF] = sdf
            result[RenderOutput.DEPTH] = (norm * interval_midpoints(ranges_m)).sum(dim=1)
        label_weights = norm[:, :-1].detach()
        label_points = points[:, :-1].reshape(-1, 3)
    result[RenderOutput.WEIGHTS] = weights
    result[RenderOutput.OPACITY] = weights.sum(dim=1)
    if wanted & LABEL_OUTPUTS.keys():
        if samples > 1:
            label_weights = label_weights / label_weights.sum(dim=1, keepdim=True)
        result.update(_composite_labels(field, label_points, label_weights, wanted))
    return {key: value for key, value in result.items() if key in wanted}


def _composite_labels(field: PanopticField, points_m: torch.Tensor, weights: torch.Tensor,
                      wanted: set[RenderOutput]) -> dict[RenderOutput, torch.Tensor]:
    """The wanted label outputs at [R * S', 3] points composited with [R, S'] weights.

    The panoptic distribution is made per sample from the semantic probabilities and token
    masks (the field's Bayes head) after those are composited: the order in which the
    composites are built fixes the order in which backward sums gradients, so a run repeats bit
    for bit only if it stays the same.
    """
    rays, samples = weights.shape
    per_sample = (RenderOutput.SEMANTIC_PROBS, RenderOutput.TOKEN_MASKS)
    panoptic = RenderOutput.PANOPTIC_PROBS in wanted
    values = field(points_m, [LABEL_OUTPUTS[key] for key in per_sample
                              if panoptic or key in wanted])

    def composite(value: torch.Tensor) -> torch.Tensor:
        return (weights[..., None] * value.view(rays, samples, -1)).sum(dim=1)

    out = {key: composite(values[LABEL_OUTPUTS[key]]) for key in per_sample if key in wanted}
    if panoptic:
        out[RenderOutput.PANOPTIC_PROBS] = composite(bayes_panoptic_probabilities(
            values[FieldOutput.SEMANTIC_PROBS], values[FieldOutput.TOKEN_MASKS],
            field.classes.num_stuff))
    return out
