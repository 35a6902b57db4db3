"""Ray-cast rendering of synthetic scenes: RGB, depth, and per-pixel ground truth.

One ``o3d.t.geometry.RaycastingScene`` is built per scene and reused for every frame. A pixel
``(u, v)`` looks along ``K^-1 [u, v, 1]`` (pixel centres at integer coordinates, OpenCV axes), so
the ray parameter of the hit *is* the z-depth. The hit triangle indexes per-triangle tables of
label, instance and material ids; colour is the material's solid texture at the hit point times
a simple Lambert shading (a fixed key light, a head light and ambient light) plus sensor noise.

Owns: :class:`CameraConfig`, :class:`RenderConfig`, :class:`SceneRenderer`, :class:`RenderedView`.
Does not own: the scene (``generator``), cameras (``trajectory``), depth noise (``depth_noise``),
frame streams (``sequence``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.geometry.camera import open3d_pinhole_K, pixel_directions
from panoptic_mapper.core.scene.depth_noise import DepthNoiseConfig, apply_depth_noise
from panoptic_mapper.core.scene.generator import SyntheticScene
from panoptic_mapper.core.types import (CameraIntrinsics, GroundTruthLabels,
                                        validate_rigid_transform)

RENDER_STREAM = 0x52454E44
"""Random-stream tag of the renderer (RGB and depth noise), mixed with the seed and frame index."""


@dataclass
class CameraConfig(ConfigBase):
    """Pinhole camera of the synthetic sensor (shared by RGB and depth: registered images)."""

    width: int = 640
    """Image width, pixels."""
    height: int = 480
    """Image height, pixels."""
    fx: float = 525.0
    """Focal length along x, pixels."""
    fy: float = 525.0
    """Focal length along y, pixels."""
    cx: float = 319.5
    """Principal point x, pixels (pixel centres at integer coordinates)."""
    cy: float = 239.5
    """Principal point y, pixels."""

    def validate(self) -> None:
        require(self.width > 0 and self.height > 0, "width", (self.width, self.height),
                "image size must be positive")
        require(self.fx > 0 and self.fy > 0, "fx", (self.fx, self.fy), "must be > 0")

    def intrinsics(self) -> CameraIntrinsics:
        return CameraIntrinsics(self.width, self.height, self.fx, self.fy, self.cx, self.cy)

    def scaled(self, factor: float) -> "CameraConfig":
        """The same camera at ``factor`` times the resolution (e.g. 0.25 for fast tests)."""
        k = self.intrinsics().scaled(factor)
        return CameraConfig(k.width, k.height, k.fx, k.fy, k.cx, k.cy)


@dataclass
class RenderConfig(ConfigBase):
    """How frames are rendered."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    depth_noise: DepthNoiseConfig = field(default_factory=DepthNoiseConfig)
    seed: int = 0
    """Seed of the sensor noise (RGB and depth); frame ``i`` uses the stream (seed, i)."""
    ambient: float = 0.35
    """Ambient light intensity (fraction of albedo seen with no direct light)."""
    key_light: float = 0.5
    """Intensity of the fixed directional key light."""
    key_light_direction: tuple[float, float, float] = (0.35, 0.25, 1.0)
    """World direction *towards* the key light (normalised internally)."""
    head_light: float = 0.3
    """Intensity of a light at the camera (brightens surfaces facing it)."""
    rgb_noise_std: float = 2.0
    """Standard deviation of additive Gaussian RGB noise, in 0-255 units (0 = none)."""
    frames_per_batch: int = 4
    """Frames whose rays are cast in one call (amortises per-call overhead)."""

    def validate(self) -> None:
        for name in ("ambient", "key_light", "head_light", "rgb_noise_std"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        require(float(np.linalg.norm(self.key_light_direction)) > 0, "key_light_direction",
                self.key_light_direction, "must be a non-zero vector")
        require(self.frames_per_batch >= 1, "frames_per_batch", self.frames_per_batch,
                "must be >= 1")


@dataclass
class RenderedView:
    """Everything rendered for one camera pose."""

    rgb: np.ndarray
    """[H, W, 3] uint8."""
    depth_m: np.ndarray
    """[H, W] float32 sensor depth (noisy when the noise model is on), 0 = no measurement."""
    clean_depth_m: np.ndarray
    """[H, W] float32 exact z-depth of the first hit, 0 = nothing hit."""
    label_ids: np.ndarray
    """[H, W] int32 ground-truth label id (0 = nothing hit)."""
    instance_ids: np.ndarray
    """[H, W] int32 ground-truth instance id (0 = stuff or nothing)."""

    @property
    def ground_truth(self) -> GroundTruthLabels:
        return GroundTruthLabels(self.label_ids, self.instance_ids)


class SceneRenderer:
    """Renders a :class:`SyntheticScene` from arbitrary poses (the ray-casting BVH is reused)."""

    def __init__(self, scene: SyntheticScene, config: RenderConfig | None = None):
        import open3d as o3d

        self.scene = scene
        self.config = config or RenderConfig()
        self.intrinsics = self.config.camera.intrinsics()
        self._o3c = o3d.core
        self._raycaster = o3d.t.geometry.RaycastingScene()
        self._raycaster.add_triangles(
            o3d.core.Tensor(scene.vertices_m.astype(np.float32)),
            o3d.core.Tensor(scene.triangles.astype(np.uint32)))
        k = self.intrinsics
        self._K_o3d = o3d.core.Tensor(open3d_pinhole_K(k))
        v, u = np.mgrid[0:k.height, 0:k.width].astype(np.float32)
        # z-depth over range of each pixel's ray (float32, like the shading).
        self._inv_ray_length = 1.0 / np.linalg.norm(pixel_directions(k, u, v),
                                                    axis=-1).reshape(-1)  # [H*W]
        key = np.asarray(self.config.key_light_direction, np.float32)
        self._key_dir = key / np.linalg.norm(key)
        # Per-frame RGB noise is a random window of one pre-drawn Gaussian bank: drawing 3 values
        # per pixel and frame would cost more than the rest of the colour computation.
        bank_rng = np.random.default_rng([self.config.seed, RENDER_STREAM, -1 & 0xFFFFFFFF])
        self._rgb_noise_bank = (bank_rng.standard_normal(6 * k.width * k.height, np.float32)
                                * np.float32(self.config.rgb_noise_std))
        # Sentinel row at the end: the value for rays that hit nothing.
        self._tri_label = np.append(scene.triangle_label_ids, 0).astype(np.int32)
        self._tri_instance = np.append(scene.triangle_instance_ids, 0).astype(np.int32)
        self._tri_material = np.append(scene.triangle_material_ids, 0).astype(np.int32)

    def render(self, T_world_cam: np.ndarray, frame_index: int = 0) -> RenderedView:
        """Render one view; ``frame_index`` selects the noise stream (determinism)."""
        return self.render_batch([T_world_cam], [frame_index])[0]

    def render_batch(self, poses: list[np.ndarray], frame_indices: list[int]
                     ) -> list[RenderedView]:
        """Render several views with one ray-casting call."""
        k = self.intrinsics
        rays = []
        for T in poses:
            T = validate_rigid_transform(T, "T_world_cam")
            rays.append(self._raycaster.create_rays_pinhole(
                self._K_o3d, self._o3c.Tensor(np.linalg.inv(T)), k.width, k.height))
        batch = rays[0].reshape((1, k.height, k.width, 6)) if len(rays) == 1 else \
            self._o3c.concatenate([r.reshape((1, k.height, k.width, 6)) for r in rays])
        hits = self._raycaster.cast_rays(batch)
        t_hit = hits["t_hit"].numpy().reshape(len(poses), -1)
        prim = hits["primitive_ids"].numpy().reshape(len(poses), -1)
        normals = hits["primitive_normals"].numpy().reshape(len(poses), -1, 3)
        directions = batch.numpy().reshape(len(poses), -1, 6)[:, :, 3:]
        return [self._shade(np.asarray(poses[i], float)[:3, 3], directions[i], t_hit[i], prim[i],
                            normals[i], frame_indices[i]) for i in range(len(poses))]

    def _shade(self, origin: np.ndarray, directions: np.ndarray, t_hit: np.ndarray,
               prim: np.ndarray, normals: np.ndarray, frame_index: int) -> RenderedView:
        k = self.intrinsics
        cfg = self.config
        hit = np.isfinite(t_hit)
        all_hit = bool(hit.all())
        if not all_hit:
            prim = np.where(hit, prim, len(self._tri_label) - 1)
            t_hit = np.where(hit, t_hit, np.float32(0.0))
        depth = t_hit.astype(np.float32)
        cos_view = np.einsum("ij,ij->i", normals, directions) * self._inv_ray_length
        key = np.einsum("ij,j->i", normals, self._key_dir)
        key = np.where(cos_view > 0, -key, key)  # normals are flipped to face the camera
        abs_cos = np.abs(cos_view)
        shade = (np.float32(cfg.ambient) + np.float32(cfg.key_light) * np.maximum(key, 0.0)
                 + np.float32(cfg.head_light) * abs_cos)
        points = origin.astype(np.float32) + directions * depth[:, None]
        albedo = self.scene.materials.albedo_at(points, self._tri_material[prim])
        rgb = albedo * (shade * np.float32(255.0))[:, None]
        if not all_hit:
            rgb[~hit] = 0.0
        rng = np.random.default_rng([cfg.seed, RENDER_STREAM, frame_index])
        if cfg.rgb_noise_std > 0:
            start = int(rng.integers(0, len(self._rgb_noise_bank) - rgb.size))
            rgb += self._rgb_noise_bank[start:start + rgb.size].reshape(rgb.shape)
        shape = (k.height, k.width)
        clean = depth.reshape(shape)
        noisy = apply_depth_noise(clean, rng, cfg.depth_noise, k.fx, abs_cos.reshape(shape))
        np.clip(rgb, 0.0, 255.0, out=rgb)
        return RenderedView(
            rgb=(rgb + 0.5).astype(np.uint8).reshape(*shape, 3),
            depth_m=noisy, clean_depth_m=clean,
            label_ids=self._tri_label[prim].reshape(shape),
            instance_ids=self._tri_instance[prim].reshape(shape))

