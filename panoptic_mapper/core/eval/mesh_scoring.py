"""Score finished panoptic meshes (a map served by the ROS graph, a saved PLY) against a scene's
ground truth exactly as ``panoptic-mapper eval`` scores a map it runs itself.

The instant and the refined map render their labels by ray casting their own mesh with
:class:`~panoptic_mapper.core.tsdf.raycast.MeshRaycaster`. A mesh fetched from the graph
(``export_mesh``, the latched ``PanopticMesh`` topics) is therefore scored by wrapping it in
:class:`MeshMap`, a map that serves that one mesh through the same raycaster, and running it
through :func:`panoptic_mapper.core.eval.runner.evaluate`: the same scored frames, pixel grid,
robust rule, scene-level PQ, 2D/3D mIoU, mCov and geometry code. Scoring the offline instant
map's own mesh this way gives the instant map's ``eval`` scores.

What differs by construction from scoring the map object itself: nothing for the instant and
the refined map (both render ``get_mesh()`` after ``finalize`` + ``update_mesh``); a map whose
``render_labels`` does something other than ray cast its mesh would differ. A mesh fetched
from a running node is the node's last snapshot, which was not ``finalize``\\ d (the instant
map's tracker retires unconfirmed candidates there): that is a difference of the map, which
this scoring measures, not of the scoring.

ROS-free. Owns: :class:`MeshMap`, :func:`score_meshes`. Does not own: the run loop or the
metrics (``runner.py``, ``metrics.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.eval.runner import EvalConfig, EvalResult, EvalSource, MethodSpec, \
    evaluate
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import (CameraIntrinsics, LabelRender, MapInstance,
                                        PanopticMesh, PanopticSegmentation2D, RgbdFrame,
                                        validate_rigid_transform)

MESH_METHOD = "mesh"
"""``MethodResult.method`` of a scored mesh."""


class MeshMap:
    """A finished map: serves one fixed :class:`PanopticMesh` and ignores the frames it is fed.

    Renders like the instant and refined maps (``MeshRaycaster``: a triangle takes the label and
    instance of the majority of its corners); ``query_labels`` answers from the nearest vertex.
    """

    method_name = MESH_METHOD

    def __init__(self, mesh: PanopticMesh):
        self.mesh = mesh
        self._raycaster = MeshRaycaster(mesh)
        self.frames_fed = 0

    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Counts the frame; the mesh is final."""
        self.frames_fed += 1
        return IntegrationReport(accepted=True)

    def update_mesh(self) -> MeshUpdate:
        return MeshUpdate(changed=False, num_vertices=self.mesh.num_vertices,
                          num_triangles=self.mesh.num_triangles)

    def get_mesh(self) -> PanopticMesh:
        return self.mesh

    def get_instances(self) -> list[MapInstance]:
        """None: a mesh carries ids, not the instance table."""
        return []

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label and instance of the nearest vertex of each [N, 3] point (0, 0 without a mesh)."""
        points = np.asarray(points_m, np.float64).reshape(-1, 3)
        if self.mesh.num_vertices == 0:
            zeros = np.zeros(len(points), np.int32)
            return zeros, zeros.copy()
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(self.mesh.vertices_m).query(points)
        return self.mesh.label_ids[nearest], self.mesh.instance_ids[nearest]

    def render_labels(self, T_world_cam: np.ndarray,  # noqa: N803
                      intrinsics: CameraIntrinsics) -> LabelRender:
        T = validate_rigid_transform(T_world_cam, "T_world_cam")  # noqa: N806
        return self._raycaster.render(T, intrinsics)

    def finalize(self) -> None:
        """Nothing to finish."""

    def save(self, path: str | Path) -> None:
        """Writes the mesh as PLY."""
        from panoptic_mapper.core.io.ply import write_ply

        write_ply(path, self.mesh)

    def load(self, path: str | Path) -> None:
        """Reads a PLY written by :meth:`save` (or ``export_mesh``)."""
        from panoptic_mapper.core.io.ply import read_ply

        self.mesh = read_ply(path)
        self._raycaster = MeshRaycaster(self.mesh)


def ground_truth_labelled(mesh: PanopticMesh, gt_mesh: PanopticMesh) -> PanopticMesh:
    """``mesh``'s geometry with every vertex labelled from the closest surface point of the
    ground-truth mesh (its nearest vertex's label and instance): perfect labels on this
    geometry, the per-vertex ceiling no labelling of ``mesh`` can pass by much."""
    from dataclasses import replace

    from panoptic_mapper.core.eval.surface import closest_surface_points

    if mesh.num_vertices == 0:
        return mesh
    nearest = closest_surface_points(mesh.vertices_m, gt_mesh.vertices_m,
                                     gt_mesh.triangles).nearest_vertex
    return replace(mesh, label_ids=gt_mesh.label_ids[nearest].astype(mesh.label_ids.dtype),
                   instance_ids=gt_mesh.instance_ids[nearest].astype(mesh.instance_ids.dtype))


def score_meshes(source: str | Path | EvalSource, meshes: Mapping[str, PanopticMesh | str | Path],
                 config: EvalConfig | None = None, progress: bool = False) -> EvalResult:
    """Score finished meshes on a scene's ground truth, as ``evaluate`` scores maps.

    Args:
        source: the scene: a dataset folder or bag (opened with ``config``'s frame selection),
            or an opened :class:`EvalSource`. Use the same source and ``config`` as the run it
            is compared with: the scored frames depend on the number of frames.
        meshes: display name -> mesh, or path of a PLY with ``label_id`` / ``instance_id``
            (``export_mesh``, ``write_ply``). Several meshes share one pass over the frames.
        config: evaluation settings (default ``EvalConfig()``, as ``panoptic-mapper eval``).
        progress: show progress bars.

    Returns:
        The :class:`EvalResult`; ``methods[name]`` holds each mesh's scores (its timing
        numbers describe the no-op integration, not a map).

    Raises:
        InvalidInputError: no mesh given.
        DataFormatError: a PLY or the source cannot be read.
    """
    from panoptic_mapper.core.io.ply import read_ply

    if not meshes:
        raise InvalidInputError("meshes", {}, "give at least one mesh to score", kind="config")
    loaded = {name: mesh if isinstance(mesh, PanopticMesh) else read_ply(mesh)
              for name, mesh in meshes.items()}
    specs = [MethodSpec(name, MESH_METHOD, factory=lambda registry, m=mesh: MeshMap(m))
             for name, mesh in loaded.items()]
    return evaluate(source, specs, config, progress=progress)
