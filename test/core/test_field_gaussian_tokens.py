"""Gaussian instance tokens: rotation, covariance, peak-normalised density and attention mask."""
import math

import numpy as np
import pytest
import torch

from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import PanopticFieldConfig, TokenConfig
from panoptic_mapper.core.field.gaussian_tokens import (InstanceTokens, attention_mask,
                                                        gaussian_modulation,
                                                        quaternion_to_rotation,
                                                        rotation_to_quaternion)
from panoptic_mapper.core.field.panoptic_field import PanopticField, SceneBox

Z90 = torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]])  # (w, x, y, z)


def test_quaternion_to_rotation_hand_values():
    R = quaternion_to_rotation(Z90)[0]
    torch.testing.assert_close(R, torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0],
                                                [0.0, 0.0, 1.0]]), atol=1e-6, rtol=0)
    # Not normalised on input: same rotation.
    torch.testing.assert_close(quaternion_to_rotation(3.0 * Z90), quaternion_to_rotation(Z90))
    q = rotation_to_quaternion(R.numpy()[None])
    np.testing.assert_allclose(np.abs(q), np.abs(Z90.numpy()), atol=1e-6)


def test_gaussian_modulation_hand_values():
    means = torch.zeros(1, 3)
    scales = torch.tensor([[1.0, 2.0, 0.5]])
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5],
                           [1.0, 2.0, 0.0]])
    g = gaussian_modulation(points, means, identity, scales)[:, 0]
    half = math.exp(-0.5)
    torch.testing.assert_close(g, torch.tensor([1.0, half, half, half, math.exp(-1.0)]))
    # Rotated 90 deg about z: the token's x axis (sigma 1) points along world y.
    g_rot = gaussian_modulation(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]), means, Z90,
                                scales)[:, 0]
    torch.testing.assert_close(g_rot, torch.tensor([half, half]))


def test_covariance_is_r_lambda2_rt():
    tokens = InstanceTokens(torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 0.5]]), Z90,
                            torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([7]))
    expected = torch.diag(torch.tensor([4.0, 1.0, 0.25]))  # x and y swapped by the rotation
    torch.testing.assert_close(tokens.covariances()[0], expected, atol=1e-6, rtol=0)


def test_attention_mask_hand_values():
    keys = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    queries = torch.tensor([[1.0, 1.0]])
    gaussian = torch.tensor([[0.5], [1.0]])
    sig1, sig2 = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-2))
    m = attention_mask(keys, queries, gaussian, eps=0.0)[:, 0]
    torch.testing.assert_close(m, torch.tensor([0.5 * sig1, sig2]))
    m_eps = attention_mask(keys, queries, gaussian, eps=1e-5)[:, 0]
    torch.testing.assert_close(m_eps, torch.tensor([(0.5 + 1e-5) * sig1, 1.0 * sig2 * 1]),
                               atol=2e-5, rtol=0)
    assert float(attention_mask(keys, queries, gaussian + 1.0, eps=0.0).max()) <= 1.0
    torch.testing.assert_close(attention_mask(keys, queries, None, eps=1e-5)[:, 0],
                               torch.tensor([sig1, sig2]))


def _field(gaussian_prior: bool, label_registry) -> PanopticField:
    tokens = InstanceTokens.create(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
                                   np.array([[0.5, 0.7, 0.4]] * 2), np.array([3, 9]), 32, 32,
                                   torch.Generator().manual_seed(0))
    return PanopticField(PanopticFieldConfig(), TokenConfig(gaussian_prior=gaussian_prior),
                         ClassSpace.from_registry(label_registry),
                         SceneBox((0.0, 0.0, 0.0), 2.0), tokens, 20.0)


@pytest.mark.parametrize("gaussian_prior", [True, False])
def test_field_token_masks_follow_the_formula(gaussian_prior, label_registry):
    field = _field(gaussian_prior, label_registry)
    points = torch.tensor([[0.1, 0.0, 0.0], [0.9, 0.2, 0.0], [3.0, 0.0, 0.0]])
    keys = field.instance_keys(points)
    queries = field.instance_module.query_norm(
        field.instance_module.query_proj(field.tokens.features))
    expected = torch.sigmoid(keys @ queries.T)
    if gaussian_prior:
        expected = (expected * (field.tokens.gaussian(points) + 1e-5)).clamp(0, 1)
    torch.testing.assert_close(field.token_masks(points), expected)
    if gaussian_prior:  # far from both tokens the mask vanishes, near a token it does not
        masks = field.token_masks(points)
        assert masks[2].max() < 1e-3 and masks[0, 0] > 0.3 and masks[1, 1] > 0.15


def test_gradients_reach_token_gaussians(label_registry):
    # (anisotropic scales, so that the rotation matters)
    field = _field(True, label_registry)
    field.token_masks(torch.rand(20, 3)).sum().backward()
    for name in ("means", "quats", "log_scales", "features"):
        grad = getattr(field.tokens, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
