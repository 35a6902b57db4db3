"""Furniture layout: groups of objects placed in rooms without collisions, objects on others.

Objects come in *groups* that real rooms have (a dining set, a desk corner, a storage wall, a
lounge, a bed with nightstands, a pile of boxes, single items). Inside a group objects may touch
each other on purpose, and same-class objects stand side by side (identical dining chairs, two
monitors, a row of equal cabinets): the hard cases for instance segmentation. Between groups a
spacing is kept. A central zone of each room and the approach to every door/doorway stay free so a
camera can walk around, and tall objects are kept out of windows.

Owns: group templates, floor-occupancy bookkeeping, placement on floors and support surfaces.
Does not own: the shapes (``furniture``), the rooms (``rooms``), labels/ids (``generator``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from panoptic_mapper.core.scene.furniture import BuildContext, ObjectModel, build_box
from panoptic_mapper.core.scene import furniture as fb
from panoptic_mapper.core.scene.meshing import pose_matrix
from panoptic_mapper.core.scene.rooms import Room

TOUCH_GAP_M = 0.002
"""Gap between objects placed "touching" (avoids coincident faces)."""
CORE_GROUPS = ("desk", "storage", "lounge", "dining", "bedroom")
"""Groups placed first (between them they cover every thing class)."""
FILLER_GROUPS = ("boxes", "plant", "bin", "lamp", "box", "chair", "storage", "desk")
"""Groups added afterwards while there is room."""


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


@dataclass
class _TopRequest:
    """Objects to put on a support surface of a group item."""

    models: list[ObjectModel]
    surface: int = 0
    arrangement: str = "random"
    """``random`` (free positions and yaw), ``row`` (touching/close row along the support's x,
    at its back edge, facing front) or ``center``."""
    gap_m: float = TOUCH_GAP_M


@dataclass
class _GroupItem:
    model: ObjectModel
    T_group_object: np.ndarray
    tops: list[_TopRequest] = field(default_factory=list)


@dataclass
class _Group:
    name: str
    items: list[_GroupItem]
    against_wall: bool


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


# ---- group templates -----------------------------------------------------------------------
def _gap(ctx: BuildContext, p_touch: float, low: float, high: float) -> float:
    return TOUCH_GAP_M if ctx.rng.random() < p_touch else ctx.u(low, high)


def _mugs(ctx: BuildContext, max_count: int) -> list[_TopRequest]:
    n = int(ctx.rng.integers(1, max_count + 1))
    if n >= 2 and ctx.rng.random() < 0.5:
        mug = fb.build_mug(ctx)
        return [_TopRequest([mug, mug], arrangement="row", gap_m=_gap(ctx, 0.7, 0.01, 0.05))]
    return [_TopRequest([fb.build_mug(ctx) for _ in range(n)])]


def group_dining(ctx: BuildContext) -> _Group:
    """A table with identical chairs around it, mugs (and maybe a small plant) on top."""
    table = fb.build_table(ctx, "dining")
    tops = _mugs(ctx, 3)
    if ctx.rng.random() < 0.3:
        tops.append(_TopRequest([fb.build_plant(ctx, small=True)]))
    items = [_GroupItem(table, np.eye(4), tops)]
    chair = fb.build_chair(ctx)
    wc, dc = chair.size_m[:2]
    if table.variant == "round":
        r = table.size_m[0] / 2
        n = int(ctx.rng.integers(2, 5))
        a0 = ctx.u(0.0, 2 * math.pi)
        for k in range(n):
            a = a0 + 2 * math.pi * k / n
            dist = r + dc / 2 + ctx.u(0.0, 0.12)
            items.append(_GroupItem(chair, pose_matrix((dist * math.cos(a), dist * math.sin(a), 0),
                                                       a - math.pi / 2)))
        return _Group("dining", items, against_wall=False)
    w, d = table.size_m[:2]
    for side in (-1, 1):
        k_max = max(1, int((w + 0.1 + TOUCH_GAP_M) // (wc + TOUCH_GAP_M)))
        k = int(ctx.rng.integers(1, min(3, k_max) + 1))
        gap = _gap(ctx, 0.35, 0.03, 0.25)
        gap = min(gap, max(TOUCH_GAP_M, (w + 0.1 - k * wc) / max(1, k - 1)))
        span = k * wc + (k - 1) * gap
        y = side * (d / 2 + dc / 2 + ctx.u(0.0, 0.12))
        for i in range(k):
            x = -span / 2 + wc / 2 + i * (wc + gap)
            items.append(_GroupItem(chair, pose_matrix((x, y, 0), 0.0 if side > 0 else math.pi)))
    if ctx.rng.random() < 0.3:
        sx = 1 if ctx.rng.random() < 0.5 else -1
        x = sx * (w / 2 + dc / 2 + ctx.u(0.0, 0.12))
        items.append(_GroupItem(chair, pose_matrix((x, 0, 0), -sx * math.pi / 2)))
    return _Group("dining", items, against_wall=False)


def group_desk(ctx: BuildContext) -> _Group:
    """A desk at the wall with one or two monitors, a desk lamp and a mug; chair; maybe a bin."""
    desk = fb.build_desk(ctx)
    wd, dd = desk.size_m[:2]
    monitor = fb.build_monitor(ctx)
    n_mon = 2 if (ctx.rng.random() < 0.45 and 2 * monitor.size_m[0] < wd - 0.1) else 1
    tops = [_TopRequest([monitor] * n_mon, arrangement="row", gap_m=_gap(ctx, 0.6, 0.02, 0.08))]
    if ctx.rng.random() < 0.7:
        tops.append(_TopRequest([fb.build_lamp(ctx, desk=True)]))
    if ctx.rng.random() < 0.8:
        tops += _mugs(ctx, 2)
    items = [_GroupItem(desk, np.eye(4), tops)]
    chair = fb.build_chair(ctx)
    items.append(_GroupItem(chair, pose_matrix((ctx.u(-0.1, 0.1), -(dd / 2 + chair.size_m[1] / 2
                                                                    + ctx.u(0.02, 0.2)), 0),
                                               math.pi + ctx.u(-0.3, 0.3))))
    if ctx.rng.random() < 0.75:
        bin_ = fb.build_bin(ctx)
        side = 1 if ctx.rng.random() < 0.5 else -1
        x = side * (wd / 2 + bin_.size_m[0] / 2 + _gap(ctx, 0.5, 0.03, 0.15))
        items.append(_GroupItem(bin_, pose_matrix((x, dd / 2 - bin_.size_m[1] / 2, 0))))
    return _Group("desk", items, against_wall=True)


def _row(ctx: BuildContext, models: list[ObjectModel], p_touch: float, low: float, high: float
         ) -> list[_GroupItem]:
    """Models side by side along x, backs aligned at the group's back (+y)."""
    gaps = [_gap(ctx, p_touch, low, high) for _ in models[1:]]
    span = sum(float(m.size_m[0]) for m in models) + sum(gaps)
    depth = max(float(m.size_m[1]) for m in models)
    items, x = [], -span / 2
    for i, m in enumerate(models):
        items.append(_GroupItem(m, pose_matrix((x + m.size_m[0] / 2, depth / 2 - m.size_m[1] / 2,
                                                0))))
        x += float(m.size_m[0]) + (gaps[i] if i < len(gaps) else 0.0)
    return items


def group_storage(ctx: BuildContext) -> _Group:
    """Two or three cabinets/shelves side by side (often identical and touching), with boxes,
    a plant or a lamp on them."""
    n = int(ctx.rng.integers(2, 4))
    models: list[ObjectModel] = []
    if ctx.rng.random() < 0.5:
        kind = str(ctx.rng.choice(["cabinet", "shelf"]))
        unit = fb.BUILDERS[kind](ctx)
        models = [unit] * n
    else:
        models = [fb.BUILDERS[str(ctx.rng.choice(["cabinet", "shelf"]))](ctx) for _ in range(n)]
    items = _row(ctx, models, 0.6, 0.03, 0.2)
    for item in items:
        model = item.model
        if model.label == "cabinet" and model.size_m[2] < 1.4 and ctx.rng.random() < 0.8:
            choice = ctx.rng.random()
            top = (build_box(ctx, small=True) if choice < 0.4 else
                   fb.build_plant(ctx, small=True) if choice < 0.7 else
                   fb.build_lamp(ctx, desk=True))
            item.tops.append(_TopRequest([top]))
        elif model.label == "shelf":
            for s in range(len(model.supports) - 1):
                if ctx.rng.random() < 0.5:
                    count = int(ctx.rng.integers(1, 3))
                    boxes = [build_box(ctx, small=True) for _ in range(count)]
                    item.tops.append(_TopRequest(boxes, surface=s, arrangement="row",
                                                 gap_m=_gap(ctx, 0.5, 0.01, 0.1)))
    return _Group("storage", items, against_wall=True)


def group_lounge(ctx: BuildContext) -> _Group:
    """A sofa at the wall, a coffee table in front, a floor lamp and maybe a plant beside it."""
    sofa = fb.build_sofa(ctx)
    ws, ds = sofa.size_m[:2]
    table = fb.build_table(ctx, "coffee")
    tops = _mugs(ctx, 2)
    if ctx.rng.random() < 0.3:
        tops.append(_TopRequest([build_box(ctx, small=True)]))
    items = [_GroupItem(sofa, np.eye(4)),
             _GroupItem(table, pose_matrix((ctx.u(-0.1, 0.1), -(ds / 2 + ctx.u(0.3, 0.45)
                                                                + table.size_m[1] / 2), 0)), tops)]
    sides = [-1, 1]
    ctx.rng.shuffle(sides)
    if ctx.rng.random() < 0.75:
        lamp = fb.build_lamp(ctx)
        x = sides[0] * (ws / 2 + lamp.size_m[0] / 2 + _gap(ctx, 0.3, 0.03, 0.2))
        items.append(_GroupItem(lamp, pose_matrix((x, ds / 2 - lamp.size_m[1] / 2, 0))))
    if ctx.rng.random() < 0.5:
        plant = fb.build_plant(ctx)
        x = sides[1] * (ws / 2 + plant.size_m[0] / 2 + ctx.u(0.02, 0.2))
        items.append(_GroupItem(plant, pose_matrix((x, ds / 2 - plant.size_m[1] / 2, 0))))
    return _Group("lounge", items, against_wall=True)


def group_bedroom(ctx: BuildContext) -> _Group:
    """A bed with its head at the wall and one or two nightstands (with lamps) beside it."""
    bed = fb.build_bed(ctx)
    wb, lb = bed.size_m[:2]
    items = [_GroupItem(bed, np.eye(4))]
    nightstand = fb.build_cabinet(ctx, nightstand=True)
    sides = [-1, 1] if ctx.rng.random() < 0.5 else [int(ctx.rng.choice([-1, 1]))]
    for side in sides:
        x = side * (wb / 2 + nightstand.size_m[0] / 2 + _gap(ctx, 0.5, 0.02, 0.1))
        tops = [_TopRequest([fb.build_lamp(ctx, desk=True)])] if ctx.rng.random() < 0.8 else []
        if ctx.rng.random() < 0.3:
            tops += _mugs(ctx, 1)
        items.append(_GroupItem(nightstand,
                                pose_matrix((x, lb / 2 - nightstand.size_m[1] / 2, 0)), tops))
    return _Group("bedroom", items, against_wall=True)


def group_boxes(ctx: BuildContext) -> _Group:
    """Two to four boxes in a row, mostly touching, some with another box on top."""
    boxes = [build_box(ctx) for _ in range(int(ctx.rng.integers(2, 5)))]
    items = _row(ctx, boxes, 0.65, 0.02, 0.1)
    for item in items:
        if ctx.rng.random() < 0.35:
            item.tops.append(_TopRequest([build_box(ctx, small=True)], arrangement="center"))
    return _Group("boxes", items, against_wall=True)


def group_single(ctx: BuildContext, kind: str) -> _Group:
    """One free-standing object (plant, bin, floor lamp, box or chair)."""
    builders = {"plant": lambda: fb.build_plant(ctx), "bin": lambda: fb.build_bin(ctx),
                "lamp": lambda: fb.build_lamp(ctx), "box": lambda: build_box(ctx),
                "chair": lambda: fb.build_chair(ctx)}
    model = builders[kind]()
    return _Group(kind, [_GroupItem(model, np.eye(4))], against_wall=ctx.rng.random() < 0.7)


def build_group(ctx: BuildContext, name: str) -> _Group:
    """A group by template name (:data:`CORE_GROUPS`, :data:`FILLER_GROUPS`)."""
    templates = {"dining": group_dining, "desk": group_desk, "storage": group_storage,
                 "lounge": group_lounge, "bedroom": group_bedroom, "boxes": group_boxes}
    if name in templates:
        return templates[name](ctx)
    return group_single(ctx, name)


# ---- placement ------------------------------------------------------------------------------
def _centered(group: _Group) -> tuple[_Group, np.ndarray]:
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


def place_group(ctx: BuildContext, grid: FloorGrid, group: _Group, spacing_m: float,
                attempts: int) -> list[tuple[_GroupItem, np.ndarray]] | None:
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


def _fits(grid: FloorGrid, placed: list[tuple[_GroupItem, np.ndarray]], spacing_m: float) -> bool:
    for item, T in placed:
        center, yaw, size = _item_rect(T, item.model)
        if not _rect_inside_room(grid.room, center, yaw, size):
            return False
        ix, iy = grid.rect_cells(center, yaw, size)
        if grid.reserved[ix, iy].any():
            return False
        if item.model.size_m[2] > 0.8 and grid.reserved_tall[ix, iy].any():
            return False
        jx, jy = grid.rect_cells(center, yaw, size, inflate_m=spacing_m)
        if grid.blocked[jx, jy].any():
            return False
    return True


def place_tops(ctx: BuildContext, support: PlacedObject, support_index: int,
               requests: list[_TopRequest], attempts: int = 30) -> list[PlacedObject]:
    """Put the requested models on the support surfaces of a placed object."""
    out: list[PlacedObject] = []
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
        if request.arrangement in ("row", "center"):
            poses = _row_on_surface(ctx, models, half, request)
        else:
            poses = [_random_on_surface(ctx, m, half, circles, attempts) for m in models]
        for model, pose in zip(models, poses):
            if pose is None:
                continue
            xy, yaw = pose
            radius = 0.5 * float(np.hypot(*model.size_m[:2]))
            circles.append((np.asarray(xy), radius))
            T = support.T_world_object @ T_support_surface @ pose_matrix((xy[0], xy[1], 0.0), yaw)
            out.append(PlacedObject(model, T, support.room_index, support_index, support.group))
    return out


def _random_on_surface(ctx: BuildContext, model: ObjectModel, half: np.ndarray,
                       circles: list[tuple[np.ndarray, float]], attempts: int):
    radius = 0.5 * float(np.hypot(*model.size_m[:2]))
    if np.any(half - radius < 0):
        return None
    for _ in range(attempts):
        xy = np.array([ctx.u(-half[0] + radius, half[0] - radius),
                       ctx.u(-half[1] + radius, half[1] - radius)])
        if all(np.linalg.norm(xy - c) >= radius + r + 0.01 for c, r in circles):
            return xy, ctx.u(0.0, 2 * math.pi)
    return None


def _row_on_surface(ctx: BuildContext, models: list[ObjectModel], half: np.ndarray,
                    request: _TopRequest):
    """Poses of a row along the surface x at its back edge (``row``), or centred (``center``)."""
    if not models:
        return []
    widths = [float(m.size_m[0]) for m in models]
    span = sum(widths) + request.gap_m * (len(models) - 1)
    depth = max(float(m.size_m[1]) for m in models)
    if span > 2 * half[0] or depth > 2 * half[1]:
        return [None] * len(models)
    if request.arrangement == "center":
        x0, y = -span / 2, 0.0
    else:
        x0 = ctx.u(-half[0], half[0] - span)
        y = half[1] - depth / 2 - ctx.u(0.0, max(0.0, min(0.15, half[1] * 2 - depth)))
    poses, x = [], x0
    for w in widths:
        poses.append((np.array([x + w / 2, y]), 0.0))
        x += w + request.gap_m
    return poses


def layout_room_furniture(ctx: BuildContext, rooms: list[Room], group_names: list[list[str]],
                          spacing_m: float, attempts: int) -> list[PlacedObject]:
    """Place the named groups in each room (those that do not fit are skipped) and their tops.

    Args:
        group_names: per room, group template names in placement order.
        spacing_m: free gap kept between groups.
        attempts: random poses tried per group before it is skipped.
    """
    placed: list[PlacedObject] = []
    for room, names in zip(rooms, group_names):
        grid = FloorGrid(room)
        reserve_free_zones(grid)
        for name in names:
            group = build_group(ctx, name)
            result = place_group(ctx, grid, group, spacing_m, attempts)
            if result is None:
                continue
            for item, T in result:
                obj = PlacedObject(item.model, T, room.index, -1, group.name)
                placed.append(obj)
                placed += place_tops(ctx, obj, len(placed) - 1, item.tops)
    return placed
