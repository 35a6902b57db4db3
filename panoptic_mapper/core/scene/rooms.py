"""Room shells of the synthetic scenes: floors, ceilings, walls, doors, windows and doorways.

Rooms are axis-aligned rectangles laid side by side along +x; neighbouring rooms share a wall
with a walk-through doorway. The world frame has +z up and the floor at z = 0. Only surfaces a
camera inside the rooms can see are built (exterior walls are single inward-facing planes; hidden
faces of wall pieces are left out), so the ground-truth mesh holds no unobservable geometry.
Doors and windows are stuff regions *on* a wall: thin panels with frames, as in ScanNet/Replica
labels; doorway casings carry the ``door`` label too.

Owns: :class:`Room`, :class:`Opening`, the room arrangement and the stuff geometry.
Does not own: furniture placement (``layout``) or label ids (``generator``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from panoptic_mapper.core.scene import meshing as mesh
from panoptic_mapper.core.scene.furniture import BuildContext
from panoptic_mapper.core.scene.meshing import MeshPart

WALL_THICKNESS_M = 0.1
"""Thickness of a wall shared by two rooms."""
DOORWAY_WIDTH_M = 0.9
"""Clear width of a walk-through doorway."""
DOOR_HEIGHT_M = 2.05
"""Height of doors and doorways."""
SIDES = ("south", "north", "west", "east")
"""Wall sides of a room: south = min y, north = max y, west = min x, east = max x."""


@dataclass
class Opening:
    """A door, window or doorway in one wall of a room."""

    side: str
    """Wall side (one of :data:`SIDES`)."""
    center_m: float
    """Position of the opening centre along the wall, metres from the wall frame origin."""
    width_m: float
    bottom_m: float
    """Height of the lower edge above the floor (window sill), metres."""
    top_m: float
    kind: str
    """``"door"`` (closed door panel), ``"window"`` or ``"doorway"`` (passage to a room)."""


@dataclass
class Room:
    """An axis-aligned rectangular room (interior bounds)."""

    index: int
    min_xy_m: np.ndarray
    """[2] interior lower corner, metres."""
    max_xy_m: np.ndarray
    """[2] interior upper corner, metres."""
    height_m: float
    openings: list[Opening] = field(default_factory=list)

    @property
    def size_xy_m(self) -> np.ndarray:
        return self.max_xy_m - self.min_xy_m

    @property
    def center_xy_m(self) -> np.ndarray:
        return (self.min_xy_m + self.max_xy_m) / 2.0

    def wall_length_m(self, side: str) -> float:
        """Interior length of a wall side."""
        sx, sy = self.size_xy_m
        return float(sx if side in ("south", "north") else sy)

    def T_world_wall(self, side: str) -> np.ndarray:  # noqa: N802 (transform notation)
        """Wall frame: origin at the wall's start corner on the floor, +x along the wall,
        +y into the room (inward normal), +z up."""
        (x0, y0), (x1, y1) = self.min_xy_m, self.max_xy_m
        origin, yaw = {"south": ((x0, y0), 0.0), "north": ((x1, y1), math.pi),
                       "west": ((x0, y1), -math.pi / 2), "east": ((x1, y0), math.pi / 2)}[side]
        return mesh.pose_matrix((origin[0], origin[1], 0.0), yaw)

    def contains_xy(self, points_xy_m: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
        """[N] bool: points [N, 2] inside the interior shrunk by ``margin_m``."""
        p = np.asarray(points_xy_m, float).reshape(-1, 2)
        return np.all((p >= self.min_xy_m + margin_m) & (p <= self.max_xy_m - margin_m), axis=1)


@dataclass
class StuffPart:
    """Geometry of one stuff class (world frame)."""

    label: str
    part: MeshPart
    room_index: int


def arrange_rooms(rng: np.random.Generator, num_rooms: int, width_range_m, depth_range_m,
                  height_range_m) -> list[Room]:
    """Rooms side by side along +x with a common depth and height and doorways between them."""
    depth = float(rng.uniform(*depth_range_m))
    height = float(rng.uniform(*height_range_m))
    rooms = []
    x = 0.0
    for i in range(num_rooms):
        width = float(rng.uniform(*width_range_m))
        rooms.append(Room(i, np.array([x, 0.0]), np.array([x + width, depth]), height))
        x += width + WALL_THICKNESS_M
    for left, right in zip(rooms, rooms[1:]):
        margin = 0.4 + DOORWAY_WIDTH_M / 2
        y = float(rng.uniform(margin, depth - margin))
        left.openings.append(Opening("east", y, DOORWAY_WIDTH_M, 0.0, DOOR_HEIGHT_M, "doorway"))
        right.openings.append(Opening("west", depth - y, DOORWAY_WIDTH_M, 0.0, DOOR_HEIGHT_M,
                                      "doorway"))
    for room in rooms:
        _add_doors_and_windows(rng, room, num_rooms)
    return rooms


def exterior_sides(room: Room, num_rooms: int) -> list[str]:
    """Wall sides of ``room`` that face outside (not shared with a neighbour)."""
    sides = ["south", "north"]
    if room.index == 0:
        sides.append("west")
    if room.index == num_rooms - 1:
        sides.append("east")
    return sides


def _add_doors_and_windows(rng: np.random.Generator, room: Room, num_rooms: int) -> None:
    sides = exterior_sides(room, num_rooms)
    wanted = []
    if room.index == 0 or rng.random() < 0.5:
        wanted.append(("door", float(rng.uniform(0.8, 0.95)), 0.0, DOOR_HEIGHT_M))
    for _ in range(int(rng.integers(1, 3))):
        sill = float(rng.uniform(0.8, 1.0))
        top = min(room.height_m - 0.3, sill + float(rng.uniform(0.9, 1.4)))
        wanted.append(("window", float(rng.uniform(0.8, 1.6)), sill, top))
    for kind, width, bottom, top in wanted:
        for _ in range(20):
            side = str(rng.choice(sides))
            length = room.wall_length_m(side)
            if length < width + 0.8:
                continue
            center = float(rng.uniform(0.4 + width / 2, length - 0.4 - width / 2))
            if all(o.side != side or abs(o.center_m - center) > (o.width_m + width) / 2 + 0.4
                   for o in room.openings):
                room.openings.append(Opening(side, center, width, bottom, top, kind))
                break


def build_room_shells(ctx: BuildContext, rooms: list[Room]) -> list[StuffPart]:
    """Floors, ceilings, walls (with doorways), doors and windows of all rooms."""
    parts: list[StuffPart] = []
    e = ctx.max_edge_m
    for room in rooms:
        wall_mat, floor_mat = ctx.material("wall"), ctx.material("floor")
        ceiling_mat = ctx.material("ceiling")
        (x0, y0), (x1, y1) = room.min_xy_m, room.max_xy_m
        h = room.height_m
        v, t = mesh.grid_patch((x0, y0, 0.0), (x1 - x0, 0, 0), (0, y1 - y0, 0), e)
        parts.append(StuffPart("floor", MeshPart(v, t, floor_mat), room.index))
        v, t = mesh.grid_patch((x0, y0, h), (0, y1 - y0, 0), (x1 - x0, 0, 0), e)
        parts.append(StuffPart("ceiling", MeshPart(v, t, ceiling_mat), room.index))
        for side in SIDES:
            T = room.T_world_wall(side)
            length = room.wall_length_m(side)
            doorways = [o for o in room.openings if o.side == side and o.kind == "doorway"]
            for piece in _wall_pieces(length, h, doorways, e):
                parts.append(StuffPart("wall", piece.with_material(wall_mat).transformed(T),
                                       room.index))
            for opening in room.openings:
                if opening.side != side:
                    continue
                for label, piece in _opening_parts(ctx, opening, doorways):
                    parts.append(StuffPart(label, piece.transformed(T), room.index))
        for opening in room.openings:
            if opening.kind == "doorway" and opening.side == "east":
                parts.append(_doorway_floor(room, opening, floor_mat, e))
    return parts


def _wall_pieces(length: float, height: float, doorways: list[Opening], e: float
                 ) -> list[MeshPart]:
    """A wall in its wall frame (y = 0 is the interior face): a plane, or, where it has a
    doorway, the two sides, the reveals and the lintel of the opening (half the wall thickness:
    the other half belongs to the neighbour's wall)."""
    if not doorways:
        v, t = mesh.grid_patch((length, 0, 0), (-length, 0, 0), (0, 0, height), e)
        return [MeshPart(v, t)]
    pieces = []
    start = 0.0
    half_t = WALL_THICKNESS_M / 2
    for d in sorted(doorways, key=lambda o: o.center_m):
        a, b = d.center_m - d.width_m / 2, d.center_m + d.width_m / 2
        pieces.append(_plane_segment(start, a, 0.0, height, e))
        pieces.append(_plane_segment(a, b, d.top_m, height, e))
        v, t = mesh.grid_patch((a, 0, 0), (0, 0, d.top_m), (0, -half_t, 0), e)
        pieces.append(MeshPart(v, t))
        v, t = mesh.grid_patch((b, 0, 0), (0, -half_t, 0), (0, 0, d.top_m), e)
        pieces.append(MeshPart(v, t))
        v, t = mesh.grid_patch((a, 0, d.top_m), (b - a, 0, 0), (0, -half_t, 0), e)
        pieces.append(MeshPart(v, t))
        start = b
    pieces.append(_plane_segment(start, length, 0.0, height, e))
    return pieces


def _plane_segment(u0: float, u1: float, z0: float, z1: float, e: float) -> MeshPart:
    v, t = mesh.grid_patch((u1, 0, z0), (u0 - u1, 0, 0), (0, 0, z1 - z0), e)
    return MeshPart(v, t)


def _opening_parts(ctx: BuildContext, o: Opening, doorways: list[Opening]
                   ) -> list[tuple[str, MeshPart]]:
    """Door panel + casing + handle, window glass + frame + sill, or doorway casing (wall
    frame)."""
    wall_faces = ("+y", "+x", "-x", "+z", "-z")
    a, b = o.center_m - o.width_m / 2, o.center_m + o.width_m / 2
    parts: list[tuple[str, MeshPart]] = []
    if o.kind == "window":
        glass, frame = ctx.material("glass"), ctx.material("frame")
        parts.append(("window", ctx.box((o.width_m, 0.01, o.top_m - o.bottom_m),
                                        (o.center_m, 0.005, (o.bottom_m + o.top_m) / 2), glass,
                                        ("+y",))))
        parts += [("window", p) for p in _casing(ctx, a, b, o.bottom_m, o.top_m, 0.05, 0.03,
                                                  frame, bottom=True)]
        parts.append(("window", ctx.box((o.width_m + 0.16, 0.12, 0.03),
                                        (o.center_m, 0.06, o.bottom_m - 0.065), frame,
                                        wall_faces)))
        return parts
    frame = ctx.material("frame")
    if o.kind == "door":
        panel = ctx.material("door")
        parts.append(("door", ctx.box((o.width_m, 0.035, o.top_m), (o.center_m, 0.0175,
                                                                     o.top_m / 2), panel,
                                      ("+y", "+x", "-x", "+z"))))
        hx = b - 0.08 if ctx.rng.random() < 0.5 else a + 0.08
        parts.append(("door", ctx.box((0.12, 0.05, 0.025), (hx, 0.06, 1.0),
                                      ctx.material("metal"), wall_faces)))
    parts += [("door", p) for p in _casing(ctx, a, b, 0.0, o.top_m, 0.07, 0.02, frame,
                                            bottom=False)]
    return parts


def _casing(ctx: BuildContext, a: float, b: float, z0: float, z1: float, width: float,
            depth: float, material: int, bottom: bool) -> list[MeshPart]:
    """Frame boards around the rectangle [a, b] x [z0, z1] of a wall (wall frame)."""
    faces = ("+y", "+x", "-x", "+z", "-z")
    boards = [ctx.box((width, depth, z1 - z0 + width), (a - width / 2, depth / 2,
                                                        (z0 + z1 + width) / 2), material, faces),
              ctx.box((width, depth, z1 - z0 + width), (b + width / 2, depth / 2,
                                                        (z0 + z1 + width) / 2), material, faces),
              ctx.box((b - a, depth, width), (0.5 * (a + b), depth / 2, z1 + width / 2), material,
                      faces)]
    if bottom:
        boards.append(ctx.box((b - a, depth, width), (0.5 * (a + b), depth / 2, z0 - width / 2),
                              material, faces))
    return boards


def _doorway_floor(room: Room, o: Opening, material: int, e: float) -> StuffPart:
    """The floor strip under a doorway in the shared wall east of ``room``."""
    x0 = float(room.max_xy_m[0])
    y0 = float(room.min_xy_m[1]) + o.center_m - o.width_m / 2
    v, t = mesh.grid_patch((x0, y0, 0.0), (WALL_THICKNESS_M, 0, 0), (0, o.width_m, 0), e)
    return StuffPart("floor", MeshPart(v, t, material), room.index)
