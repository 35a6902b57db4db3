"""Hand-held-like camera trajectories through synthetic scenes.

The camera walks a loop around the free centre of each room (looking outwards, towards the
furniture along the walls, and drawn towards nearby objects), passes through the doorways from
room to room, and keeps going (around the loop again, or back through the rooms) until the
sequence is long enough, so places are revisited. Paths are planned on a free-space grid that
keeps ``clearance_m`` from walls and furniture, then smoothed; time is assigned so that neither
the linear speed nor the yaw/pitch rates exceed their limits.

Conventions: world +z up, floor at z = 0; camera poses ``T_world_cam`` with OpenCV optical axes
(x right, y down, z forward).

Owns: :class:`TrajectoryConfig`, :class:`CameraTrajectory`, :func:`generate_trajectory`,
:func:`camera_rotation` and the free-space grid of a scene.
Does not own: the scene (``generator``) or rendering (``renderer``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.scene.generator import SyntheticScene
from panoptic_mapper.core.scene.rooms import WALL_THICKNESS_M
from panoptic_mapper.core.types import NO_INSTANCE_ID

GRID_CELL_M = 0.05
"""Resolution of the free-space grid used for path planning."""
PATH_STEP_M = 0.02
"""Spacing of the planned path samples before time parameterisation."""
DOORWAY_PITCH_RAD = math.radians(-12.0)
"""Pitch while walking through a doorway (looking ahead into the next room)."""


@dataclass
class TrajectoryConfig(ConfigBase):
    """Parameters of a generated camera trajectory."""

    num_frames: int = 300
    """Number of poses."""
    rate_hz: float = 30.0
    """Frame rate; stamps are ``start_stamp_ns + i / rate_hz``."""
    start_stamp_ns: int = 1_000_000_000
    """Stamp of the first frame, nanoseconds."""
    speed_m_s: float = 0.35
    """Walking speed where rotation does not force it lower, m/s."""
    max_speed_m_s: float = 0.5
    """Upper bound of the linear speed, m/s (speed_m_s is clipped to it)."""
    max_yaw_rate_deg_s: float = 45.0
    """Upper bound of the yaw rate, degrees per second."""
    max_pitch_rate_deg_s: float = 30.0
    """Upper bound of the pitch rate, degrees per second."""
    eye_height_m: tuple[float, float] = (1.2, 1.6)
    """Range of the camera height above the floor (varies slowly along the path), metres."""
    pitch_deg: tuple[float, float] = (-40.0, -5.0)
    """Allowed pitch range, degrees (negative looks down)."""
    roll_amplitude_deg: float = 2.0
    """Amplitude of the slow hand-held roll, degrees."""
    clearance_m: float = 0.45
    """Least horizontal distance from the camera to walls and furniture footprints, metres."""
    laps: float = 1.3
    """Path length / length of one tour (>1: the start of the tour is visited again)."""
    sweep_deg: float = 25.0
    """Amplitude of the slow left-right sweep of the view around its target, degrees."""
    seed: int = 0
    """Seed of the random parts (loop start, sweep phase, height phase)."""

    def validate(self) -> None:
        require(self.num_frames >= 1, "num_frames", self.num_frames, "must be >= 1")
        require(self.rate_hz > 0, "rate_hz", self.rate_hz, "must be > 0")
        require(self.start_stamp_ns >= 0, "start_stamp_ns", self.start_stamp_ns, "must be >= 0")
        require(0 < self.speed_m_s, "speed_m_s", self.speed_m_s, "must be > 0")
        require(self.max_speed_m_s > 0, "max_speed_m_s", self.max_speed_m_s, "must be > 0")
        require(self.max_yaw_rate_deg_s > 0, "max_yaw_rate_deg_s", self.max_yaw_rate_deg_s,
                "must be > 0")
        require(self.max_pitch_rate_deg_s > 0, "max_pitch_rate_deg_s",
                self.max_pitch_rate_deg_s, "must be > 0")
        lo, hi = self.eye_height_m
        require(0.2 <= lo <= hi, "eye_height_m", self.eye_height_m, "must be 0.2 <= low <= high")
        lo, hi = self.pitch_deg
        require(-89 < lo <= hi < 89, "pitch_deg", self.pitch_deg, "must be -89 < low <= high < 89")
        require(self.clearance_m >= 0.2, "clearance_m", self.clearance_m,
                "must be >= 0.2 m (the camera must stay out of objects)")
        require(self.laps >= 1.0, "laps", self.laps, "must be >= 1")


@dataclass
class CameraTrajectory:
    """Camera poses with stamps."""

    T_world_cam: np.ndarray
    """[N, 4, 4] float64 camera (OpenCV optical axes) -> world."""
    stamps_ns: np.ndarray
    """[N] int64 nanoseconds, strictly increasing."""

    def __len__(self) -> int:
        return len(self.stamps_ns)

    @property
    def positions_m(self) -> np.ndarray:
        """[N, 3] camera centres."""
        return self.T_world_cam[:, :3, 3]


def camera_rotation(yaw_rad: np.ndarray, pitch_rad: np.ndarray, roll_rad: np.ndarray
                    ) -> np.ndarray:
    """[N, 3, 3] ``R_world_cam`` of an OpenCV camera looking along azimuth ``yaw`` (from +x
    towards +y), tilted up by ``pitch`` and rolled clockwise by ``roll`` about its optical axis."""
    yaw, pitch, roll = (np.asarray(a, float).reshape(-1) for a in (yaw_rad, pitch_rad, roll_rad))
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    forward = np.stack([cp * cy, cp * sy, sp], -1)
    right = np.stack([sy, -cy, np.zeros_like(yaw)], -1)
    down = np.cross(forward, right)
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    right, down = cr * right + sr * down, -sr * right + cr * down
    return np.stack([right, down, forward], -1)


class FreeSpace:
    """Where the camera may be: a grid over the scene keeping clearance to walls and furniture."""

    def __init__(self, scene: SyntheticScene, clearance_m: float, cell_m: float = GRID_CELL_M):
        lo = np.min([r.min_xy_m for r in scene.rooms], axis=0) - 0.5
        hi = np.max([r.max_xy_m for r in scene.rooms], axis=0) + 0.5
        self.origin = lo
        self.cell_m = cell_m
        self.shape = tuple(int(v) for v in np.ceil((hi - lo) / cell_m))
        centers = self.cell_centers()
        free = np.zeros(self.shape, bool)
        for room in scene.rooms:
            free |= room.contains_xy(centers.reshape(-1, 2), clearance_m).reshape(self.shape)
            for o in room.openings:
                if o.kind == "doorway" and o.side == "east":
                    y = room.min_xy_m[1] + o.center_m
                    x = room.max_xy_m[0] + WALL_THICKNESS_M / 2
                    half = np.array([clearance_m + 0.6, o.width_m / 2 - 0.2])
                    free |= np.all(np.abs(centers - (x, y)) <= half, axis=-1)
        for inst in scene.instances:
            if inst.support_id != NO_INSTANCE_ID:
                continue
            offset = centers.reshape(-1, 2) - inst.bbox.center_m[:2]
            local = offset @ inst.bbox.R_world_box[:2, :2]
            half = inst.bbox.size_m[:2] / 2 + clearance_m
            free &= ~np.all(np.abs(local) <= half, axis=1).reshape(self.shape)
        self.free = free

    def cell_centers(self) -> np.ndarray:
        """[X, Y, 2] world xy of the cell centres."""
        ix, iy = np.indices(self.shape)
        return self.origin + (np.stack([ix, iy], -1) + 0.5) * self.cell_m

    def cell_of(self, xy_m: np.ndarray) -> np.ndarray:
        """[N, 2] integer cell indices (clipped to the grid) of points [N, 2]."""
        idx = np.floor((np.asarray(xy_m).reshape(-1, 2) - self.origin) / self.cell_m).astype(int)
        return np.clip(idx, 0, np.asarray(self.shape) - 1)

    def is_free(self, xy_m: np.ndarray) -> np.ndarray:
        """[N] bool: which points [N, 2] lie in free cells."""
        idx = self.cell_of(xy_m)
        return self.free[idx[:, 0], idx[:, 1]]

    def nearest_free(self, xy_m: np.ndarray, room_mask: np.ndarray | None = None) -> np.ndarray:
        """The free cell centre closest to a point (optionally only cells in ``room_mask``)."""
        mask = self.free if room_mask is None else self.free & room_mask
        cells = np.argwhere(mask)
        if len(cells) == 0:
            raise ConfigError("trajectory.clearance_m", "", "no free space for the camera")
        centers = self.origin + (cells + 0.5) * self.cell_m
        return centers[np.argmin(np.linalg.norm(centers - xy_m, axis=1))]


class _Planner:
    """Shortest paths on the free-space grid (8-connected, Euclidean step costs)."""

    def __init__(self, space: FreeSpace):
        self.space = space
        nx, ny = space.shape
        ids = np.arange(nx * ny).reshape(nx, ny)
        rows, cols, weights = [], [], []
        for dx, dy in ((1, 0), (0, 1), (1, 1), (1, -1)):
            a = space.free[0:nx - dx, max(0, -dy):ny - max(0, dy)]
            b = space.free[dx:nx, max(0, dy):ny - max(0, -dy)]
            ia = ids[0:nx - dx, max(0, -dy):ny - max(0, dy)]
            ib = ids[dx:nx, max(0, dy):ny - max(0, -dy)]
            ok = a & b
            rows.append(ia[ok])
            cols.append(ib[ok])
            weights.append(np.full(int(ok.sum()), math.hypot(dx, dy) * space.cell_m))
        r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
        self.graph = coo_matrix((np.concatenate([w, w]), (np.concatenate([r, c]),
                                                          np.concatenate([c, r]))),
                                shape=(nx * ny, nx * ny)).tocsr()

    def path(self, a_xy: np.ndarray, b_xy: np.ndarray) -> np.ndarray:
        """[K, 2] cell-centre path from a to b (both must be free)."""
        ny = self.space.shape[1]
        ca, cb = self.space.cell_of(a_xy)[0], self.space.cell_of(b_xy)[0]
        src, dst = int(ca[0] * ny + ca[1]), int(cb[0] * ny + cb[1])
        _, pred = dijkstra(self.graph, indices=src, return_predecessors=True)
        if src != dst and pred[dst] < 0:
            raise ConfigError("trajectory", (a_xy.tolist(), b_xy.tolist()),
                              "no collision-free path between two waypoints")
        nodes = [dst]
        while nodes[-1] != src:
            nodes.append(int(pred[nodes[-1]]))
        nodes = np.array(nodes[::-1])
        cells = np.stack([nodes // ny, nodes % ny], 1)
        return self.space.origin + (cells + 0.5) * self.space.cell_m


def generate_trajectory(scene: SyntheticScene, config: TrajectoryConfig | None = None
                        ) -> CameraTrajectory:
    """A trajectory through all rooms of ``scene`` (see module docstring).

    Raises:
        ConfigError: the rooms leave no free space for the camera with the given clearance.
    """
    config = config or TrajectoryConfig()
    rng = np.random.default_rng([config.seed, 0x7A11])
    space = FreeSpace(scene, config.clearance_m)
    planner = _Planner(space)
    speed = min(config.speed_m_s, config.max_speed_m_s)
    total_length = speed * config.num_frames / config.rate_hz
    tour = _tour(scene, space, planner, rng, total_length / config.laps)
    path = _extend(tour, planner, total_length * 1.05 + 1.0)
    path = _smooth(_resample(path, PATH_STEP_M), space)
    yaw, pitch = _view_angles(scene, path, rng, config)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    sigma = max(1.0, 0.4 / PATH_STEP_M)
    yaw = ndimage.gaussian_filter1d(np.unwrap(yaw), sigma, mode="nearest")
    pitch = ndimage.gaussian_filter1d(pitch, sigma, mode="nearest")
    lo, hi = config.eye_height_m
    height = (lo + hi) / 2 + (hi - lo) / 2 * _wave(rng, s, 7.0)
    roll = np.radians(config.roll_amplitude_deg) * _wave(rng, s, 5.0)
    dt = np.maximum.reduce([np.diff(s) / speed,
                            np.abs(np.diff(yaw)) / math.radians(config.max_yaw_rate_deg_s),
                            np.abs(np.diff(pitch)) / math.radians(config.max_pitch_rate_deg_s),
                            np.full(len(s) - 1, 1e-6)])
    t = np.concatenate([[0.0], np.cumsum(dt)])
    t_frames = np.arange(config.num_frames) / config.rate_hz
    if t[-1] < t_frames[-1]:
        raise ConfigError("trajectory.clearance_m", config.clearance_m,
                          f"the free floor only allows a {s[-1]:.1f} m loop, too short for "
                          f"{config.num_frames} frames: use larger or emptier rooms or a "
                          f"smaller clearance")
    xy = np.stack([np.interp(t_frames, t, path[:, 0]), np.interp(t_frames, t, path[:, 1])], 1)
    z = np.interp(t_frames, t, height)
    R = camera_rotation(np.interp(t_frames, t, yaw), np.interp(t_frames, t, pitch),
                        np.interp(t_frames, t, roll))
    T = np.tile(np.eye(4), (config.num_frames, 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = np.column_stack([xy, z])
    stamps = config.start_stamp_ns + np.round(t_frames * 1e9).astype(np.int64)
    return CameraTrajectory(T, stamps)


def _room_masks(scene: SyntheticScene, space: FreeSpace) -> list[np.ndarray]:
    centers = space.cell_centers().reshape(-1, 2)
    return [room.contains_xy(centers).reshape(space.shape) for room in scene.rooms]


def _tour(scene: SyntheticScene, space: FreeSpace, planner: _Planner, rng: np.random.Generator,
          loop_length_m: float) -> np.ndarray:
    """[K, 2] path: a loop in each room, rooms visited in order through their doorways."""
    masks = _room_masks(scene, space)
    per_room = loop_length_m / len(scene.rooms)
    waypoints: list[np.ndarray] = []
    for room, mask in zip(scene.rooms, masks):
        size = room.size_xy_m
        # Perimeter of an ellipse with semi-axes (k*a, k*b) is about k * pi * (a + b) (Ramanujan
        # is not needed at this accuracy); k is chosen to match the wanted loop length.
        a, b = 0.5 * size[0] - 1.0, 0.5 * size[1] - 1.0
        k = np.clip(per_room / (math.pi * max(a + b, 1e-3)), 0.15, 1.0)
        start = rng.uniform(0, 2 * math.pi)
        angles = start + np.linspace(0, 2 * math.pi, 13)
        for ang in angles:
            p = room.center_xy_m + k * np.array([a * math.cos(ang), b * math.sin(ang)])
            waypoints.append(space.nearest_free(p, mask))
    pieces = [waypoints[0][None]]
    for p, q in zip(waypoints, waypoints[1:]):
        pieces.append(planner.path(p, q)[1:])
    return np.concatenate(pieces)


def _extend(tour: np.ndarray, planner: _Planner, length_m: float) -> np.ndarray:
    """Repeat the tour (closing it with a planned return leg) until it is ``length_m`` long."""
    back = planner.path(tour[-1], tour[0])
    loop = np.concatenate([tour, back[1:]])
    loop_len = _length(loop)
    if loop_len < 1e-6:
        raise ConfigError("trajectory.clearance_m", loop_len,
                          "degenerate tour (no free floor to move on)")
    reps = int(math.ceil(length_m / loop_len))
    return np.concatenate([loop] + [loop[1:]] * reps)


def _length(path: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


def _resample(path: np.ndarray, step_m: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    path = path[keep]
    s = np.concatenate([[0.0], np.cumsum(seg[seg > 1e-9])])
    samples = np.arange(0.0, s[-1], step_m)
    return np.stack([np.interp(samples, s, path[:, 0]), np.interp(samples, s, path[:, 1])], 1)


def _smooth(path: np.ndarray, space: FreeSpace, window_m: float = 0.6,
            iterations: int = 4) -> np.ndarray:
    """Moving-average smoothing; a point only moves where its new position is still free."""
    half = max(1, int(window_m / PATH_STEP_M / 2))
    kernel = np.ones(2 * half + 1) / (2 * half + 1)
    for _ in range(iterations):
        padded = np.pad(path, ((half, half), (0, 0)), mode="edge")
        smooth = np.stack([np.convolve(padded[:, d], kernel, mode="valid") for d in (0, 1)], 1)
        ok = space.is_free(smooth)
        path = np.where(ok[:, None], smooth, path)
    return _resample(path, PATH_STEP_M)


def _view_angles(scene: SyntheticScene, path: np.ndarray, rng: np.random.Generator,
                 config: TrajectoryConfig) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (radians) per path sample: outward from the room centre, drawn towards
    nearby objects, with a slow sweep; along the motion direction while passing a doorway."""
    n = len(path)
    yaw = np.zeros(n)
    pitch = np.zeros(n)
    room_of = np.full(n, -1)
    for room in scene.rooms:
        room_of[room.contains_xy(path)] = room.index
    motion = np.gradient(path, axis=0)
    motion_yaw = np.arctan2(motion[:, 1], motion[:, 0])
    s = np.arange(n) * PATH_STEP_M
    sweep = np.radians(config.sweep_deg) * _wave(rng, s, 3.0)
    target_z = 0.75 + 0.3 * _wave(rng, s, 4.3)
    eye = float(np.mean(config.eye_height_m))
    centers = np.array([inst.bbox.center_m for inst in scene.instances]).reshape(-1, 3)
    sizes = np.array([float(np.prod(inst.bbox.size_m)) for inst in scene.instances])
    rooms_of_inst = np.array([inst.room_index for inst in scene.instances])
    for i in range(n):
        r = room_of[i]
        if r < 0:
            yaw[i], pitch[i] = motion_yaw[i], DOORWAY_PITCH_RAD
            continue
        room = scene.rooms[r]
        out = path[i] - room.center_xy_m
        out_yaw = math.atan2(out[1], out[0]) if np.linalg.norm(out) > 0.05 else motion_yaw[i]
        vec = np.array([math.cos(out_yaw), math.sin(out_yaw)])
        sel = rooms_of_inst == r
        if sel.any():
            rel = centers[sel, :2] - path[i]
            dist = np.linalg.norm(rel, axis=1) + 1e-6
            dirs = rel / dist[:, None]
            ang = np.arccos(np.clip(dirs @ vec, -1.0, 1.0))
            weight = (np.exp(-(ang / math.radians(35.0)) ** 2) * np.exp(-dist / 2.5)
                      * np.sqrt(np.clip(sizes[sel], 1e-3, None)))
            vec = vec + 2.0 * (weight[:, None] * dirs).sum(0)
        yaw[i] = math.atan2(vec[1], vec[0]) + sweep[i]
        wall_dist = _distance_to_walls(room, path[i], yaw[i])
        pitch[i] = math.atan2(target_z[i] - eye, max(wall_dist, 0.5))
    for room in scene.rooms:
        for o in room.openings:
            if o.kind != "doorway":
                continue
            T = room.T_world_wall(o.side)
            door_xy = (T @ np.array([o.center_m, 0.0, 0.0, 1.0]))[:2]
            near = np.linalg.norm(path - door_xy, axis=1)
            blend = np.clip((2.0 - near) / 1.0, 0.0, 1.0)
            yaw = _blend_angles(yaw, motion_yaw, blend)
            pitch = pitch + blend * (DOORWAY_PITCH_RAD - pitch)
    lo, hi = np.radians(config.pitch_deg)
    return yaw, np.clip(pitch, lo, hi)


def _wave(rng: np.random.Generator, s: np.ndarray, period_m: float) -> np.ndarray:
    """A sine of the arc length ``s`` with the given period and a random phase."""
    return np.sin(2 * math.pi * s / period_m + rng.uniform(0, 2 * math.pi))


def _blend_angles(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    diff = np.angle(np.exp(1j * (b - a)))
    return a + w * diff


def _distance_to_walls(room, xy: np.ndarray, yaw: float) -> float:
    """Distance from ``xy`` along azimuth ``yaw`` to the room's walls."""
    d = np.array([math.cos(yaw), math.sin(yaw)])
    best = math.inf
    for axis in (0, 1):
        if abs(d[axis]) < 1e-9:
            continue
        bound = room.max_xy_m[axis] if d[axis] > 0 else room.min_xy_m[axis]
        best = min(best, (bound - xy[axis]) / d[axis])
    return float(best)
