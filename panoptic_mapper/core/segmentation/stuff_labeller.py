"""Floor, wall and ceiling from depth, surface normals and gravity (no learned model).

Box detectors have no stuff classes, yet a map needs its floor and walls. With a depth image, the
camera intrinsics and the direction of gravity, they follow from geometry:

* normals from the back-projected depth on a grid of ``grid_step_px`` cells (block means of the
  valid depth, central differences, a 3x3 smoothing), oriented toward the camera;
* heights along "up" (minus gravity): from the camera pose when it is known (heights in the map
  frame, so a floor height found in one frame holds in the next), else relative to the camera
  with gravity assumed along the camera's +y axis (a level camera);
* **floor**: up-facing cells (normal within ``max_tilt_deg`` of up) at the floor height. The
  floor height is the lowest height band holding at least ``min_floor_cells_fraction`` of the
  up-facing cells at least ``min_floor_below_camera_m`` below the camera; with a pose it is
  remembered across frames (a higher estimate, e.g. a table top when the floor is out of view,
  does not replace a lower one);
* **ceiling**: 8-connected regions of down-facing cells at least ``min_ceiling_above_camera_m``
  above the camera, covering at least ``min_ceiling_area_fraction`` of the image (the underside
  of a shelf or a wall cabinet is small);
* **wall**: 8-connected regions of vertical cells (normal within ``max_tilt_deg`` of
  horizontal, no depth jump between neighbours) covering at least ``min_wall_area_fraction`` of
  the image and, when the floor height is known, reaching ``min_wall_top_above_floor_m`` above
  it (so cabinet fronts and chair backs, which stop lower, are not walls).

Cells are then painted back at full resolution on pixels with valid depth.

Owns: :class:`StuffLabellerConfig`, :class:`StuffLabeller`, :func:`depth_normals`.
Does not own: things (``detector_backend``), the label registry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.geometry.camera import back_project
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import CameraIntrinsics

EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass
class StuffLabellerConfig(ConfigBase):
    """Geometric floor / wall / ceiling labelling (YAML ``detector.stuff``)."""

    enabled: bool = True
    """Label floor, walls and ceiling from depth and gravity; false = leave stuff unlabelled."""
    gravity_in_map: tuple[float, ...] = (0.0, 0.0, -1.0)
    """Direction of gravity in the map frame of the poses (REP 103 maps: z up, so 0 0 -1;
    7-Scenes: its gravity-direction.txt)."""
    floor_label: str = "floor"
    """Registry label of the floor; empty = never label floor."""
    wall_label: str = "wall"
    """Registry label of walls; empty = never label walls."""
    ceiling_label: str = "ceiling"
    """Registry label of the ceiling; empty = never label the ceiling."""
    grid_step_px: int = 4
    """Side of the cells on which normals are computed, pixels."""
    max_tilt_deg: float = 20.0
    """Largest angle between a floor/ceiling normal and the vertical, and between a wall normal
    and the horizontal, degrees."""
    max_depth_step: float = 0.05
    """Neighbouring cells whose depths differ by more than this fraction of their depth are
    across an edge (no normal, no wall connection)."""
    floor_band_m: float = 0.06
    """Up-facing cells within this height of the floor height are floor, metres."""
    min_floor_below_camera_m: float = 0.5
    """The floor lies at least this far below the camera, metres."""
    min_floor_cells_fraction: float = 0.1
    """Share of the low up-facing cells a height band needs to be taken as the floor."""
    min_ceiling_above_camera_m: float = 0.3
    """The ceiling lies at least this far above the camera, metres."""
    min_ceiling_area_fraction: float = 0.05
    """Down-facing regions smaller than this fraction of the image are not the ceiling."""
    min_wall_area_fraction: float = 0.02
    """Vertical regions smaller than this fraction of the image are not walls."""
    min_wall_top_above_floor_m: float = 1.4
    """A wall region must reach this height above the floor (when the floor height is known),
    metres; 0 disables the rule."""

    def validate(self) -> None:
        gravity = np.asarray(self.gravity_in_map, float)
        require(gravity.shape == (3,) and np.isfinite(gravity).all()
                and np.linalg.norm(gravity) > 1e-6, "gravity_in_map", self.gravity_in_map,
                "must be a non-zero 3-vector")
        require(1 <= self.grid_step_px <= 32, "grid_step_px", self.grid_step_px,
                "must be in 1..32")
        require(0.0 < self.max_tilt_deg < 45.0, "max_tilt_deg", self.max_tilt_deg,
                "must be in (0, 45) degrees")
        for name in ("max_depth_step", "floor_band_m", "min_floor_cells_fraction"):
            require(getattr(self, name) > 0.0, name, getattr(self, name), "must be > 0")
        for name in ("min_floor_below_camera_m", "min_ceiling_above_camera_m",
                     "min_ceiling_area_fraction", "min_wall_area_fraction",
                     "min_wall_top_above_floor_m"):
            require(getattr(self, name) >= 0.0, name, getattr(self, name), "must be >= 0")


@dataclass
class StuffLabels:
    """The stuff of one frame."""

    label_ids: np.ndarray
    """[H, W] int32 registry label id per pixel (0 = not stuff)."""
    floor_height_m: float | None
    """Floor height used (map frame with a pose, else relative to the camera), or None."""
    ms: float = 0.0
    """Time taken, milliseconds."""


def _block_mean_depth(depth_m: np.ndarray, step: int) -> np.ndarray:
    """[h, w] mean of the valid depths in each step x step block (0 where none is valid)."""
    height, width = depth_m.shape
    h, w = height // step, width // step
    block = depth_m[:h * step, :w * step].reshape(h, step, w, step)
    valid = (block > 0) & np.isfinite(block)
    count = valid.sum(axis=(1, 3))
    total = np.where(valid, block, 0.0).sum(axis=(1, 3))
    return np.where(count > step * step // 2, total / np.maximum(count, 1), 0.0)


def _large_regions(mask: np.ndarray, min_cells: float) -> np.ndarray:
    """The 8-connected regions of ``mask`` with at least ``min_cells`` cells."""
    components, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count == 0:
        return np.zeros(mask.shape, bool)
    keep = np.bincount(components.ravel(), minlength=count + 1) >= min_cells
    keep[0] = False
    return keep[components]


def depth_normals(depth_m: np.ndarray, intrinsics: CameraIntrinsics, step: int,
                  max_depth_step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell points, normals and validity from a depth image.

    Returns:
        points [h, w, 3] camera frame (cell centres), normals [h, w, 3] unit, facing the camera,
        and [h, w] bool where the normal is defined.
    """
    depth = _block_mean_depth(np.asarray(depth_m, np.float64), step)
    h, w = depth.shape
    u = (np.arange(w) + 0.5) * step - 0.5
    v = (np.arange(h) + 0.5) * step - 0.5
    points = back_project(intrinsics, u[None, :], v[:, None], depth)
    du = np.zeros_like(points)
    dv = np.zeros_like(points)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dv[1:-1] = points[2:] - points[:-2]
    inner = depth[1:-1, 1:-1]
    good = inner > 0
    for neighbour in (depth[1:-1, 2:], depth[1:-1, :-2], depth[2:, 1:-1], depth[:-2, 1:-1]):
        good &= (neighbour > 0) & (np.abs(neighbour - inner) <= max_depth_step * inner)
    ok = np.zeros((h, w), bool)
    ok[1:-1, 1:-1] = good
    normals = np.cross(du, dv)
    normals = ndimage.uniform_filter(normals * ok[..., None], size=(3, 3, 1))
    length = np.linalg.norm(normals, axis=-1)
    ok &= length > 1e-9
    normals = normals / np.maximum(length, 1e-12)[..., None]
    facing = np.sum(normals * points, axis=-1) > 0  # pointing away from the camera: flip
    normals[facing] *= -1.0
    return points, normals, ok


class StuffLabeller:
    """Labels floor, walls and ceiling of successive frames (keeps the floor height)."""

    def __init__(self, config: StuffLabellerConfig, registry: LabelRegistry):
        """Resolve the stuff labels in the registry.

        Raises:
            ConfigError: a configured stuff label is not in the registry.
        """
        self.config = config
        self.label_ids: dict[str, int] = {}
        for kind in ("floor", "wall", "ceiling"):
            name = getattr(config, f"{kind}_label")
            if not name:
                continue
            label = registry.find_phrase(name)
            if label is None:
                raise ConfigError(f"detector.stuff.{kind}_label", name,
                                  "not a label of the registry (empty = do not label it)")
            self.label_ids[kind] = label.id
        gravity = np.asarray(config.gravity_in_map, np.float64)
        self._up_map = -gravity / np.linalg.norm(gravity)
        self._floor_memory: float | None = None

    def reset(self) -> None:
        """Forget the remembered floor height (a new sequence)."""
        self._floor_memory = None

    def label(self, depth_m: np.ndarray, intrinsics: CameraIntrinsics,
              T_world_cam: np.ndarray | None = None) -> StuffLabels:  # noqa: N803
        """Stuff labels of one frame (see the module docstring)."""
        import time

        start = time.perf_counter()
        cfg = self.config
        depth_m = np.asarray(depth_m)
        height, width = depth_m.shape
        out = np.zeros((height, width), np.int32)
        step = cfg.grid_step_px
        points, normals, ok = depth_normals(depth_m, intrinsics, step, cfg.max_depth_step)
        if T_world_cam is not None:
            rotation = np.asarray(T_world_cam, np.float64)[:3, :3]
            up_cam = rotation.T @ self._up_map
            camera_height = float(np.asarray(T_world_cam, np.float64)[:3, 3] @ self._up_map)
        else:
            up_cam = np.array([0.0, -1.0, 0.0])
            camera_height = 0.0
        heights = points @ up_cam + camera_height
        cos_up = normals @ up_cam
        horizontal_cos = np.cos(np.radians(cfg.max_tilt_deg))
        vertical_sin = np.sin(np.radians(cfg.max_tilt_deg))
        up_facing = ok & (cos_up >= horizontal_cos)
        down_facing = ok & (cos_up <= -horizontal_cos)
        vertical = ok & (np.abs(cos_up) <= vertical_sin)
        cells = np.zeros(ok.shape, np.int32)

        floor_height = self._floor_height(heights[up_facing], camera_height,
                                          T_world_cam is not None)
        if floor_height is not None and "floor" in self.label_ids:
            cells[up_facing & (np.abs(heights - floor_height) <= cfg.floor_band_m)] = \
                self.label_ids["floor"]
        if "ceiling" in self.label_ids:
            high = down_facing & (heights >= camera_height + cfg.min_ceiling_above_camera_m)
            cells[_large_regions(high, cfg.min_ceiling_area_fraction * ok.size)] = \
                self.label_ids["ceiling"]
        if "wall" in self.label_ids:
            cells[self._walls(vertical, heights, floor_height, ok.size)] = self.label_ids["wall"]

        full = np.repeat(np.repeat(cells, step, axis=0), step, axis=1)
        out[:full.shape[0], :full.shape[1]] = full
        out[~((depth_m > 0) & np.isfinite(depth_m))] = 0
        return StuffLabels(out, floor_height, (time.perf_counter() - start) * 1e3)

    def _floor_height(self, up_heights: np.ndarray, camera_height: float,
                      remember: bool) -> float | None:
        cfg = self.config
        low = up_heights[up_heights <= camera_height - cfg.min_floor_below_camera_m]
        estimate = None
        if low.size:
            bins = np.floor((low - low.min()) / cfg.floor_band_m).astype(int)
            counts = np.bincount(bins)
            dense = np.flatnonzero(counts >= cfg.min_floor_cells_fraction * low.size)
            if dense.size:
                in_band = low[bins == dense[0]]
                neighbours = low[np.abs(low - np.median(in_band)) <= cfg.floor_band_m]
                estimate = float(np.median(neighbours))
        if not remember:
            return estimate
        memory = self._floor_memory
        if estimate is not None:
            if memory is None or estimate < memory - cfg.floor_band_m:
                memory = estimate
            elif abs(estimate - memory) <= cfg.floor_band_m:
                memory = 0.8 * memory + 0.2 * estimate
        self._floor_memory = memory
        return memory

    def _walls(self, vertical: np.ndarray, heights: np.ndarray, floor_height: float | None,
               num_cells: int) -> np.ndarray:
        cfg = self.config
        components, count = ndimage.label(vertical, structure=EIGHT_CONNECTED)
        walls = np.zeros(vertical.shape, bool)
        if count == 0:
            return walls
        ids = components.ravel()
        sizes = np.bincount(ids, minlength=count + 1)
        tops = np.full(count + 1, -np.inf)
        np.maximum.at(tops, ids, heights.ravel())
        keep = sizes >= cfg.min_wall_area_fraction * num_cells
        if floor_height is not None and cfg.min_wall_top_above_floor_m > 0:
            keep &= tops >= floor_height + cfg.min_wall_top_above_floor_m
        keep[0] = False
        return keep[components]
