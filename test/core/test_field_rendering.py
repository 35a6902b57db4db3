"""NeuS weights by hand; depth-guided and full volume rendering of an analytic plane; the
training samples and the render the geometry losses read (depth, SDF, gradients)."""
import math

import numpy as np
import pytest
import torch

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import PanopticFieldConfig, SamplerConfig, TokenConfig
from panoptic_mapper.core.field.gaussian_tokens import InstanceTokens
from panoptic_mapper.core.field.panoptic_field import PanopticField, SceneBox
from panoptic_mapper.core.field.rendering import (RayBundle, RenderOutput, geometry_ranges,
                                                  importance_ranges, neus_alpha, render_rays,
                                                  segmentation_ranges, stratified_ranges,
                                                  weights_from_alpha)

PLANE_Z_M = 2.0


class PlaneField(PanopticField):
    """A field whose SDF is the plane z = 2 m (positive in front of it)."""

    def sdf(self, points_m: torch.Tensor) -> torch.Tensor:
        return PLANE_Z_M - points_m[:, 2]


@pytest.fixture()
def plane_field(label_registry):
    tokens = InstanceTokens.create(np.array([[0.0, 0.0, 2.0]]), np.ones((1, 3)), np.array([1]),
                                   32, 32, torch.Generator().manual_seed(0))
    field = PlaneField(PanopticFieldConfig(), TokenConfig(),
                       ClassSpace.from_registry(label_registry), SceneBox((0.0, 0.0, 1.0), 3.0),
                       tokens, init_inv_s_per_m=400.0)
    return field


def _rays(num_rays: int, observed: float | None) -> RayBundle:
    directions = torch.tensor([[0.1, 0.0, 1.0]]).repeat(num_rays, 1)
    directions[:, 0] = torch.linspace(-0.2, 0.2, num_rays)
    directions = directions / directions.norm(dim=1, keepdim=True)
    ranges = None if observed is None else PLANE_Z_M / directions[:, 2] + observed
    return RayBundle(torch.zeros(num_rays, 3), directions, ranges)


def test_neus_alpha_and_weights_hand_values():
    sdf = torch.tensor([[0.1, 0.0, -0.1]])
    alpha = neus_alpha(sdf, torch.tensor(10.0))[0]
    s1, s0, sm1 = (1 / (1 + math.exp(-x)) for x in (1.0, 0.0, -1.0))
    expected = torch.tensor([(s1 - s0 + 1e-5) / (s1 + 1e-5), (s0 - sm1 + 1e-5) / (s0 + 1e-5),
                             0.0])
    torch.testing.assert_close(alpha, expected)
    weights = weights_from_alpha(alpha[None])[0]
    torch.testing.assert_close(weights, torch.tensor([expected[0],
                                                      (1 - expected[0]) * expected[1], 0.0]),
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["depth_guided", "volume"])
def test_both_modes_render_the_plane_depth(plane_field, mode):
    config = SamplerConfig(mode=mode, segmentation_band_samples=16, volume_uniform_samples=32,
                           volume_importance_samples=32, far_m=4.0)
    bundle = _rays(8, observed=0.0)
    expected_range = PLANE_Z_M / bundle.directions[:, 2]
    out = render_rays(plane_field, bundle, config,
                      [RenderOutput.DEPTH, RenderOutput.SEMANTIC_PROBS, RenderOutput.TOKEN_MASKS,
                       RenderOutput.PANOPTIC_PROBS, RenderOutput.OPACITY],
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[RenderOutput.DEPTH], expected_range, atol=0.01, rtol=0)
    assert (out[RenderOutput.OPACITY] > 0.9).all()
    torch.testing.assert_close(out[RenderOutput.SEMANTIC_PROBS].sum(-1), torch.ones(8))
    torch.testing.assert_close(out[RenderOutput.PANOPTIC_PROBS].sum(-1), torch.ones(8))
    assert out[RenderOutput.TOKEN_MASKS].shape == (8, 1)


def test_volume_mode_works_without_observed_depth(plane_field):
    config = SamplerConfig(mode="volume", volume_uniform_samples=48,
                           volume_importance_samples=32, far_m=4.0)
    bundle = _rays(4, observed=None)
    out = render_rays(plane_field, bundle, config, [RenderOutput.DEPTH, RenderOutput.RANGES],
                      generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out[RenderOutput.DEPTH], PLANE_Z_M / bundle.directions[:, 2],
                               atol=0.02, rtol=0)
    assert out[RenderOutput.RANGES].shape == (4, 48 + 32)


def test_depth_guided_mode_needs_depth(plane_field):
    with pytest.raises(InvalidInputError, match="observed_range_m"):
        render_rays(plane_field, _rays(2, observed=None), SamplerConfig(),
                    [RenderOutput.DEPTH])


def test_importance_samples_gather_at_the_surface():
    ranges = stratified_ranges(torch.zeros(1), torch.full((1,), 4.0), 32, None)
    sdf = PLANE_Z_M - ranges
    fine = importance_ranges(ranges, sdf, inv_s=64.0, num_samples=64,
                             generator=torch.Generator().manual_seed(0))
    near_surface = ((fine - PLANE_Z_M).abs() < 0.25).float().mean()
    assert near_surface > 0.8
    assert torch.all(fine[:, 1:] >= fine[:, :-1])


# ---- the training path renders through render_rays --------------------------------------------
def _real_field(label_registry) -> PanopticField:
    """A randomly initialised field (hash grids and decoders), so every output has gradients."""
    torch.manual_seed(0)
    tokens = InstanceTokens.create(np.array([[0.0, 0.0, 2.0]]), np.ones((1, 3)), np.array([1]),
                                   32, 32, torch.Generator().manual_seed(0))
    return PanopticField(PanopticFieldConfig(), TokenConfig(),
                         ClassSpace.from_registry(label_registry), SceneBox((0.0, 0.0, 1.0), 3.0),
                         tokens, init_inv_s_per_m=20.0)


def test_geometry_ranges_put_free_space_before_the_band():
    config = SamplerConfig(band_m=0.1, geometry_band_samples=6, free_space_samples=2, near_m=0.3)
    bundle = _rays(64, observed=0.0)
    ranges = geometry_ranges(None, bundle, config, torch.Generator().manual_seed(3))
    observed = bundle.observed_range_m[:, None]
    assert ranges.shape == (64, 8)
    assert torch.all(ranges[:, 1:] >= ranges[:, :-1])  # sorted along the ray
    assert torch.all(ranges[:, :2] >= 0.3) and torch.all(ranges[:, :2] <= observed - 0.1)
    assert torch.all((ranges[:, 2:] - observed).abs() <= 0.1)
    # one sample per segmentation ray is the observed surface point itself (no draw)
    single = segmentation_ranges(None, bundle, SamplerConfig(segmentation_band_samples=1), None)
    torch.testing.assert_close(single, observed, rtol=0, atol=0)


def test_render_rays_gives_the_training_depth_sdf_and_gradients(label_registry):
    """The geometry losses read depth and SDF from render_rays: they equal the NeuS composite
    written out by hand, and the depth carries the SDF's gradient while label outputs do not."""
    field = _real_field(label_registry)
    config = SamplerConfig()
    bundle = _rays(16, observed=0.05)
    ranges = geometry_ranges(field, bundle, config, torch.Generator().manual_seed(0))
    out = render_rays(field, bundle, config, [RenderOutput.DEPTH, RenderOutput.SDF,
                                              RenderOutput.POINTS, RenderOutput.WEIGHTS],
                      ranges_m=ranges)
    points = bundle.origins_m[:, None] + bundle.directions[:, None] * ranges[..., None]
    sdf = field.sdf(points.reshape(-1, 3)).view(ranges.shape)
    weights = weights_from_alpha(neus_alpha(sdf, field.inv_s()))
    shifted = weights + 1e-6
    mids = torch.cat([0.5 * (ranges[:, :-1] + ranges[:, 1:]), ranges[:, -1:]], dim=1)
    depth = (shifted / shifted.sum(dim=1, keepdim=True) * mids).sum(dim=1)
    torch.testing.assert_close(out[RenderOutput.DEPTH], depth, rtol=0, atol=0)
    torch.testing.assert_close(out[RenderOutput.SDF], sdf, rtol=0, atol=0)
    torch.testing.assert_close(out[RenderOutput.POINTS], points, rtol=0, atol=0)
    out[RenderOutput.DEPTH].sum().backward()
    assert field.sdf_decoder[0].weight.grad is not None and field.log_inv_s.grad is not None
    labels = render_rays(field, bundle, SamplerConfig(segmentation_band_samples=4),
                         [RenderOutput.SEMANTIC_PROBS, RenderOutput.PANOPTIC_PROBS])
    field.zero_grad(set_to_none=True)
    (labels[RenderOutput.PANOPTIC_PROBS].sum() + labels[RenderOutput.SEMANTIC_PROBS].sum()
     ).backward()
    assert field.semantic_decoder[0].weight.grad is not None  # the labels learn ...
    assert field.sdf_decoder[0].weight.grad is None  # ... and never move the geometry
