"""A small room of boxes rendered from a slow pan, with ground-truth 2D panoptic segmentations
(shared by the instant map and the loop-correction tests)."""
from __future__ import annotations

import numpy as np
import open3d as o3d
import open3d.core as o3c
from scipy.spatial.transform import Rotation

from panoptic_mapper.core.geometry.camera import open3d_pinhole_K
from panoptic_mapper.core.types import (CameraIntrinsics, PanopticSegmentation2D, RgbdFrame,
                                        Segment)

INTR = CameraIntrinsics(width=320, height=240, fx=250.0, fy=250.0, cx=159.5, cy=119.5)
# (centre, size, label name, gt instance id, colour)
OBJECTS = [
    ((0.0, 0.5, -0.05), (5.0, 4.0, 0.1), "floor", 0, (90, 160, 90)),
    ((0.0, 2.05, 1.0), (5.0, 0.1, 2.0), "wall", 0, (200, 200, 220)),
    ((-0.55, 0.3, 0.25), (0.5, 0.5, 0.5), "box", 1, (200, 120, 50)),
    ((0.05, 0.3, 0.25), (0.5, 0.5, 0.5), "box", 2, (190, 110, 60)),
    ((0.8, -0.2, 0.4), (0.6, 0.4, 0.8), "cabinet", 3, (50, 60, 200)),
    ((2.0, 0.8, 0.3), (0.45, 0.45, 0.6), "chair", 4, (180, 180, 30)),
]
NUM_FRAMES = 36


class Scene:
    def __init__(self, registry):
        self.registry = registry
        vertices, triangles, labels, instances, colors = [], [], [], [], []
        offset = 0
        for centre, size, name, inst, color in OBJECTS:
            box = o3d.geometry.TriangleMesh.create_box(*size)
            box.translate(np.asarray(centre) - np.asarray(size) / 2.0)
            tris = np.asarray(box.triangles)
            vertices.append(np.asarray(box.vertices))
            triangles.append(tris + offset)
            offset += len(box.vertices)
            labels += [registry.by_name(name).id] * len(tris)
            instances += [inst] * len(tris)
            colors += [color] * len(tris)
        self.raycaster = o3d.t.geometry.RaycastingScene()
        self.raycaster.add_triangles(o3c.Tensor(np.concatenate(vertices).astype(np.float32)),
                                     o3c.Tensor(np.concatenate(triangles).astype(np.uint32)))
        self.labels = np.array(labels)
        self.instances = np.array(instances)
        self.colors = np.array(colors, np.uint8)

    def render(self, T):
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            o3c.Tensor(open3d_pinhole_K(INTR)), o3c.Tensor(np.linalg.inv(T)), INTR.width, INTR.height)
        hit = self.raycaster.cast_rays(rays)
        t = hit["t_hit"].numpy()
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        ok = np.isfinite(t)
        prim = np.where(ok, prim, 0)
        depth = np.where(ok, t, 0.0).astype(np.float32)
        shade = np.where(ok, 0.7 + 0.3 * ((prim % 12) / 12.0), 0)[..., None]
        rgb = (self.colors[prim] * shade).astype(np.uint8)
        labels = np.where(ok, self.labels[prim], 0)
        return depth, rgb, labels, np.where(ok, self.instances[prim], 0)

    def segmentation(self, labels, instances, rng):
        ids = np.zeros(labels.shape, np.int32)
        segments = []
        keys = sorted(set(zip(labels[labels > 0].tolist(), instances[labels > 0].tolist())))
        new_ids = rng.permutation(len(keys)) + 1 + int(rng.integers(0, 50))
        for (label_id, inst), seg_id in zip(keys, new_ids):
            label = self.registry.by_id(label_id)
            ids[(labels == label_id) & (instances == inst)] = seg_id
            segments.append(Segment(int(seg_id), label.name, label_id, label.is_thing, 0.9))
        return PanopticSegmentation2D(ids, tuple(segments))


def pose(k):
    """Camera k of a slow pan from left to right, looking at the scene from 2.6 m."""
    yaw = np.radians(-40.0 + 80.0 * k / (NUM_FRAMES - 1))
    eye = np.array([2.6 * np.sin(yaw), 0.3 - 2.6 * np.cos(yaw), 1.4])
    target = np.array([0.9 * np.sin(yaw) * 2.0, 0.5, 0.3])
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, (0.0, 0.0, 1.0))
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, eye
    return T


def frame(k, depth, rgb):
    return RgbdFrame(stamp_ns=k * 100_000_000, rgb=rgb, depth_m=depth, T_world_cam=pose(k),
                     intrinsics=INTR, index=k)


def drift(k: int, metres_per_frame: float) -> np.ndarray:
    """What a drifting odometry adds after frame 12: a growing shift and yaw."""
    T = np.eye(4)  # noqa: N806
    steps = max(0, k - 12)
    T[:3, :3] = Rotation.from_euler("z", 0.4 * steps, degrees=True).as_matrix()
    T[:3, 3] = (metres_per_frame * steps, 0.5 * metres_per_frame * steps, 0.0)
    return T
