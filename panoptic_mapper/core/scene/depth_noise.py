"""Depth-sensor noise model for rendered depth (structured-light / active-stereo style).

Applied in this order to a clean z-depth image:

1. axial Gaussian noise,
   ``sigma(z) = sigma_base_m + sigma_quadratic_m * (z - sigma_offset_m)^2`` (the Kinect model
   of Nguyen et al. 2012: ~1.2 mm at 0.5 m, ~6 mm at 2 m, ~2.6 cm at 4 m);
2. disparity quantisation: ``d = fx * baseline / z`` rounded to ``disparity_step_px``, so the depth
   step grows with ``z^2`` (about 1.3 cm at 2 m for fx = 525, baseline 7.5 cm, 1/8 px); ``fx``
   is taken at the 640-pixel reference width, so a smaller rendering has the same depth noise;
3. dropout at depth edges (a pixel next to a jump larger than ``edge_jump_rel`` of its depth is
   lost with ``edge_dropout_prob``), at grazing angles and per pixel;
4. random elliptic holes (Poisson count per frame);
5. the valid range ``[min_range_m, max_range_m]``; outside it depth is 0.

Pixel sizes are given for a 640-pixel-wide image and scaled with the image width.

Owns: :class:`DepthNoiseConfig`, :func:`apply_depth_noise`.
Does not own: rendering (``renderer``) or random streams (the caller passes a generator).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from panoptic_mapper.core.config import ConfigBase, require

REFERENCE_WIDTH_PX = 640
"""Image width at which the pixel-valued parameters are specified."""


@dataclass
class DepthNoiseConfig(ConfigBase):
    """Parameters of the depth noise model (see module docstring)."""

    enabled: bool = True
    """False: the rendered depth is exact (clean tests)."""
    sigma_base_m: float = 0.0012
    """Constant part of the axial noise standard deviation, metres."""
    sigma_quadratic_m: float = 0.0019
    """Quadratic coefficient of the axial noise sigma, metres per (metre - offset)^2."""
    sigma_offset_m: float = 0.4
    """Depth at which the quadratic term vanishes, metres."""
    baseline_m: float = 0.075
    """Projector-camera baseline used for disparity quantisation, metres."""
    disparity_step_px: float = 0.125
    """Disparity resolution, pixels (0 disables quantisation)."""
    edge_jump_rel: float = 0.04
    """A neighbour depth jump above this fraction of the depth marks an edge pixel."""
    edge_dropout_prob: float = 0.7
    """Probability that an edge pixel (and the ``edge_width_px`` band around it) is lost."""
    edge_width_px: int = 1
    """Half-width of the band around depth edges where dropout happens, pixels at 640 px."""
    grazing_cos_min: float = 0.1
    """Pixels whose surface is seen at |cos(incidence)| below this are lost (0 disables)."""
    pixel_dropout_prob: float = 0.002
    """Probability that any single pixel is lost."""
    holes_per_frame: float = 1.5
    """Mean number (Poisson) of elliptic holes per frame."""
    hole_radius_px: tuple[float, float] = (3.0, 14.0)
    """Range of hole semi-axes, pixels at 640 px."""
    min_range_m: float = 0.3
    """Closest measurable depth, metres."""
    max_range_m: float = 5.0
    """Farthest measurable depth, metres."""

    def validate(self) -> None:
        for name in ("sigma_base_m", "sigma_quadratic_m", "baseline_m", "disparity_step_px",
                     "edge_jump_rel", "grazing_cos_min", "holes_per_frame", "min_range_m"):
            require(getattr(self, name) >= 0.0, name, getattr(self, name), "must be >= 0")
        for name in ("edge_dropout_prob", "pixel_dropout_prob"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, value, "must be a probability in [0, 1]")
        require(self.edge_width_px >= 0, "edge_width_px", self.edge_width_px, "must be >= 0")
        require(self.grazing_cos_min < 1.0, "grazing_cos_min", self.grazing_cos_min,
                "must be < 1")
        lo, hi = self.hole_radius_px
        require(0 < lo <= hi, "hole_radius_px", self.hole_radius_px, "must be 0 < low <= high")
        require(self.max_range_m > self.min_range_m, "max_range_m", self.max_range_m,
                "must exceed min_range_m")
        require(self.disparity_step_px == 0.0 or self.baseline_m > 0.0, "baseline_m",
                self.baseline_m, "must be > 0 when disparity quantisation is on")


def depth_sigma_m(depth_m: np.ndarray, config: DepthNoiseConfig) -> np.ndarray:
    """Axial noise standard deviation at each depth, metres."""
    return config.sigma_base_m + config.sigma_quadratic_m * (depth_m - config.sigma_offset_m) ** 2


def apply_depth_noise(depth_m: np.ndarray, rng: np.random.Generator, config: DepthNoiseConfig,
                      fx: float, cos_incidence: np.ndarray | None = None) -> np.ndarray:
    """A noisy copy of a clean depth image.

    Args:
        depth_m: [H, W] float32 clean z-depth, metres (0 = nothing hit).
        rng: random source (the caller seeds it per frame for determinism).
        config: noise parameters; ``enabled=False`` returns an exact copy.
        fx: focal length of this image in pixels (for disparity quantisation).
        cos_incidence: [H, W] |cos| of the angle between viewing ray and surface normal.

    Returns:
        [H, W] float32 depth, metres; 0 where the sensor gives no measurement.
    """
    depth = np.asarray(depth_m, np.float32)
    if not config.enabled:
        return depth.copy()
    h, w = depth.shape
    px_scale = w / REFERENCE_WIDTH_PX
    valid = depth > 0
    z = depth
    noisy = z + rng.standard_normal(z.shape, dtype=np.float32) * depth_sigma_m(z, config)
    if config.disparity_step_px > 0:
        fb = np.float32(fx / px_scale * config.baseline_m)
        step = np.float32(config.disparity_step_px)
        disparity = np.maximum(np.round(fb / np.maximum(noisy, np.float32(1e-3)) / step), 1.0)
        noisy = fb / (disparity * step)
    lost = ~valid | (noisy < config.min_range_m) | (noisy > config.max_range_m)
    edges = _edge_mask(depth, config.edge_jump_rel)
    band = int(round(config.edge_width_px * px_scale))
    if band > 0:
        edges = ndimage.binary_dilation(edges, iterations=band)
    edge_index = np.flatnonzero(edges)
    lost.flat[edge_index[rng.random(len(edge_index), dtype=np.float32)
                         < config.edge_dropout_prob]] = True
    if cos_incidence is not None and config.grazing_cos_min > 0:
        lost |= np.asarray(cos_incidence) < config.grazing_cos_min
    # Single-pixel dropout: a binomial count of distinct random pixels (same law as one
    # Bernoulli draw per pixel, without drawing one number per pixel).
    count = int(rng.binomial(z.size, config.pixel_dropout_prob))
    lost.flat[rng.choice(z.size, size=count, replace=False)] = True
    lost |= _holes(rng, (h, w), config.holes_per_frame,
                   np.asarray(config.hole_radius_px) * px_scale)
    return np.where(lost, 0.0, noisy).astype(np.float32)


def _edge_mask(depth: np.ndarray, jump_rel: float) -> np.ndarray:
    """Pixels with a 4-neighbour whose depth differs by more than ``jump_rel`` of theirs
    (or whose neighbour has no depth)."""
    edges = np.zeros(depth.shape, bool)
    for axis in (0, 1):
        a = np.take(depth, np.arange(depth.shape[axis] - 1), axis=axis)
        b = np.take(depth, np.arange(1, depth.shape[axis]), axis=axis)
        near = np.minimum(a, b)
        jump = (np.abs(a - b) > jump_rel * np.maximum(near, 1e-6)) & (np.maximum(a, b) > 0)
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis] = slice(0, depth.shape[axis] - 1)
        hi[axis] = slice(1, depth.shape[axis])
        edges[tuple(lo)] |= jump
        edges[tuple(hi)] |= jump
    return edges


def _holes(rng: np.random.Generator, shape: tuple[int, int], mean_count: float,
           radius_px: np.ndarray) -> np.ndarray:
    h, w = shape
    mask = np.zeros(shape, bool)
    for _ in range(int(rng.poisson(mean_count))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(radius_px[0], radius_px[1], 2)
        y0, y1 = int(max(0, cy - ry)), int(min(h, cy + ry + 1))
        x0, x1 = int(max(0, cx - rx)), int(min(w, cx + rx + 1))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return mask
