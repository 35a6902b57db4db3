"""Label renders of a panoptic mesh: raycast it from a camera and read per-triangle labels.

Uses Open3D's ``RaycastingScene`` (works headless, unlike the offscreen renderer). A triangle
carries the label and instance of the majority of its three vertices (vertex 0 on a three-way
tie; label and instance are decided together, from the same vertex, so a triangle never pairs
one vertex's label with another's instance). The scene (BVH) is built lazily once per mesh and
reused for every render of that mesh.

Owns: :class:`MeshRaycaster`. Does not own: the mesh or its labels.
"""
from __future__ import annotations

import numpy as np
import open3d as o3d
import open3d.core as o3c

from panoptic_mapper.core.geometry.camera import open3d_pinhole_K
from panoptic_mapper.core.geometry.camera import open3d_pinhole_K
from panoptic_mapper.core.types import CameraIntrinsics, LabelRender, PanopticMesh


def triangle_majority_vertex(keys: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[F] index of a vertex of each triangle whose key is held by the majority of its vertices
    (vertex 0 on a 3-way tie)."""
    k = keys[triangles]  # [F, 3]
    use_second = (k[:, 1] == k[:, 2]) & (k[:, 0] != k[:, 1])
    return np.where(use_second, triangles[:, 1], triangles[:, 0])


class MeshRaycaster:
    """Renders label, instance and depth images of one :class:`PanopticMesh`."""

    def __init__(self, mesh: PanopticMesh):
        self.mesh = mesh
        self._scene: o3d.t.geometry.RaycastingScene | None = None
        keys = (mesh.label_ids.astype(np.int64) << 32) | mesh.instance_ids.astype(np.int64)
        vertex = triangle_majority_vertex(keys, mesh.triangles)
        self._triangle_labels = mesh.label_ids[vertex]
        self._triangle_instances = mesh.instance_ids[vertex]

    def _get_scene(self) -> o3d.t.geometry.RaycastingScene:
        if self._scene is None:
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(o3c.Tensor(self.mesh.vertices_m.astype(np.float32)),
                                o3c.Tensor(self.mesh.triangles.astype(np.uint32)))
            self._scene = scene
        return self._scene

    def render(self, T_world_cam: np.ndarray,  # noqa: N803
               intrinsics: CameraIntrinsics) -> LabelRender:
        """Per-pixel label, instance and depth (0 where nothing is hit)."""
        h, w = intrinsics.shape
        if self.mesh.num_triangles == 0:
            return LabelRender(np.zeros((h, w), np.int32), np.zeros((h, w), np.int32),
                               np.zeros((h, w), np.float32))
        # Through our pixel centres (u, v), as the back-projection and the ground truth.
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            o3c.Tensor(open3d_pinhole_K(intrinsics)), o3c.Tensor(np.linalg.inv(T_world_cam)),
            w, h)
        hit = self._get_scene().cast_rays(rays)
        t_hit = hit["t_hit"].numpy()
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        ok = np.isfinite(t_hit)
        prim = np.where(ok, prim, 0)
        # Rays from create_rays_pinhole have a unit optical-axis component: t_hit is the depth.
        depth = np.where(ok, t_hit, 0.0).astype(np.float32)
        labels = np.where(ok, self._triangle_labels[prim], 0).astype(np.int32)
        instances = np.where(ok, self._triangle_instances[prim], 0).astype(np.int32)
        return LabelRender(label_ids=labels, instance_ids=instances, depth_m=depth)
