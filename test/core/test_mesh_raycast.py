"""``core/tsdf/raycast.py``: rendered pixels look along the same rays as the back-projection."""
import numpy as np

from panoptic_mapper.core.geometry.camera import pixel_directions
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import CameraIntrinsics, PanopticMesh


def test_pixel_rays_pass_through_the_pixel_centres_of_the_pinhole_model():
    # A slanted plane z = 1 + 0.5 x in front of the camera: depth at pixel (u, v) must be the
    # analytic depth along the ray ((u - cx) / fx, (v - cy) / fy, 1), not along (u + 0.5, ...).
    size = 4.0
    xs = np.array([-size, size, size, -size])
    ys = np.array([-size, -size, size, size])
    vertices = np.stack([xs, ys, 1.0 + 0.5 * xs], axis=1).astype(np.float32)
    mesh = PanopticMesh(vertices, np.array([[0, 1, 2], [0, 2, 3]], np.int32),
                        np.zeros((4, 3), np.uint8), np.full(4, 3, np.int32),
                        np.full(4, 7, np.int32))
    intrinsics = CameraIntrinsics(width=8, height=6, fx=4.0, fy=4.0, cx=3.0, cy=2.0)
    render = MeshRaycaster(mesh).render(np.eye(4), intrinsics)
    v, u = np.mgrid[0:6, 0:8]
    ray_x = pixel_directions(intrinsics, u, v)[..., 0]
    expected = 1.0 / (1.0 - 0.5 * ray_x)  # z = 1 + 0.5 * (ray_x * z)
    np.testing.assert_allclose(render.depth_m, expected, rtol=1e-5)
    assert (render.label_ids == 3).all() and (render.instance_ids == 7).all()
