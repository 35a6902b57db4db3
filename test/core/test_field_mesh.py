"""Geometry from the field: marching cubes of an SDF near the observed surface, and the refined
map's ``mesh_source`` option (what get_mesh serves, labels from the field, save/load)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.field.field_mesh import (FieldMeshConfig, extract_field_mesh,
                                                   field_sdf)
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.mapping.refined_config import RefinedMapConfig
from panoptic_mapper.core.mapping.refined_map import RefinedPanopticMap
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster

sys.path.insert(0, str(Path(__file__).parent))
from field_toy_scene import ToyPriorMap, make_toy_scene  # noqa: E402
from field_toy_scene import one_torch_thread  # noqa: E402,F401 (autouse)
from field_toy_scene import integrated_refined_map as _integrated  # noqa: E402
from field_toy_scene import refined_config as _config  # noqa: E402

VOXEL_M = 0.02


def _sphere_points(centre, radius, count=4000, seed=0):
    directions = np.random.default_rng(seed).normal(size=(count, 3))
    return np.asarray(centre) + radius * directions / np.linalg.norm(directions, axis=1,
                                                                     keepdims=True)


def _sphere_sdf(centre, radius):
    return lambda p: np.linalg.norm(p - np.asarray(centre, np.float32), axis=1) - radius


def _box_sdf(centre, half):
    centre, half = np.asarray(centre, np.float32), np.asarray(half, np.float32)

    def sdf(p):
        q = np.abs(p - centre) - half
        return (np.linalg.norm(np.maximum(q, 0), axis=1)
                + np.minimum(q.max(axis=1), 0))
    return sdf


def test_sphere_surface_within_a_voxel_of_the_truth():
    centre, radius = (0.13, -0.07, 0.41), 0.3
    mesh = extract_field_mesh(_sphere_sdf(centre, radius), _sphere_points(centre, radius),
                              None, FieldMeshConfig(voxel_size_m=VOXEL_M))
    distance = np.abs(np.linalg.norm(mesh.vertices_m - centre, axis=1) - radius)
    assert mesh.num_vertices > 1000
    assert distance.max() < VOXEL_M
    # closed: every direction of the sphere is covered (Euler characteristic of a sphere)
    edges = np.sort(mesh.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    assert mesh.num_vertices - len(np.unique(edges, axis=0)) + len(mesh.triangles) == 2


def test_box_surface_within_a_voxel_and_iso_level_offsets_it():
    centre, half = np.array([0.5, 0.2, -0.3]), np.array([0.4, 0.25, 0.15])
    sdf = _box_sdf(centre, half)
    # observed points: the box's faces
    grid = np.random.default_rng(1).uniform(-1, 1, size=(20000, 3)) * half
    axis = np.random.default_rng(2).integers(0, 3, len(grid))
    grid[np.arange(len(grid)), axis] = np.sign(grid[np.arange(len(grid)), axis]) * half[axis]
    observed = centre + grid
    mesh = extract_field_mesh(sdf, observed, None, FieldMeshConfig(voxel_size_m=VOXEL_M))
    assert mesh.num_vertices > 1000
    assert np.abs(sdf(mesh.vertices_m)).max() < VOXEL_M
    np.testing.assert_allclose(mesh.vertices_m.min(axis=0), centre - half, atol=VOXEL_M)
    np.testing.assert_allclose(mesh.vertices_m.max(axis=0), centre + half, atol=VOXEL_M)
    offset = extract_field_mesh(sdf, observed, None,
                                FieldMeshConfig(voxel_size_m=VOXEL_M, iso_level_m=0.03))
    inflated = sdf(offset.vertices_m)
    assert abs(float(np.median(inflated)) - 0.03) < 0.005


def test_unobserved_surface_is_not_meshed():
    # the SDF has two spheres; only the first was observed
    seen, unseen, radius = np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), 0.2

    def sdf(p):
        return np.minimum(_sphere_sdf(seen, radius)(p), _sphere_sdf(unseen, radius)(p))

    config = FieldMeshConfig(voxel_size_m=VOXEL_M)
    both = extract_field_mesh(sdf, np.concatenate([_sphere_points(seen, radius),
                                                   _sphere_points(unseen, radius)]), None, config)
    near_unseen = np.linalg.norm(both.vertices_m - unseen, axis=1) < 2 * radius
    assert near_unseen.sum() > 300
    one = extract_field_mesh(sdf, _sphere_points(seen, radius), None, config)
    assert one.num_vertices > 300
    assert np.linalg.norm(one.vertices_m - unseen, axis=1).min() > radius
    assert np.abs(np.linalg.norm(one.vertices_m - seen, axis=1) - radius).max() < VOXEL_M
    # every meshed point lies near the observed surface
    assert np.abs(np.linalg.norm(one.vertices_m - seen, axis=1) - radius).max() \
        <= config.observed_margin_m
    # and inside the box when one is given: only the half x < 0 of the seen sphere
    box = SceneBox((-0.5, 0.0, 0.0), (0.5, 0.5, 0.5))
    half = extract_field_mesh(sdf, _sphere_points(seen, radius), box, config)
    assert 0 < half.num_vertices < one.num_vertices
    assert half.vertices_m[:, 0].max() <= 0.0 + 1e-6


def test_nothing_observed_gives_an_empty_mesh_and_bad_input_raises():
    empty = extract_field_mesh(_sphere_sdf((0, 0, 0), 0.2), np.zeros((0, 3)), None)
    assert empty.num_vertices == 0 and empty.triangles.shape == (0, 3)
    with pytest.raises(InvalidInputError, match="observed_points_m"):
        extract_field_mesh(_sphere_sdf((0, 0, 0), 0.2), np.array([[np.nan, 0, 0]]), None)
    with pytest.raises(InvalidInputError, match="sdf"):
        extract_field_mesh(lambda p: np.zeros(3), _sphere_points((0, 0, 0), 0.2), None)
    with pytest.raises(ConfigError, match="observed_margin_m"):
        FieldMeshConfig(voxel_size_m=0.02, observed_margin_m=0.01)
    with pytest.raises(ConfigError, match="mesh_source"):
        RefinedMapConfig(mesh_source="nerf")


class _SphereField(nn.Module):
    """A field stand-in: ``sdf`` of a sphere with a learnable radius."""

    def __init__(self, radius):
        super().__init__()
        self.radius = nn.Parameter(torch.tensor(float(radius)))

    def sdf(self, points):
        return torch.linalg.norm(points, dim=1) - self.radius


def test_field_sdf_evaluates_without_autograd_in_chunks():
    field, calls = _SphereField(0.25), []
    evaluate = field_sdf(field)

    def counted(points):
        calls.append(len(points))
        return evaluate(points)

    config = FieldMeshConfig(voxel_size_m=VOXEL_M, chunk_points=5000)
    mesh = extract_field_mesh(counted, _sphere_points((0, 0, 0), 0.25), None, config)
    assert len(calls) > 1 and max(calls) <= 5000 and sum(calls) == mesh.num_samples
    assert np.abs(np.linalg.norm(mesh.vertices_m, axis=1) - 0.25).max() < VOXEL_M
    values = evaluate(np.zeros((2, 3), np.float32))
    assert isinstance(values, np.ndarray)
    np.testing.assert_allclose(values, [-0.25, -0.25])


# ---- the refined map's option ----------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_scene():
    return make_toy_scene(num_frames=16, width=64, height=48)


@pytest.fixture(scope="module")
def trained(toy_scene):
    """A refined map serving the field's surface, published at step 12 of 40, labels purely
    from the field."""
    config = _config(40, ready_fraction=0.25, mesh_source="field", prior_fallback_confidence=0.0,
                     min_token_vertices=0)
    refined = _integrated(toy_scene, config)
    refined.train_steps(12)
    assert refined.is_ready
    return refined


def test_field_source_serves_the_field_surface_labelled_by_the_field(trained, toy_scene):
    mesh = trained.get_mesh()
    prior = trained.prior.mesh
    assert mesh.num_triangles > 100
    assert mesh.vertices_m.shape != prior.vertices_m.shape or \
        not np.array_equal(mesh.vertices_m, prior.vertices_m)
    # only near the observed (prior) surface: a vertex lies on a cell edge whose two ends are
    # within the margin of a prior vertex
    gap = np.min(np.linalg.norm(mesh.vertices_m[::7, None] - prior.vertices_m[None], axis=-1),
                 axis=1)
    grid = trained.config.field_mesh
    assert gap.max() <= grid.observed_margin_m + grid.voxel_size_m / 2
    # the field's own decision at the field's vertices (no fallback in this config)
    answer = trained.layer.labeller.label_points(mesh.vertices_m, False, trained.trainer)
    np.testing.assert_array_equal(mesh.label_ids, answer.label_ids)
    assert (mesh.label_ids > 0).mean() > 0.9
    # the raycast render uses the served mesh
    frame = toy_scene.frames[0]
    render = trained.render_labels(frame.T_world_cam, frame.intrinsics)
    expected = MeshRaycaster(mesh).render(frame.T_world_cam, frame.intrinsics)
    assert (render.depth_m > 0).any()
    np.testing.assert_array_equal(render.depth_m, expected.depth_m)


def test_the_option_switches_what_get_mesh_serves(trained):
    field_mesh = trained.get_mesh()
    trained.config.mesh_source = "tsdf"
    try:
        trained.layer.publish_field(trained.trainer)
        served = trained.get_mesh()
        np.testing.assert_array_equal(served.vertices_m, trained.prior.mesh.vertices_m)
        np.testing.assert_array_equal(served.triangles, trained.prior.mesh.triangles)
    finally:
        trained.config.mesh_source = "field"
        trained.layer.publish_field(trained.trainer)
    np.testing.assert_array_equal(trained.get_mesh().vertices_m, field_mesh.vertices_m)


def test_save_load_keeps_the_field_surface(trained, toy_scene, tmp_path):
    path = tmp_path / "refined.npz"
    trained.save(path)
    restored = RefinedPanopticMap(toy_scene.registry, _config(5), prior=ToyPriorMap(toy_scene))
    restored.load(path)
    assert restored.config.mesh_source == "field"
    assert restored.config.field_mesh == trained.config.field_mesh
    for name in ("vertices_m", "triangles", "label_ids", "instance_ids"):
        np.testing.assert_array_equal(getattr(restored.get_mesh(), name),
                                      getattr(trained.get_mesh(), name))
