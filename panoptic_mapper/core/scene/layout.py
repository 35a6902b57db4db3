"""Furniture layout: groups of objects placed in rooms without collisions, objects on others.

Groups (``groups``: a dining set, a desk corner, a storage wall, ...) are placed whole at random
poses, against a wall or free-standing, keeping a spacing to the other groups; inside a group
objects may touch. A central zone of each room and the approach to every door/doorway stay free
so a camera can walk around, and tall objects are kept out of windows. Then the smaller objects
each item asked for are put on its support surfaces (stacks of boxes recursively).

Owns: floor-occupancy bookkeeping, placement on floors and support surfaces.
Does not own: the group templates (``groups``), the shapes (``furniture``), the rooms
(``rooms``), labels/ids (``generator``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.scene.furniture import BuildContext, ObjectModel
from panoptic_mapper.core.scene.groups import (ARRANGEMENTS, CORE_GROUPS, DENSE_FILLERS,
                                               FILLER_GROUPS, TOUCH_GAP_M, Arrangement, Group,
                                               GroupItem, TopRequest, build_group)
from panoptic_mapper.core.scene.meshing import pose_matrix
from panoptic_mapper.core.scene.rooms import Room

__all__ = ["ARRANGEMENTS", "CORE_GROUPS", "FILLER_GROUPS", "TOUCH_GAP_M", "FloorGrid",
           "PlacedObject", "layout_room_furniture", "place_group", "place_tops",
           "reserve_free_zones"]

STACK_OVERHANG_M = 0.012
"""How far a stacked box may reach past the support surface of the box below (that surface is
inset 1 cm from the box's edges, so an identical box fits)."""


@dataclass
class PlacedObject:
    """An object instance in the world."""

    model: ObjectModel
    T_world_object: np.ndarray
    """[4, 4] object frame -> world."""
    room_index: int
    support: int = -1
    """Index (in the placed list) of the object it stands on; -1 = the floor."""
    group: str = ""
    """Name of the group template that placed it."""


class FloorGrid:
    """Occupancy of a room's floor on a square grid (cell centres tested against rectangles)."""

    def __init__(self, room: Room, cell_m: float = 0.02):
        self.room = room
        self.cell_m = cell_m
        self.shape = tuple(int(math.ceil(s / cell_m)) for s in room.size_xy_m)
        self.blocked = np.zeros(self.shape, bool)
        self.reserved = np.zeros(self.shape, bool)
        self.reserved_tall = np.zeros(self.shape, bool)

    def rect_cells(self, center_xy, yaw: float, size_xy, inflate_m: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the cells whose centre lies in an oriented rectangle (clipped to room)."""
        half = np.asarray(size_xy, float) / 2.0 + inflate_m
        c, s = math.cos(yaw), math.sin(yaw)
        extent = np.abs(np.array([[c, -s], [s, c]])) @ half
        lo = np.floor((np.asarray(center_xy) - extent - self.room.min_xy_m) / self.cell_m)
        hi = np.ceil((np.asarray(center_xy) + extent - self.room.min_xy_m) / self.cell_m)
        lo = np.clip(lo.astype(int), 0, self.shape)
        hi = np.clip(hi.astype(int), 0, self.shape)
        ix, iy = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
        px = self.room.min_xy_m[0] + (ix + 0.5) * self.cell_m - center_xy[0]
        py = self.room.min_xy_m[1] + (iy + 0.5) * self.cell_m - center_xy[1]
        inside = (np.abs(c * px + s * py) <= half[0]) & (np.abs(-s * px + c * py) <= half[1])
        return ix[inside], iy[inside]

    def reserve_ellipse(self, center_xy, semi_axes_m) -> None:
        ix, iy = np.indices(self.shape)
        px = self.room.min_xy_m[0] + (ix + 0.5) * self.cell_m - center_xy[0]
        py = self.room.min_xy_m[1] + (iy + 0.5) * self.cell_m - center_xy[1]
        self.reserved |= (px / semi_axes_m[0]) ** 2 + (py / semi_axes_m[1]) ** 2 <= 1.0


def _item_rect(T_world_object: np.ndarray, model: ObjectModel
               ) -> tuple[np.ndarray, float, np.ndarray]:
    yaw = math.atan2(T_world_object[1, 0], T_world_object[0, 0])
    return T_world_object[:2, 3].copy(), yaw, model.size_m[:2]


def _rect_inside_room(room: Room, center, yaw: float, size) -> bool:
    c, s = math.cos(yaw), math.sin(yaw)
    half = np.asarray(size) / 2.0
    corners = np.array([[sx * half[0], sy * half[1]] for sx in (-1, 1) for sy in (-1, 1)])
    world = corners @ np.array([[c, -s], [s, c]]).T + center
    return bool(room.contains_xy(world, -1e-6).all())


def reserve_free_zones(grid: FloorGrid) -> None:
    """Keep the room centre, door/doorway approaches and the zones in front of windows free."""
    room = grid.room
    size = room.size_xy_m
    grid.reserve_ellipse(room.center_xy_m, (max(0.7, 0.22 * size[0]), max(0.7, 0.22 * size[1])))
    for o in room.openings:
        T = room.T_world_wall(o.side)
        depth = 1.0 if o.kind != "window" else 0.6
        center = (T @ np.array([o.center_m, depth / 2, 0.0, 1.0]))[:2]
        yaw = math.atan2(T[1, 0], T[0, 0])
        ix, iy = grid.rect_cells(center, yaw, (o.width_m + 0.3, depth))
        if o.kind == "window":
            grid.reserved_tall[ix, iy] = True
            continue
        grid.reserved[ix, iy] = True
        if o.kind == "doorway":
            _reserve_path(grid, center, room.center_xy_m, width_m=1.0)


def _reserve_path(grid: FloorGrid, a, b, width_m: float) -> None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.linalg.norm(b - a))
    if length < 1e-6:
        return
    yaw = math.atan2(b[1] - a[1], b[0] - a[0])
    ix, iy = grid.rect_cells((a + b) / 2, yaw, (length, width_m))
    grid.reserved[ix, iy] = True


# ---- placement ------------------------------------------------------------------------------
def _centered(group: Group) -> tuple[Group, np.ndarray]:
    """The group shifted so its footprint bounding box is centred on the origin; its size."""
    corners = []
    for item in group.items:
        c, yaw, size = _item_rect(item.T_group_object, item.model)
        cs, sn = math.cos(yaw), math.sin(yaw)
        for sx in (-1, 1):
            for sy in (-1, 1):
                local = np.array([sx * size[0] / 2, sy * size[1] / 2])
                corners.append(c + np.array([[cs, -sn], [sn, cs]]) @ local)
    corners = np.array(corners)
    lo, hi = corners.min(0), corners.max(0)
    shift = pose_matrix((-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, 0.0))
    for item in group.items:
        item.T_group_object = shift @ item.T_group_object
    return group, hi - lo


def place_group(ctx: BuildContext, grid: FloorGrid, group: Group, spacing_m: float,
                attempts: int) -> list[tuple[GroupItem, np.ndarray]] | None:
    """Find a collision-free pose for a group in a room; mark it; return items with world poses."""
    group, size = _centered(group)
    room = grid.room
    for _ in range(attempts):
        if group.against_wall:
            side = str(ctx.rng.choice(["south", "north", "west", "east"]))
            length = room.wall_length_m(side)
            if length < size[0]:
                continue
            u = ctx.u(size[0] / 2, length - size[0] / 2)
            T_world_group = room.T_world_wall(side) @ pose_matrix(
                (u, size[1] / 2 + ctx.u(0.005, 0.03), 0.0), math.pi)
        else:
            radius = 0.5 * float(np.hypot(*size))
            lo, hi = room.min_xy_m + radius, room.max_xy_m - radius
            if np.any(lo >= hi):
                continue
            x, y = ctx.u(lo[0], hi[0]), ctx.u(lo[1], hi[1])
            yaw = 0.5 * math.pi * int(ctx.rng.integers(4)) + math.radians(ctx.u(-12, 12))
            T_world_group = pose_matrix((x, y, 0.0), yaw)
        placed = [(item, T_world_group @ item.T_group_object) for item in group.items]
        if _fits(grid, placed, spacing_m):
            for item, T in placed:
                ix, iy = grid.rect_cells(*_item_rect(T, item.model))
                grid.blocked[ix, iy] = True
            return placed
    return None


def _fits(grid: FloorGrid, placed: list[tuple[GroupItem, np.ndarray]], spacing_m: float) -> bool:
    for item, T in placed:
        center, yaw, size = _item_rect(T, item.model)
        if not _rect_inside_room(grid.room, center, yaw, size):
            return False
        ix, iy = grid.rect_cells(center, yaw, size)
        if grid.reserved[ix, iy].any():
            return False
        if _item_height_m(item) > 0.8 and grid.reserved_tall[ix, iy].any():
            return False
        jx, jy = grid.rect_cells(center, yaw, size, inflate_m=spacing_m)
        if grid.blocked[jx, jy].any():
            return False
    return True


def _item_height_m(item: GroupItem) -> float:
    """Height of a floor item with the boxes stacked on it (a tall stack blocks a window too)."""
    height = float(item.model.size_m[2])
    requests = [r for r in item.tops if r.arrangement == "stack"]
    while requests:
        height += float(requests[0].models[0].size_m[2]) + TOUCH_GAP_M
        requests = requests[0].on_top
    return height


def place_tops(ctx: BuildContext, placed: list[PlacedObject], support_index: int,
               requests: list[TopRequest], style: Arrangement = ARRANGEMENTS["spaced"],
               attempts: int = 30) -> None:
    """Put the requested models on the support surfaces of ``placed[support_index]``; append
    them to ``placed`` (each followed by what was requested on top of it in turn)."""
    support = placed[support_index]
    occupied: dict[int, list[tuple[np.ndarray, float]]] = {}
    for request in requests:
        if request.surface >= len(support.model.supports):
            continue
        surf = support.model.supports[request.surface]
        T_support_surface = pose_matrix((surf.center_xy_m[0], surf.center_xy_m[1],
                                         surf.height_m))
        half = np.asarray(surf.size_xy_m) / 2.0
        circles = occupied.setdefault(request.surface, [])
        models = [m for m in request.models if m.size_m[2] < surf.clearance_m - 0.01]
        if request.arrangement in ("row", "center", "stack"):
            poses = _row_on_surface(ctx, models, half, request,
                                    circles if style.separate_tops else None, attempts)
        elif style.separate_tops:  # lazily: each pose sees the circles of those placed before
            poses = (_random_on_surface(ctx, m, half, circles, attempts) for m in models)
        else:
            poses = [_random_on_surface(ctx, m, half, circles, attempts) for m in models]
        for model, pose in zip(models, poses):
            if pose is None:
                continue
            xy, yaw = pose
            radius = 0.5 * float(np.hypot(*model.size_m[:2]))
            circles.append((np.asarray(xy), radius))
            # a stacked box rests on the tape strip of the box below, not in it
            lift = TOUCH_GAP_M if request.arrangement == "stack" else 0.0
            T = support.T_world_object @ T_support_surface @ pose_matrix((xy[0], xy[1], lift),
                                                                         yaw)
            placed.append(PlacedObject(model, T, support.room_index, support_index,
                                       support.group))
            if request.on_top:
                place_tops(ctx, placed, len(placed) - 1, request.on_top, style, attempts)


def _clear_of(xy: np.ndarray, radius: float, circles: list[tuple[np.ndarray, float]]) -> bool:
    return all(np.linalg.norm(xy - c) >= radius + r + 0.01 for c, r in circles)


def _random_on_surface(ctx: BuildContext, model: ObjectModel, half: np.ndarray,
                       circles: list[tuple[np.ndarray, float]], attempts: int):
    radius = 0.5 * float(np.hypot(*model.size_m[:2]))
    if np.any(half - radius < 0):
        return None
    for _ in range(attempts):
        xy = np.array([ctx.u(-half[0] + radius, half[0] - radius),
                       ctx.u(-half[1] + radius, half[1] - radius)])
        if _clear_of(xy, radius, circles):
            return xy, ctx.u(0.0, 2 * math.pi)
    return None


def _row_on_surface(ctx: BuildContext, models: list[ObjectModel], half: np.ndarray,
                    request: TopRequest, circles: list[tuple[np.ndarray, float]] | None = None,
                    attempts: int = 1):
    """Poses of a row along the surface x at its back edge (``row``), centred (``center``), or
    of one box on top of another (``stack``); fewer than ``models`` when a ``trim`` row is cut.
    With ``circles`` (objects already on the surface) a row is redrawn up to ``attempts`` times
    until it keeps clear of them, else not placed."""
    if not models:
        return []
    if request.arrangement == "stack":
        return [_stack_pose(ctx, m, half) for m in models]
    if request.trim:
        while len(models) > 1 and (sum(float(m.size_m[0]) for m in models)
                                   + request.gap_m * (len(models) - 1) > 2 * half[0]):
            models = models[:-1]
    widths = [float(m.size_m[0]) for m in models]
    span = sum(widths) + request.gap_m * (len(models) - 1)
    depth = max(float(m.size_m[1]) for m in models)
    if span > 2 * half[0] or depth > 2 * half[1]:
        return [None] * len(models)
    radii = [0.5 * float(np.hypot(*m.size_m[:2])) for m in models]
    for _ in range(attempts if circles else 1):
        if request.arrangement == "center":
            x0, y = -span / 2, 0.0
        else:
            x0 = ctx.u(-half[0], half[0] - span)
            y = half[1] - depth / 2 - ctx.u(0.0, max(0.0, min(0.15, half[1] * 2 - depth)))
        poses, x = [], x0
        for w in widths:
            poses.append((np.array([x + w / 2, y]), 0.0))
            x += w + request.gap_m
        if not circles or all(_clear_of(xy, r, circles) for (xy, _), r in zip(poses, radii)):
            return poses
    return [None] * len(models)


def _stack_pose(ctx: BuildContext, model: ObjectModel, half: np.ndarray):
    """A box centred on the box below (shifted at random when smaller), or None if too large."""
    over = np.asarray(model.size_m[:2], float) / 2.0 - half
    if np.any(over > STACK_OVERHANG_M):
        return None
    slack = np.maximum(0.0, -over)
    return np.array([ctx.u(-slack[0], slack[0]), ctx.u(-slack[1], slack[1])]), 0.0


def layout_room_furniture(ctx: BuildContext, rooms: list[Room], group_names: list[list[str]],
                          spacing_m: float, attempts: int, arrangement: str = "spaced"
                          ) -> list[PlacedObject]:
    """Place the named groups in each room (those that do not fit are skipped) and their tops.

    Args:
        group_names: per room, group template names in placement order.
        spacing_m: free gap kept between groups (scaled by the arrangement's ``spacing_scale``).
        attempts: random poses tried per group before it is skipped.
        arrangement: a key of :data:`ARRANGEMENTS`; ``dense`` also tries
            ``extra_groups`` groups from :data:`DENSE_FILLERS` per room after the named ones.
    """
    style = ARRANGEMENTS[arrangement]
    spacing_m = spacing_m * style.spacing_scale
    placed: list[PlacedObject] = []
    for room, names in zip(rooms, group_names):
        grid = FloorGrid(room)
        reserve_free_zones(grid)
        extra = [str(ctx.rng.choice(DENSE_FILLERS)) for _ in range(style.extra_groups)]
        for name in list(names) + extra:
            group = build_group(ctx, name, style)
            result = place_group(ctx, grid, group, spacing_m, attempts)
            if result is None:
                continue
            for item, T in result:
                placed.append(PlacedObject(item.model, T, room.index, -1, group.name))
                place_tops(ctx, placed, len(placed) - 1, item.tops, style)
    return placed
