"""Label renders of a panoptic mesh: raycast it from a camera and read per-triangle labels.

Uses Open3D's ``RaycastingScene`` (works headless, unlike the offscreen renderer). A triangle
carries the label and instance of the majority of its three vertices (vertex 0 on a three-way
tie). The scene (BVH) is built lazily once per mesh and reused for every render of that mesh.

Owns: :class:`MeshRaycaster`. Does not own: the mesh or its labels.
"""
from __future__ import annotations

import numpy as np
import open3d as o3d
import open3d.core as o3c

from panoptic_mapper.core.types import CameraIntrinsics, LabelRender, PanopticMesh


def triangle_majority(values: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[F] value of the majority of each triangle's vertices (vertex 0 on a 3-way tie)."""
    v = values[triangles]  # [F, 3]
    return np.where((v[:, 1] == v[:, 2]) & (v[:, 0] != v[:, 1]), v[:, 1], v[:, 0])


class MeshRaycaster:
    """Renders label, instance and depth images of one :class:`PanopticMesh`."""

    def __init__(self, mesh: PanopticMesh):
        self.mesh = mesh
        self._scene: o3d.t.geometry.RaycastingScene | None = None
        self._triangle_labels = triangle_majority(mesh.label_ids, mesh.triangles)
        self._triangle_instances = triangle_majority(mesh.instance_ids, mesh.triangles)

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
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            o3c.Tensor(intrinsics.K), o3c.Tensor(np.linalg.inv(T_world_cam)), w, h)
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
