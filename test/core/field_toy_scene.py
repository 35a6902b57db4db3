"""A tiny panoptic room for the refined-map tests: boxes in a 3 m room, raycast at low resolution.

Things: two tables side by side (same class, 5 cm apart), a chair and a cabinet; stuff: floor
and walls. Frames circle the room looking at its centre. The 2D "segmenter" gives every visible
object its own per-frame segment id (shuffled per frame, so no association across frames),
optionally eroding masks at their boundaries as Grounded SAM does.

Also a stand-in prior map (:class:`ToyPriorMap`) that answers from the ground-truth mesh, for
tests that need a ``PanopticMap`` prior without the instant map.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import torch

from panoptic_mapper.core.geometry.camera import world_rays
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate
from panoptic_mapper.core.types import (CameraIntrinsics, GroundTruthLabels, LabelRender,
                                        MapInstance, OrientedBox, PanopticMesh,
                                        PanopticSegmentation2D, RgbdFrame, Segment)

ROOM_M = 3.0
WALL, FLOOR, CHAIR, TABLE, CABINET = 1, 2, 10, 11, 14
# (label id, instance id, centre, size); instance 0 = stuff.
PARTS = [
    (FLOOR, 0, (1.5, 1.5, -0.05), (ROOM_M, ROOM_M, 0.1)),
    (WALL, 0, (1.5, -0.05, 1.1), (ROOM_M, 0.1, 2.2)),
    (WALL, 0, (1.5, ROOM_M + 0.05, 1.1), (ROOM_M, 0.1, 2.2)),
    (WALL, 0, (-0.05, 1.5, 1.1), (0.1, ROOM_M, 2.2)),
    (WALL, 0, (ROOM_M + 0.05, 1.5, 1.1), (0.1, ROOM_M, 2.2)),
    (TABLE, 1, (0.95, 1.2, 0.375), (0.6, 0.6, 0.75)),
    (TABLE, 2, (1.6, 1.2, 0.375), (0.6, 0.6, 0.75)),
    (CHAIR, 3, (2.2, 2.2, 0.45), (0.45, 0.45, 0.9)),
    (CABINET, 4, (0.6, 2.45, 0.5), (0.8, 0.4, 1.0)),
]


@dataclass
class ToyScene:
    frames: list[RgbdFrame]
    segmentations: list[PanopticSegmentation2D]
    ground_truth: list[GroundTruthLabels]
    mesh: PanopticMesh
    registry: LabelRegistry

    @property
    def thing_label_ids(self) -> tuple[int, ...]:
        return self.registry.thing_ids


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_world_cam of an OpenCV camera at ``eye`` looking at ``target`` (z up)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, forward], axis=1)
    T[:3, 3] = eye
    return T


def _box_mesh(centre, size) -> o3d.geometry.TriangleMesh:
    box = o3d.geometry.TriangleMesh.create_box(*size)
    box.translate(np.asarray(centre) - np.asarray(size) / 2.0)
    return box


def _scene_mesh(subdivide: int) -> PanopticMesh:
    vertices, triangles, labels, instances = [], [], [], []
    offset = 0
    for label, instance, centre, size in PARTS:
        box = _box_mesh(centre, size).subdivide_midpoint(subdivide)
        v = np.asarray(box.vertices)
        vertices.append(v)
        triangles.append(np.asarray(box.triangles) + offset)
        labels.append(np.full(len(v), label))
        instances.append(np.full(len(v), instance))
        offset += len(v)
    v = np.concatenate(vertices)
    return PanopticMesh(v, np.concatenate(triangles), np.full((len(v), 3), 128),
                        np.concatenate(labels), np.concatenate(instances))


def make_toy_scene(num_frames: int = 16, width: int = 64, height: int = 48,
                   erode_px: int = 0, seed: int = 0) -> ToyScene:
    """Render the toy room from ``num_frames`` poses on a circle around its centre."""
    registry = LabelRegistry.default()
    rng = np.random.default_rng(seed)
    scene = o3d.t.geometry.RaycastingScene()
    for _, _, centre, size in PARTS:
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(_box_mesh(centre, size)))
    part_label = np.array([p[0] for p in PARTS])
    part_instance = np.array([p[1] for p in PARTS])
    focal = 0.6 * width
    intrinsics = CameraIntrinsics(width, height, focal, focal, (width - 1) / 2, (height - 1) / 2)
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    frames, segmentations, truths = [], [], []
    for i in range(num_frames):
        angle = 2 * np.pi * i / num_frames
        eye = np.array([1.5 + 1.2 * np.cos(angle), 1.5 + 1.2 * np.sin(angle), 1.7])
        target = np.array([1.5 - 0.6 * np.cos(angle), 1.5 - 0.6 * np.sin(angle), 0.4])
        T = look_at(eye, target)
        # Camera-frame z = 1: the hit distance is the z-depth.
        origins, directions, _ = world_rays(T, intrinsics, u.reshape(-1), v.reshape(-1),
                                            unit=False)
        rays = np.concatenate([origins, directions], axis=1)
        hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
        depth = hit["t_hit"].numpy().reshape(height, width)
        geometry = hit["geometry_ids"].numpy().reshape(height, width).astype(np.int64)
        valid = np.isfinite(depth)
        depth = np.where(valid, depth, 0.0).astype(np.float32)
        geometry = np.where(valid, geometry, 0)
        label = np.where(valid, part_label[geometry], 0).astype(np.int32)
        instance = np.where(valid, part_instance[geometry], 0).astype(np.int32)
        rgb = (np.stack([label * 9, instance * 50, label * 3], -1) % 255).astype(np.uint8)
        frame = RgbdFrame(stamp_ns=i * 100_000_000, rgb=rgb, depth_m=depth, T_world_cam=T,
                          intrinsics=intrinsics, index=i)
        frames.append(frame)
        truths.append(GroundTruthLabels(label, instance))
        segmentations.append(_segment(label, instance, registry, erode_px, rng, frame.stamp_ns))
    return ToyScene(frames, segmentations, truths, _scene_mesh(3), registry)


def _segment(label: np.ndarray, instance: np.ndarray, registry: LabelRegistry, erode_px: int,
             rng: np.random.Generator, stamp_ns: int) -> PanopticSegmentation2D:
    key = label * 1000 + instance
    ids = np.zeros(label.shape, np.int32)
    segments = []
    present = [k for k in np.unique(key) if k > 0 and (key == k).sum() >= 4]
    order = rng.permutation(len(present)) + 1
    for seg_id, k in zip(order, present):
        mask = key == k
        for _ in range(erode_px):
            inner = mask.copy()
            inner[1:] &= mask[:-1]
            inner[:-1] &= mask[1:]
            inner[:, 1:] &= mask[:, :-1]
            inner[:, :-1] &= mask[:, 1:]
            mask = inner
        ids[mask] = seg_id
        lab = registry.by_id(int(k // 1000))
        segments.append(Segment(id=int(seg_id), label=lab.name, label_id=lab.id,
                                is_thing=lab.is_thing))
    return PanopticSegmentation2D(ids, tuple(segments), stamp_ns)


class ToyPriorMap:
    """A stand-in prior ``PanopticMap`` that knows the ground truth of the toy room.

    Its instance ids are the ground-truth ids plus ``id_offset`` (so tests can check that the
    refined map keeps the prior's ids); it counts integrated frames.
    """

    def __init__(self, scene: ToyScene, id_offset: int = 100):
        self.scene = scene
        self.id_offset = id_offset
        self.frames = 0
        mesh = scene.mesh
        instance = np.where(mesh.instance_ids > 0, mesh.instance_ids + id_offset, 0)
        stuff = {lab: 50 + lab for lab in (WALL, FLOOR)}
        instance = np.where(mesh.instance_ids > 0, instance,
                            np.vectorize(lambda lab: stuff.get(int(lab), 0))(mesh.label_ids))
        self.mesh = PanopticMesh(mesh.vertices_m, mesh.triangles, mesh.colors, mesh.label_ids,
                                 instance)

    def integrate_frame(self, frame, segmentation) -> IntegrationReport:
        self.frames += 1
        return IntegrationReport(accepted=True)

    def update_mesh(self) -> MeshUpdate:
        return MeshUpdate(changed=False, num_vertices=self.mesh.num_vertices,
                          num_triangles=self.mesh.num_triangles)

    def get_mesh(self) -> PanopticMesh:
        return self.mesh

    def get_instances(self) -> list[MapInstance]:
        out = []
        for label, instance, centre, size in PARTS:
            if instance:
                out.append(MapInstance(
                    id=instance + self.id_offset, label=self.scene.registry.by_id(label).name,
                    label_id=label, is_thing=True, confidence=1.0, centroid_m=np.array(centre),
                    bbox=OrientedBox(np.array(centre), np.eye(3), np.array(size)),
                    num_observations=self.frames))
        return out

    def query_labels(self, points_m):
        points = np.asarray(points_m).reshape(-1, 3)
        nearest = np.argmin(np.linalg.norm(points[:, None] - self.mesh.vertices_m[None], axis=-1),
                            axis=1)
        return self.mesh.label_ids[nearest], self.mesh.instance_ids[nearest]

    def render_labels(self, T_world_cam, intrinsics) -> LabelRender:  # noqa: N803
        h, w = intrinsics.shape
        return LabelRender(np.zeros((h, w), np.int32), np.zeros((h, w), np.int32),
                           np.zeros((h, w), np.float32))

    def finalize(self) -> None:
        pass

    def save(self, path) -> None:
        Path(path).write_text(str(self.frames))

    def load(self, path) -> None:
        self.frames = int(Path(path).read_text())


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread while a module's tests run (import it into a test module to use it).

    The field trainer uses torch's thread count as the process set it; here the test process is
    that owner. One thread, as the mapper node trains: on a loaded 2-core machine more threads
    make training several times slower, and the tests with time budgets would fail."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def refined_config(total_steps: int, **changes):
    """A ``RefinedMapConfig`` for the toy room: every frame a keyframe at full resolution,
    ``total_steps`` steps; ``changes`` are top-level config fields."""
    from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig

    config = RefinedMapConfig(**changes)
    config.keyframes.image_scale = 1.0
    config.keyframes.min_translation_m = 0.0
    config.training.trainer.total_steps = total_steps
    return config


def integrated_refined_map(scene: ToyScene, config, prior=None):
    """A refined map over ``prior`` (default: a ``ToyPriorMap``) that integrated every frame
    of the toy room (each one accepted)."""
    from panoptic_mapper.core.mapping.refined_map import RefinedPanopticMap

    refined = RefinedPanopticMap(scene.registry, config, prior=prior or ToyPriorMap(scene))
    for frame, segmentation in zip(scene.frames, scene.segmentations):
        assert refined.integrate_frame(frame, segmentation).accepted
    return refined
