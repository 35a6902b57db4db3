"""Masks from boxes without a learned mask model: a depth band per box, optionally GrabCut.

A box detector says where an object is, not which pixels are it. SAM answers that when its
weights are available (``sam_box_cutter``); without them this module cuts a mask from the
registered depth image, which is what a robot has anyway:

1. the object's depth is the median valid depth of the central ``inner_fraction`` of the box;
2. pixels of the box within a depth band around it are candidates; the band's half width grows
   with the box's size in metres (a table seen at a grazing angle spans more depth than a mug):
   ``clip(band_size_factor * max(box width, box height in m), band_min_m, band_max_m)``;
3. pixels the caller excludes (floor and ceiling found by the stuff labeller) are removed;
4. the mask is the 8-connected component of the candidates that covers most of the inner box.

``depth_grabcut`` then refines that mask with OpenCV's GrabCut on the colour image, seeded with
the depth mask as probable foreground, its eroded core as sure foreground and the rest of the box
as probable background (about 0.3 s per box on a 2-core CPU, see BENCHMARKS.md). ``box`` fills the
whole box (a baseline).

Owns: :class:`BoxMaskConfig`, :func:`depth_box_masks`, :func:`grabcut_refine`, :func:`cut_masks`.
Does not own: SAM (``sam_box_cutter``), which pixels are stuff (``stuff_labeller``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError

BoxXYXY = tuple[float, float, float, float]
EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass
class BoxMaskConfig(ConfigBase):
    """How a box becomes a mask when no SAM weights are given (YAML ``detector.masks``)."""

    method: Literal["depth", "depth_grabcut", "box"] = "depth"
    """depth: depth band + connected component; depth_grabcut: that, refined by GrabCut on the
    colour image (slower); box: the whole box (baseline)."""
    inner_fraction: float = 0.5
    """Side of the central part of the box, as a fraction of the box, whose median depth is
    the object's depth."""
    band_min_m: float = 0.1
    """Smallest half width of the depth band, metres."""
    band_size_factor: float = 0.5
    """Half width of the depth band relative to the box's larger side in metres."""
    band_max_m: float = 0.8
    """Largest half width of the depth band, metres."""
    min_inner_valid_fraction: float = 0.05
    """With fewer valid depth pixels in the inner box, the mask is empty (the object is not
    measured; its box alone would paint the background)."""
    grabcut_iterations: int = 2
    """GrabCut iterations (depth_grabcut)."""
    grabcut_margin_px: int = 8
    """Pixels around the box that GrabCut sees as sure background (depth_grabcut)."""

    def validate(self) -> None:
        require(0.0 < self.inner_fraction <= 1.0, "inner_fraction", self.inner_fraction,
                "must be in (0, 1]")
        require(0.0 < self.band_min_m <= self.band_max_m, "band_min_m", self.band_min_m,
                "must be > 0 and <= band_max_m")
        require(self.band_size_factor >= 0.0, "band_size_factor", self.band_size_factor,
                "must be >= 0")
        require(0.0 <= self.min_inner_valid_fraction <= 1.0, "min_inner_valid_fraction",
                self.min_inner_valid_fraction, "must be in [0, 1]")
        require(self.grabcut_iterations >= 1, "grabcut_iterations", self.grabcut_iterations,
                "must be >= 1")
        require(self.grabcut_margin_px >= 1, "grabcut_margin_px", self.grabcut_margin_px,
                "must be >= 1")


def _pixel_box(box: BoxXYXY, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1), clipped, at least one pixel."""
    x0 = int(np.clip(np.floor(box[0]), 0, width - 1))
    y0 = int(np.clip(np.floor(box[1]), 0, height - 1))
    x1 = int(np.clip(np.ceil(box[2]), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box[3]), y0 + 1, height))
    return x0, y0, x1, y1


def depth_box_masks(depth_m: np.ndarray, boxes: Sequence[BoxXYXY], config: BoxMaskConfig,
                    fx: float, exclude: np.ndarray | None = None) -> np.ndarray:
    """[N, H, W] bool depth masks of ``boxes`` (see the module docstring, steps 1-4).

    Args:
        depth_m: [H, W] metres, 0 = invalid.
        boxes: pixel (x0, y0, x1, y1) boxes.
        config: band settings.
        fx: focal length in pixels (box size in metres = pixels * depth / fx).
        exclude: [H, W] bool pixels no mask may take, or None.
    """
    depth = np.asarray(depth_m, np.float32)
    height, width = depth.shape
    masks = np.zeros((len(boxes), height, width), bool)
    valid = np.isfinite(depth) & (depth > 0)
    if exclude is not None:
        valid_for_mask = valid & ~exclude
    else:
        valid_for_mask = valid
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = _pixel_box(box, height, width)
        bw, bh = x1 - x0, y1 - y0
        margin_x = int(round(bw * (1 - config.inner_fraction) / 2))
        margin_y = int(round(bh * (1 - config.inner_fraction) / 2))
        ix0, iy0 = x0 + margin_x, y0 + margin_y
        ix1, iy1 = max(x1 - margin_x, ix0 + 1), max(y1 - margin_y, iy0 + 1)
        inner_valid = valid[iy0:iy1, ix0:ix1]
        if inner_valid.mean() < config.min_inner_valid_fraction or not inner_valid.any():
            continue
        object_depth = float(np.median(depth[iy0:iy1, ix0:ix1][inner_valid]))
        size_m = max(bw, bh) * object_depth / fx
        band = float(np.clip(config.band_size_factor * size_m, config.band_min_m,
                             config.band_max_m))
        crop = depth[y0:y1, x0:x1]
        candidates = valid_for_mask[y0:y1, x0:x1] & (np.abs(crop - object_depth) <= band)
        components, count = ndimage.label(candidates, structure=EIGHT_CONNECTED)
        if count == 0:
            continue
        inner_ids = components[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        votes = np.bincount(inner_ids.ravel(), minlength=count + 1)
        votes[0] = 0
        if votes.max() == 0:
            continue
        masks[i, y0:y1, x0:x1] = components == int(votes.argmax())
    return masks


def grabcut_refine(rgb: np.ndarray, boxes: Sequence[BoxXYXY], seeds: np.ndarray,
                   config: BoxMaskConfig) -> np.ndarray:
    """[N, H, W] bool GrabCut masks seeded by ``seeds`` [N, H, W] (empty seeds stay empty)."""
    import cv2

    height, width = rgb.shape[:2]
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    out = np.zeros_like(seeds, dtype=bool)
    margin = config.grabcut_margin_px
    for i, box in enumerate(boxes):
        seed = seeds[i]
        if not seed.any():
            continue
        x0, y0, x1, y1 = _pixel_box(box, height, width)
        cx0, cy0 = max(x0 - margin, 0), max(y0 - margin, 0)
        cx1, cy1 = min(x1 + margin, width), min(y1 + margin, height)
        crop_seed = seed[cy0:cy1, cx0:cx1].astype(np.uint8)
        labels = np.full(crop_seed.shape, cv2.GC_BGD, np.uint8)
        labels[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0] = cv2.GC_PR_BGD
        labels[crop_seed > 0] = cv2.GC_PR_FGD
        # Only the seed's core is sure: depth and colour are misregistered by a few pixels.
        side = 2 * (min(x1 - x0, y1 - y0) // 16) + 3
        labels[cv2.erode(crop_seed, np.ones((side, side), np.uint8)) > 0] = cv2.GC_FGD
        if not (labels == cv2.GC_BGD).any() or not (labels == cv2.GC_FGD).any():
            out[i] = seed  # nothing certain to learn the colour models from
            continue
        bg_model = np.zeros((1, 65), np.float64)
        fg_model = np.zeros((1, 65), np.float64)
        cv2.grabCut(np.ascontiguousarray(bgr[cy0:cy1, cx0:cx1]), labels, None, bg_model,
                    fg_model, config.grabcut_iterations, cv2.GC_INIT_WITH_MASK)
        fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        out[i, cy0:cy1, cx0:cx1] = fg
        out[i, :, :x0] = out[i, :, x1:] = False  # never outside the box
        out[i, :y0, :] = out[i, y1:, :] = False
    return out


def cut_masks(rgb: np.ndarray, depth_m: np.ndarray | None, boxes: Sequence[BoxXYXY],
              config: BoxMaskConfig, fx: float, exclude: np.ndarray | None = None
              ) -> np.ndarray:
    """[N, H, W] bool masks of ``boxes`` by ``config.method``.

    Raises:
        InvalidInputError: a depth method without a depth image, or mismatched sizes.
    """
    height, width = rgb.shape[:2]
    if config.method == "box" or not len(boxes):
        masks = np.zeros((len(boxes), height, width), bool)
        for i, box in enumerate(boxes):
            x0, y0, x1, y1 = _pixel_box(box, height, width)
            masks[i, y0:y1, x0:x1] = True
        return masks
    if depth_m is None:
        raise InvalidInputError("depth_m", None, f"mask method '{config.method}' needs the "
                                "depth image registered to the colour image", kind="missing_depth")
    if depth_m.shape != (height, width):
        raise InvalidInputError("depth_m", list(depth_m.shape),
                                f"must match the colour image {height}x{width}",
                                kind="size_mismatch")
    masks = depth_box_masks(depth_m, boxes, config, fx, exclude)
    if config.method == "depth_grabcut":
        masks = grabcut_refine(rgb, boxes, masks, config)
    return masks
