"""The oracle map: a :class:`PanopticMap` that already knows the ground-truth mesh.

It ignores the frames it is fed and renders the ground-truth mesh (labels, instance ids, depth)
by ray casting. Evaluating it checks the evaluation itself: on a scene whose ground-truth images
were rendered from the same mesh it must score 100 (PQ, mIoU, mCov, F1) with zero geometric
error; on other data its scores show how far the per-frame ground truth and the ground-truth
mesh agree, i.e. the best any map can do. ``panoptic-mapper eval --method oracle`` runs it.

Owns: the oracle map and ground-truth rendering of a labelled mesh (pixel-centre convention of
``core/types.py``: pixel (u, v) looks along K^-1 [u, v, 1]).
Does not own: any mapping algorithm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.geometry.camera import pixel_grid, world_rays
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate
from panoptic_mapper.core.types import (CameraIntrinsics, LabelRender, MapInstance, PanopticMesh,
                                        PanopticSegmentation2D, RgbdFrame)


class MeshLabelRenderer:
    """Ray casts a labelled triangle mesh: per-pixel label, instance and z-depth."""

    def __init__(self, mesh: PanopticMesh):
        import open3d as o3d

        if mesh.num_triangles == 0:
            raise InvalidInputError("mesh.triangles", 0, "nothing to render", kind="empty")
        self.mesh = mesh
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(mesh.vertices_m, np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(mesh.triangles, np.uint32)))
        # A triangle takes the label / instance of its first corner (meshes built per object
        # have one label per triangle).
        first = mesh.triangles[:, 0]
        self._triangle_labels = np.append(mesh.label_ids[first], 0).astype(np.int32)
        self._triangle_instances = np.append(mesh.instance_ids[first], 0).astype(np.int32)

    def render(self, T_world_cam: np.ndarray,  # noqa: N803
               intrinsics: CameraIntrinsics) -> LabelRender:
        """Labels, instance ids and z-depth (m, 0 = nothing hit) seen by a pinhole camera."""
        import open3d as o3d

        h, w = intrinsics.shape
        u, v = pixel_grid(intrinsics)
        # Directions with camera-frame z = 1, so the hit distance is the z-depth.
        origins, directions, _ = world_rays(T_world_cam, intrinsics, u.reshape(-1),
                                            v.reshape(-1), unit=False)
        rays = np.ascontiguousarray(np.concatenate([origins, directions], 1), np.float32)
        hits = self._scene.cast_rays(o3d.core.Tensor(rays))
        depth = hits["t_hit"].numpy()
        primitive = hits["primitive_ids"].numpy().astype(np.int64)
        missed = ~np.isfinite(depth)
        primitive[missed] = len(self._triangle_labels) - 1
        depth = np.where(missed, 0.0, depth).astype(np.float32)
        return LabelRender(label_ids=self._triangle_labels[primitive].reshape(h, w),
                           instance_ids=self._triangle_instances[primitive].reshape(h, w),
                           depth_m=depth.reshape(h, w))


class GroundTruthMeshMap:
    """A :class:`~panoptic_mapper.core.mapping.base.PanopticMap` that returns the ground truth."""

    def __init__(self, mesh: PanopticMesh, registry: LabelRegistry | None = None):
        self.registry = registry
        self._renderer = MeshLabelRenderer(mesh)
        self._frames = 0

    @classmethod
    def from_mesh_file(cls, path: str | Path,
                       registry: LabelRegistry | None = None) -> "GroundTruthMeshMap":
        """The oracle of a ``gt_mesh.ply``."""
        from panoptic_mapper.core.io.ply import read_ply

        return cls(read_ply(path), registry)

    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Counts the frame; the oracle learns nothing from it."""
        self._frames += 1
        return IntegrationReport(accepted=True, stats={"frames": float(self._frames)})

    def update_mesh(self) -> MeshUpdate:
        mesh = self._renderer.mesh
        return MeshUpdate(changed=False, num_vertices=mesh.num_vertices,
                          num_triangles=mesh.num_triangles)

    def get_mesh(self) -> PanopticMesh:
        return self._renderer.mesh

    def get_instances(self) -> list[MapInstance]:
        """Not provided: the oracle only serves renders and the mesh."""
        return []

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label and instance of the nearest ground-truth vertex of each point [N, 3]."""
        from scipy.spatial import cKDTree

        mesh = self._renderer.mesh
        points = np.asarray(points_m, np.float64).reshape(-1, 3)
        _, nearest = cKDTree(mesh.vertices_m).query(points)
        return mesh.label_ids[nearest], mesh.instance_ids[nearest]

    def render_labels(self, T_world_cam: np.ndarray,  # noqa: N803
                      intrinsics: CameraIntrinsics) -> LabelRender:
        return self._renderer.render(T_world_cam, intrinsics)

    def finalize(self) -> None:
        """Nothing to finish."""

    def save(self, path: str | Path) -> None:
        """Writes the ground-truth mesh as PLY."""
        from panoptic_mapper.core.io.ply import write_ply

        write_ply(path, self._renderer.mesh)

    def load(self, path: str | Path) -> None:
        """Reads a mesh written by :meth:`save`."""
        from panoptic_mapper.core.io.ply import read_ply

        self._renderer = MeshLabelRenderer(read_ply(path))
