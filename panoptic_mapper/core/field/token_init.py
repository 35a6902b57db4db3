"""Where instance tokens start: back-projected mask pixels, or the instant map's instances.

From keyframes (paper / code, section 1.5): for every keyframe and every 2D thing mask, a few
random pixels with valid depth are back-projected; the points are voxel-downsampled (0.8 m, mean
per voxel) and at most ``max_initial_tokens`` are kept at random; each seeds an isotropic token of
std ``init_sigma_m``.

From a prior (our addition, for a robot that already runs the instant map): one token per thing
instance, centred on it, rotated and scaled like its oriented box.

Owns: :class:`TokenSeeds` and the two seeders. Does not own: the token module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.field.config import TokenConfig
from panoptic_mapper.core.field.keyframes import Keyframe
from panoptic_mapper.core.types import MapInstance


@dataclass
class TokenSeeds:
    """Initial Gaussians of N tokens."""

    means_m: np.ndarray
    """[N, 3] centres, metres."""
    sigmas_m: np.ndarray
    """[N, 3] standard deviations along the token axes, metres."""
    rotations: np.ndarray
    """[N, 3, 3] token axes in the world frame."""
    prior_ids: np.ndarray
    """[N] int64 id of the prior instance a token came from (0 = none)."""
    label_ids: np.ndarray | None = None
    """[N] int64 registry label of that prior instance (None: unknown)."""

    @property
    def count(self) -> int:
        return len(self.means_m)


def voxel_downsample_mean(points_m: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """[M, 3] mean of the points in each occupied voxel (voxels in sorted key order)."""
    points = np.asarray(points_m, np.float64).reshape(-1, 3)
    if len(points) == 0:
        return points
    keys = np.floor(points / voxel_size_m).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, points)
    return sums / counts[:, None]


def seeds_from_keyframes(keyframes: list[Keyframe], config: TokenConfig, near_m: float,
                         rng: np.random.Generator) -> TokenSeeds:
    """Token seeds from back-projected pixels of every 2D thing mask of every keyframe."""
    points = []
    for keyframe in keyframes:
        valid = keyframe.valid_pixels(near_m)
        masks = keyframe.thing_mask.reshape(-1)[valid]
        for mask in range(keyframe.num_masks):
            pixels = valid[masks == mask]
            if len(pixels):
                chosen = rng.choice(pixels, size=min(config.init_pixels_per_mask, len(pixels)),
                                    replace=False)
                points.append(keyframe.surface_points(chosen))
    if not points:
        return _empty_seeds()
    means = voxel_downsample_mean(np.concatenate(points), config.init_voxel_size_m)
    if len(means) > config.max_initial_tokens:
        means = means[np.sort(rng.choice(len(means), config.max_initial_tokens, replace=False))]
    count = len(means)
    return TokenSeeds(means, np.full((count, 3), config.init_sigma_m),
                      np.tile(np.eye(3), (count, 1, 1)), np.zeros(count, np.int64))


def seeds_from_prior(instances: list[MapInstance], config: TokenConfig) -> TokenSeeds:
    """One token per thing instance of a prior map (centroid, box rotation, box half size)."""
    things = [inst for inst in instances if inst.is_thing]
    if not things:
        return _empty_seeds()
    means = np.stack([inst.centroid_m for inst in things])
    rotations = np.stack([_proper_rotation(inst.bbox.R_world_box) for inst in things])
    half = np.stack([np.asarray(inst.bbox.size_m, np.float64) / 2.0 for inst in things])
    sigmas = np.maximum(config.prior_sigma_scale * half, config.prior_min_sigma_m)
    return TokenSeeds(means, sigmas, rotations, np.array([inst.id for inst in things], np.int64),
                      np.array([inst.label_id for inst in things], np.int64))


def _proper_rotation(R: np.ndarray) -> np.ndarray:  # noqa: N803
    """The nearest rotation (det +1) to a 3x3 matrix (boxes may come with a reflection)."""
    u, _, vt = np.linalg.svd(np.asarray(R, np.float64))
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        u[:, -1] *= -1
        rotation = u @ vt
    return rotation


def _empty_seeds() -> TokenSeeds:
    return TokenSeeds(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3, 3)),
                      np.zeros(0, np.int64))
