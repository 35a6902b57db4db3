"""``core/tsdf/block_mesher.py``: re-meshing changed blocks gives exactly the full mesh."""
import numpy as np
import open3d as o3d
import open3d.core as o3c
import pytest

from panoptic_mapper.core.geometry.camera import open3d_pinhole_K
from panoptic_mapper.core.tsdf.block_mesher import BlockMesher
from panoptic_mapper.core.tsdf.grid import PanopticVoxelGrid, TsdfConfig
from panoptic_mapper.core.types import CameraIntrinsics

INTR = CameraIntrinsics(width=96, height=72, fx=160.0, fy=160.0, cx=47.5, cy=35.5)


@pytest.fixture(scope="module")
def scene():
    """A floor, a wall and two boxes."""
    raycaster = o3d.t.geometry.RaycastingScene()
    for centre, size in (((0, 0, -0.05), (4, 4, 0.1)), ((0, 1.5, 1), (4, 0.1, 2)),
                         ((-0.4, 0.3, 0.3), (0.5, 0.4, 0.6)), ((0.5, 0.0, 0.2), (0.3, 0.3, 0.4))):
        box = o3d.geometry.TriangleMesh.create_box(*size)
        box.translate(np.asarray(centre, float) - np.asarray(size) / 2.0)
        raycaster.add_triangles(o3c.Tensor(np.asarray(box.vertices, np.float32)),
                                o3c.Tensor(np.asarray(box.triangles, np.uint32)))
    return raycaster


def pose(k):
    yaw = np.radians(-50.0 + 12.0 * k)
    eye = np.array([2.2 * np.sin(yaw), -2.2 * np.cos(yaw), 1.3])
    z = np.array([0.0, 0.3, 0.3]) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, (0.0, 0.0, 1.0))
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, eye
    return T


def integrate(grid, scene, k):
    T = pose(k)
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3c.Tensor(open3d_pinhole_K(INTR)), o3c.Tensor(np.linalg.inv(T)), INTR.width, INTR.height)
    hit = scene.cast_rays(rays)
    t = hit["t_hit"].numpy()
    depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)
    prim = np.where(np.isfinite(t), hit["primitive_ids"].numpy(), 0).astype(np.int64)
    rgb = np.stack([prim % 251, (prim * 7) % 253, np.full_like(prim, 90)], -1).astype(np.uint8)
    return grid.integrate(depth, rgb, INTR, T)


def full_mesh(grid, threshold):
    mesher = BlockMesher(threshold, grid.config.block_resolution)
    return mesher.apply(mesher.plan(grid, None).run()).mesh


def assert_same_mesh(a, b):
    np.testing.assert_array_equal(a.vertices_m, b.vertices_m)
    np.testing.assert_array_equal(a.triangles, b.triangles)
    np.testing.assert_array_equal(a.colors, b.colors)


def triangle_set(vertices, triangles):
    corners = np.sort(vertices[triangles].view(np.dtype((np.void, 12)))[..., 0], axis=1)
    return {row.tobytes() for row in corners}


def test_incremental_updates_equal_a_full_extraction(scene):
    grid = PanopticVoxelGrid(TsdfConfig(voxel_size_m=0.03, block_resolution=4,
                                        block_count=2000), 2)
    mesher = BlockMesher(1.0, 4)
    pending = []
    for k in range(9):
        pending.append(integrate(grid, scene, k))
        if k in (1, 4, 5, 6, 7, 8):  # sometimes several frames per update, as a node would do
            previous = mesher.mesh
            delta = mesher.apply(mesher.plan(grid, np.concatenate(pending)).run())
            pending = []
            full = full_mesh(grid, 1.0)
            assert full.triangles.shape[0] > 5000
            assert_same_mesh(delta.mesh, full)
            assert delta.full == (k == 1)
    # The last update re-meshed part of the grid only, and the vertices of the rest kept their
    # place in the previous mesh.
    assert 0 < delta.affected_block_keys.size < 0.8 * grid.num_blocks
    kept = delta.previous_index >= 0
    assert kept.mean() > 0.1
    np.testing.assert_array_equal(delta.mesh.vertices_m[kept],
                                  previous.vertices_m[delta.previous_index[kept]])
    np.testing.assert_array_equal(delta.mesh.colors[kept],
                                  previous.colors[delta.previous_index[kept]])
    # An update with nothing changed keeps the mesh.
    again = mesher.apply(mesher.plan(grid, np.zeros((0, 3), np.int32)).run())
    assert_same_mesh(again.mesh, delta.mesh)
    np.testing.assert_array_equal(again.previous_index, np.arange(delta.mesh.vertices_m.shape[0]))


def test_full_extraction_has_open3d_triangles(scene):
    grid = PanopticVoxelGrid(TsdfConfig(voxel_size_m=0.04, block_count=800), 2)
    for k in range(0, 9, 2):
        integrate(grid, scene, k)
    ours = full_mesh(grid, 3.0)
    reference = grid._vbg.extract_triangle_mesh(3.0)
    ref_vertices = reference.vertex.positions.numpy().astype(np.float32)
    ref_triangles = reference.triangle.indices.numpy()
    assert ours.triangles.shape == ref_triangles.shape
    assert triangle_set(ours.vertices_m, ours.triangles) == triangle_set(ref_vertices,
                                                                         ref_triangles)
    assert np.all(np.diff(ours.vertices_m[:, 0]) >= 0)


def test_patches_apply_in_order_only(scene):
    grid = PanopticVoxelGrid(TsdfConfig(voxel_size_m=0.04, block_count=800), 2)
    keys = integrate(grid, scene, 0)
    mesher = BlockMesher(1.0, 8)
    first = mesher.plan(grid, None)
    stale = mesher.plan(grid, keys)
    mesher.apply(first.run())
    with pytest.raises(ValueError, match="generation"):
        mesher.apply(stale.run())
    empty = BlockMesher(1.0, 8)
    grid.reset()
    assert empty.apply(empty.plan(grid, None).run()).mesh.vertices_m.shape == (0, 3)
