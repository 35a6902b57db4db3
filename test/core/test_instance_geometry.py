"""Instance summaries: gravity-aligned boxes and shading-robust colours."""
import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.tracking.instance_geometry import (InstanceSummaryConfig, gravity_box,
                                                             min_area_rectangle,
                                                             representative_color,
                                                             summarize_groups, up_basis)


def _box_points(center, size, yaw_rad, n=4000, seed=0):
    """Points filling a box of ``size`` turned by ``yaw_rad`` about z."""
    rng = np.random.default_rng(seed)
    local = (rng.random((n, 3)) - 0.5) * np.asarray(size)
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # noqa: N806
    return local @ R.T + np.asarray(center)


def _world_extent(box):
    corners = np.array([[x, y, z] for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5)])
    world = (corners * box.size_m) @ box.R_world_box.T + box.center_m
    return world.min(axis=0), world.max(axis=0)


def test_up_basis_is_a_right_handed_rotation_with_up_last():
    for up in [(0, 0, 1), (0, -1, 0), (1, 0, 0), (0.3, -0.2, 0.9)]:
        basis = up_basis(up)
        np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)
        assert np.linalg.det(basis) == pytest.approx(1.0)
        np.testing.assert_allclose(basis[:, 2], np.asarray(up) / np.linalg.norm(up))


def test_min_area_rectangle_of_a_turned_rectangle():
    pts = _box_points((0, 0, 0), (2.0, 1.0, 0.0), np.deg2rad(30))[:, :2]
    angle, lo, hi = min_area_rectangle(pts)
    assert np.rad2deg(angle) % 90 == pytest.approx(30, abs=1.0)
    sides = sorted(hi - lo)
    assert sides == pytest.approx([1.0, 2.0], abs=0.03)
    # Collinear and tiny inputs do not fail.
    angle, lo, hi = min_area_rectangle(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    assert np.all(hi >= lo)
    min_area_rectangle(np.array([[0.5, 0.5]]))


def test_gravity_box_turns_only_about_up_and_keeps_heights():
    # A table top partly seen (one half has many more points): a PCA box would tilt with noise.
    pts = _box_points((1.0, 2.0, 0.75), (1.2, 0.6, 0.04), np.deg2rad(20))
    pts[:, 2] += 0.01 * np.random.default_rng(1).standard_normal(len(pts))
    box = gravity_box(pts, (0, 0, 1), padding_m=0.01)
    np.testing.assert_allclose(box.R_world_box[:, 2], [0, 0, 1], atol=1e-12)
    assert np.linalg.det(box.R_world_box) == pytest.approx(1.0)
    lo, hi = _world_extent(box)
    assert lo[2] == pytest.approx(pts[:, 2].min() - 0.01, abs=1e-6)
    assert hi[2] == pytest.approx(pts[:, 2].max() + 0.01, abs=1e-6)
    assert box.size_m[0] >= box.size_m[1]  # the longer horizontal side first
    assert box.size_m[:2] == pytest.approx([1.22, 0.62], abs=0.03)
    yaw = np.rad2deg(np.arctan2(box.R_world_box[1, 0], box.R_world_box[0, 0])) % 180
    assert yaw == pytest.approx(20, abs=1.5)
    # Every point lies inside the box.
    local = (pts - box.center_m) @ box.R_world_box
    assert np.all(np.abs(local) <= box.size_m / 2 + 1e-9)


def test_gravity_box_with_another_up_axis():
    pts = _box_points((0, 0, 0), (0.5, 0.3, 0.2), 0.0)
    up = np.array([0.0, -1.0, 0.0])  # e.g. a camera-style y-down world
    box = gravity_box(pts, up, padding_m=0.0)
    np.testing.assert_allclose(box.R_world_box[:, 2], up, atol=1e-12)
    assert box.size_m[2] == pytest.approx(0.3, abs=0.01)  # the extent along y


def test_representative_color_undoes_shading_and_ignores_a_minor_material():
    rng = np.random.default_rng(2)
    albedo = np.array([200.0, 40.0, 40.0])  # a red object
    shading = rng.uniform(0.35, 1.0, 900)[:, None]
    red = albedo * shading
    handle = np.tile([30.0, 30.0, 30.0], (300, 1))  # a dark second material
    colors = np.vstack([red, handle])
    out = representative_color(colors, brightness_percentile=95.0).astype(float)
    mean = colors.mean(axis=0)
    assert np.linalg.norm(out - albedo) < 20.0
    assert np.linalg.norm(out - albedo) < 0.3 * np.linalg.norm(mean - albedo)
    # Black objects keep a dark colour rather than an arbitrary hue.
    black = representative_color(np.full((50, 3), 3.0), 95.0)
    assert black.max() <= 5


def test_summarize_groups_and_config_validation():
    pts_a = _box_points((0, 0, 0.5), (0.4, 0.2, 0.3), 0.3, n=500)
    pts_b = _box_points((2, 0, 0.5), (0.2, 0.2, 0.2), 0.0, n=200)
    ids = np.concatenate([np.full(500, 7), np.full(200, 3), np.zeros(10, int)])
    pos = np.vstack([pts_a, pts_b, np.zeros((10, 3))])
    col = np.vstack([np.tile([0, 0, 200], (500, 1)), np.tile([0, 200, 0], (200, 1)),
                     np.zeros((10, 3))])
    groups = summarize_groups(ids, pos, col, voxel_size_m=0.02)
    assert sorted(groups) == [3, 7]
    assert groups[7].num_voxels == 500 and groups[3].num_voxels == 200
    np.testing.assert_allclose(groups[3].centroid_m, pts_b.mean(axis=0))
    assert groups[7].color_rgb[2] > 150 and groups[7].color_rgb[0] < 20
    assert groups[3].color_rgb[1] > 150
    assert summarize_groups(np.zeros(3, int), np.zeros((3, 3)), np.zeros((3, 3)), 0.02) == {}
    with pytest.raises(ConfigError, match="up_axis"):
        InstanceSummaryConfig(up_axis=(0.0, 0.0, 0.0)).validate()
    with pytest.raises(ConfigError, match="color_brightness_percentile"):
        InstanceSummaryConfig(color_brightness_percentile=120.0).validate()
