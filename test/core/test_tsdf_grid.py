"""``core/tsdf/grid.py``: block allocation, voxel layout, lookups, mesh and state export."""
import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.tsdf.block_mesher import BlockMesher
from panoptic_mapper.core.tsdf.grid import (PanopticVoxelGrid, TsdfConfig, pack_block_keys,
                                            unpack_block_keys)
from panoptic_mapper.core.types import CameraIntrinsics

INTR = CameraIntrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)


def _wall_grid(distance_m=1.0, frames=4):
    """A grid that saw a fronto-parallel wall at ``distance_m`` from the origin camera."""
    grid = PanopticVoxelGrid(TsdfConfig(voxel_size_m=0.05, block_count=256), num_label_channels=3)
    depth = np.full(INTR.shape, distance_m, np.float32)
    rgb = np.full(INTR.shape + (3,), 200, np.uint8)
    for _ in range(frames):
        keys = grid.integrate(depth, rgb, INTR, np.eye(4))
    return grid, keys


def test_config_validation():
    assert TsdfConfig().trunc_m == pytest.approx(0.08)
    with pytest.raises(ConfigError, match="block_resolution"):
        TsdfConfig(block_resolution=6)
    with pytest.raises(ConfigError, match="depth_max_m"):
        TsdfConfig(depth_min_m=2.0, depth_max_m=1.0)


def test_integration_allocates_zeroed_blocks_and_surface_is_found():
    grid, keys = _wall_grid()
    assert keys.shape[1] == 3 and grid.num_blocks >= keys.shape[0] > 0
    flat = grid.lookup(np.array([[0.0, 0.0, 1.0]]))
    assert flat[0] >= 0
    assert abs(grid.attribute("tsdf")[flat[0]]) < 0.2  # on the surface (sdf / trunc)
    assert grid.attribute("weight")[flat[0]] == pytest.approx(4.0)
    np.testing.assert_allclose(grid.attribute("color")[flat[0]], [200, 200, 200], atol=1)
    # Open3D does not clear new blocks: the grid must have.
    active = grid.active_flat_indices()
    assert not grid.attribute("label_evidence")[active].any()
    assert not grid.attribute("instance_id")[active].any()
    # Far from any observation nothing is allocated.
    assert grid.lookup(np.array([[5.0, 5.0, 5.0]]))[0] == -1


def test_reused_buffers_are_cleared():
    grid, _ = _wall_grid(frames=1)
    grid.attribute("label_evidence")[:] = 7.0  # garbage in every buffer, used or not
    grid.attribute("tsdf")[:] = 0.5
    bufs = grid.allocate_blocks(np.array([[40, 40, 40]]))
    block = grid.attribute("label_evidence")[bufs[0] * 512:(bufs[0] + 1) * 512]
    assert not block.any()
    assert not grid.attribute("tsdf")[bufs[0] * 512:(bufs[0] + 1) * 512].any()


def test_voxel_layout_matches_positions():
    grid, _ = _wall_grid()
    points = np.array([[0.1, -0.2, 1.0], [-0.33, 0.12, 0.96]])
    flat = grid.lookup(points)
    centres = grid.voxel_positions(flat)
    np.testing.assert_allclose(centres, np.round(points / 0.05) * 0.05, atol=1e-9)


def test_neighbourhood_weights():
    grid, _ = _wall_grid()
    p = np.array([[0.012, -0.02, 1.01]])
    flat, w = grid.neighbourhood(p, 1)
    assert flat.shape == (1, 8) and np.all(flat >= 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-6)
    centres = grid.voxel_positions(flat[0])
    np.testing.assert_allclose((w[0, :, None] * centres).sum(axis=0), p[0], atol=1e-6)
    flat2, w2 = grid.neighbourhood(p, 2)
    # A tent of half-width 2 sampled at 4 unit-spaced points sums to 2 per axis.
    assert flat2.shape == (1, 64) and w2.sum() == pytest.approx(2.0 ** 3, rel=1e-5)


def _full_mesh(grid):
    mesher = BlockMesher(weight_threshold=1.0, block_resolution=grid.config.block_resolution)
    return mesher.apply(mesher.plan(grid, None).run()).mesh


def test_mesh_is_canonical_and_state_round_trips():
    grid, _ = _wall_grid()
    grid.attribute("label_evidence")[grid.active_flat_indices()[:10]] = 1.5
    mesh = _full_mesh(grid)
    assert mesh.vertices_m.shape[0] > 100 and mesh.triangles.shape[0] > 100
    assert np.all(np.diff(mesh.vertices_m[:, 0]) >= 0)  # sorted by x first
    np.testing.assert_allclose(mesh.vertices_m[:, 2], 1.0, atol=0.03)
    state = grid.export_state()
    other = PanopticVoxelGrid(grid.config, 3)
    other.import_state(state)
    again = _full_mesh(other)
    np.testing.assert_array_equal(mesh.vertices_m, again.vertices_m)
    np.testing.assert_array_equal(mesh.triangles, again.triangles)
    np.testing.assert_array_equal(mesh.colors, again.colors)
    round_trip = other.export_state()
    np.testing.assert_array_equal(state.block_keys, round_trip.block_keys)
    for name, arr in state.attributes.items():
        np.testing.assert_array_equal(arr, round_trip.attributes[name])


def test_block_index_snapshot_agrees_with_the_live_grid():
    grid, _ = _wall_grid()
    index = grid.block_index()
    rng = np.random.default_rng(3)
    coords = rng.integers(-40, 40, (2000, 3))
    coords[:, 2] = rng.integers(15, 25, 2000)  # around the wall (voxel 20)
    np.testing.assert_array_equal(index.flat_indices(coords), grid.flat_indices(coords))
    assert (index.flat_indices(coords) >= 0).any() and (index.flat_indices(coords) < 0).any()
    flat = grid.flat_indices(coords)
    found = flat[flat >= 0]
    keys = index.block_keys_of_flat(found)
    np.testing.assert_array_equal(keys, pack_block_keys(coords[flat >= 0] >> 3))
    np.testing.assert_array_equal(unpack_block_keys(pack_block_keys(coords)), coords)
    # Later allocations do not change what the snapshot answers.
    grid.allocate_blocks(np.array([[30, 30, 30]]))
    assert index.flat_indices(np.array([[240, 240, 240]]))[0] == -1
    assert grid.flat_indices(np.array([[240, 240, 240]]))[0] >= 0
    copy = grid.copy_geometry(np.array([[30, 30, 30], [99, 99, 99]]))
    assert copy.block_keys.tolist() == [[30, 30, 30]] and copy.tsdf.shape == (1, 8, 8, 8, 1)
