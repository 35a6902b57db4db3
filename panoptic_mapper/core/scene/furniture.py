"""Procedural furniture: one builder per thing class, each a composite of tessellated primitives.

Every builder draws its dimensions, variant and materials from the context's random generator and
returns an :class:`ObjectModel` in the object frame: origin at the centre of the footprint on the
floor, +z up, the object's *front* facing -y and its back at +y (so "back to the wall" is +y).

Owns: the shapes, size ranges and palettes of the thing classes; support surfaces (where smaller
objects can be put on top).
Does not own: where objects go (``layout``) or labels/instance ids (``generator``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from panoptic_mapper.core.scene import meshing as mesh
from panoptic_mapper.core.scene.materials import Material, MaterialTable, Pattern, jitter_color
from panoptic_mapper.core.scene.meshing import MeshPart

NO_BOTTOM = ("+x", "-x", "+y", "-y", "+z")
"""Box faces without the bottom one (resting on the floor or a support: never visible)."""

# Material kind -> list of (albedo, albedo2, pattern, scale_m, axis_hint); axis_hint -1 = random.
PALETTES: dict[str, list[tuple[tuple, tuple, Pattern, float, int]]] = {
    "wood": [((0.72, 0.55, 0.36), (0.52, 0.36, 0.21), Pattern.WOOD, 0.035, -1),
             ((0.45, 0.29, 0.17), (0.30, 0.18, 0.10), Pattern.WOOD, 0.03, -1),
             ((0.82, 0.70, 0.52), (0.66, 0.52, 0.34), Pattern.WOOD, 0.05, -1)],
    "laminate": [((0.88, 0.87, 0.84), (0.80, 0.79, 0.76), Pattern.PLAIN, 0.2, 0),
                 ((0.25, 0.25, 0.27), (0.2, 0.2, 0.22), Pattern.PLAIN, 0.2, 0),
                 ((0.60, 0.66, 0.72), (0.5, 0.55, 0.6), Pattern.PLAIN, 0.2, 0)],
    "fabric": [((0.25, 0.35, 0.60), (0.18, 0.26, 0.48), Pattern.NOISE, 0.02, 0),
               ((0.60, 0.22, 0.20), (0.45, 0.15, 0.14), Pattern.NOISE, 0.02, 0),
               ((0.50, 0.50, 0.52), (0.38, 0.38, 0.40), Pattern.NOISE, 0.02, 0),
               ((0.30, 0.45, 0.30), (0.20, 0.34, 0.22), Pattern.STRIPES, 0.08, -1),
               ((0.76, 0.70, 0.58), (0.62, 0.55, 0.44), Pattern.STRIPES, 0.06, -1)],
    "metal": [((0.58, 0.59, 0.61), (0.5, 0.5, 0.52), Pattern.PLAIN, 0.1, 0),
              ((0.15, 0.15, 0.16), (0.1, 0.1, 0.1), Pattern.PLAIN, 0.1, 0)],
    "plastic": [((0.12, 0.12, 0.13), (0.08, 0.08, 0.08), Pattern.PLAIN, 0.1, 0),
                ((0.85, 0.85, 0.85), (0.8, 0.8, 0.8), Pattern.PLAIN, 0.1, 0),
                ((0.20, 0.45, 0.75), (0.15, 0.35, 0.6), Pattern.PLAIN, 0.1, 0)],
    "ceramic": [((0.92, 0.92, 0.90), (0.85, 0.85, 0.83), Pattern.PLAIN, 0.05, 0),
                ((0.75, 0.15, 0.15), (0.6, 0.1, 0.1), Pattern.PLAIN, 0.05, 0),
                ((0.15, 0.35, 0.70), (0.1, 0.25, 0.55), Pattern.STRIPES, 0.02, 2),
                ((0.90, 0.75, 0.20), (0.75, 0.6, 0.1), Pattern.PLAIN, 0.05, 0)],
    "cardboard": [((0.66, 0.50, 0.32), (0.58, 0.43, 0.27), Pattern.NOISE, 0.05, 0),
                  ((0.72, 0.58, 0.40), (0.62, 0.48, 0.31), Pattern.NOISE, 0.04, 0)],
    "foliage": [((0.20, 0.45, 0.15), (0.08, 0.28, 0.07), Pattern.NOISE, 0.03, 0),
                ((0.30, 0.55, 0.20), (0.15, 0.35, 0.10), Pattern.NOISE, 0.025, 0)],
    "pot": [((0.70, 0.38, 0.25), (0.6, 0.3, 0.2), Pattern.PLAIN, 0.05, 0),
            ((0.90, 0.90, 0.88), (0.8, 0.8, 0.78), Pattern.STRIPES, 0.04, 2),
            ((0.20, 0.20, 0.22), (0.15, 0.15, 0.16), Pattern.PLAIN, 0.05, 0)],
    "shade": [((0.93, 0.89, 0.76), (0.85, 0.8, 0.66), Pattern.NOISE, 0.02, 0),
              ((0.85, 0.30, 0.25), (0.7, 0.22, 0.18), Pattern.PLAIN, 0.05, 0)],
    "screen": [((0.05, 0.07, 0.12), (0.15, 0.25, 0.45), Pattern.NOISE, 0.06, 0)],
    "soil": [((0.25, 0.17, 0.10), (0.18, 0.12, 0.07), Pattern.NOISE, 0.02, 0)],
    "coffee": [((0.22, 0.12, 0.06), (0.18, 0.1, 0.05), Pattern.PLAIN, 0.05, 0)],
    "bedding": [((0.90, 0.90, 0.92), (0.80, 0.82, 0.88), Pattern.STRIPES, 0.1, -1),
                ((0.55, 0.65, 0.80), (0.42, 0.52, 0.70), Pattern.CHECKER, 0.12, 0),
                ((0.85, 0.75, 0.60), (0.70, 0.58, 0.44), Pattern.NOISE, 0.05, 0)],
    # room surfaces (stuff)
    "wall": [((0.86, 0.84, 0.78), (0.80, 0.78, 0.72), Pattern.NOISE, 0.3, 0),
             ((0.78, 0.82, 0.86), (0.70, 0.74, 0.80), Pattern.STRIPES, 0.25, -1),
             ((0.90, 0.87, 0.80), (0.84, 0.76, 0.66), Pattern.NOISE, 0.15, 0),
             ((0.80, 0.86, 0.78), (0.74, 0.80, 0.72), Pattern.PLAIN, 0.3, 0)],
    "floor": [((0.62, 0.46, 0.30), (0.50, 0.36, 0.22), Pattern.PLANKS, 0.18, -1),
              ((0.78, 0.76, 0.72), (0.55, 0.54, 0.52), Pattern.CHECKER, 0.4, 0),
              ((0.45, 0.42, 0.40), (0.38, 0.35, 0.34), Pattern.NOISE, 0.04, 0)],
    "ceiling": [((0.95, 0.95, 0.94), (0.9, 0.9, 0.9), Pattern.PLAIN, 0.5, 0)],
    "door": [((0.70, 0.55, 0.38), (0.55, 0.40, 0.26), Pattern.WOOD, 0.04, 2),
             ((0.92, 0.92, 0.90), (0.86, 0.86, 0.84), Pattern.PLAIN, 0.2, 0)],
    "frame": [((0.95, 0.95, 0.93), (0.9, 0.9, 0.88), Pattern.PLAIN, 0.2, 0)],
    "glass": [((0.62, 0.78, 0.92), (0.80, 0.88, 0.96), Pattern.NOISE, 0.6, 0)],
}


@dataclass
class SupportSurface:
    """A horizontal rectangle of an object on which smaller objects may stand (object frame)."""

    center_xy_m: tuple[float, float]
    size_xy_m: tuple[float, float]
    height_m: float
    """z of the surface above the object's origin."""
    clearance_m: float = 3.0
    """Free height above the surface (shelf boards have a board above them)."""


@dataclass
class KneeSpace:
    """The free room under a table or desk top, between its legs or panels (object frame): where
    a chair can be pushed in without meeting a leg."""

    x_range_m: tuple[float, float]
    """Free x interval between the legs/panels."""
    y_range_m: tuple[float, float]
    """The top's extent along y (its front edge at the low end, back edge at the high end)."""
    underside_m: float
    """z of the top's underside (everything under the top must stay below it)."""


@dataclass
class ObjectModel:
    """A built object in its own frame (see module docstring)."""

    label: str
    """Registry label name, e.g. ``"chair"``."""
    parts: list[MeshPart]
    size_m: np.ndarray
    """[3] extent along x (width), y (depth) and z (height), metres."""
    supports: list[SupportSurface] = field(default_factory=list)
    variant: str = ""
    """Builder variant, e.g. ``"round"`` for a round table (scene metadata)."""
    knee_space: KneeSpace | None = None
    """Tables and desks: where a chair fits under the top; None = nowhere."""
    seat_depth_m: float = 0.0
    """Chairs: depth of the seat in front of the backrest, i.e. how far the chair goes under a
    top before its backrest meets the top's edge."""


class BuildContext:
    """Random source, material table and tessellation size shared by the builders."""

    def __init__(self, rng: np.random.Generator, materials: MaterialTable, max_edge_m: float):
        self.rng = rng
        self.materials = materials
        self.max_edge_m = max_edge_m

    def u(self, low: float, high: float) -> float:
        """A uniform draw in [low, high)."""
        return float(self.rng.uniform(low, high))

    def material(self, kind: str) -> int:
        """A new material of ``kind`` (random palette entry, jittered colour)."""
        entries = PALETTES[kind]
        albedo, albedo2, pattern, scale, axis = entries[int(self.rng.integers(len(entries)))]
        c1 = jitter_color(self.rng, albedo)
        ratio = np.asarray(albedo2) / np.maximum(np.asarray(albedo), 1e-3)
        c2 = tuple(float(v) for v in np.clip(np.asarray(c1) * ratio, 0.0, 1.0))
        axis = int(self.rng.integers(2)) if axis < 0 else axis
        return self.materials.add(Material(c1, c2, pattern, scale * self.u(0.8, 1.25), axis))

    def box(self, size, center, material: int, faces=mesh.BOX_FACES) -> MeshPart:
        return mesh.box(size, self.max_edge_m, center, faces, material)

    def frustum(self, r0: float, r1: float, h: float, base, material: int,
                caps=(True, True)) -> MeshPart:
        return mesh.frustum(r0, r1, h, self.max_edge_m, base, caps, material_id=material)


def _model(label: str, parts: list[MeshPart], supports: list[SupportSurface] | None = None,
           variant: str = "", knee_space: KneeSpace | None = None,
           seat_depth_m: float = 0.0) -> ObjectModel:
    """An :class:`ObjectModel` whose frame is re-centred on the parts' footprint: the size is the
    true extent of the geometry, so footprints, back-to-wall placement and GT boxes are exact."""
    vertices = np.concatenate([p.vertices_m for p in parts])
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    T = np.eye(4)
    T[:3, 3] = shift
    moved = [SupportSurface((s.center_xy_m[0] + shift[0], s.center_xy_m[1] + shift[1]),
                            s.size_xy_m, s.height_m + shift[2], s.clearance_m)
             for s in supports or []]
    if knee_space is not None:
        x0, x1 = knee_space.x_range_m
        y0, y1 = knee_space.y_range_m
        knee_space = KneeSpace((x0 + shift[0], x1 + shift[0]), (y0 + shift[1], y1 + shift[1]),
                               knee_space.underside_m + shift[2])
    return ObjectModel(label, [p.transformed(T) for p in parts], hi - lo, moved, variant,
                       knee_space, seat_depth_m)


def _legs(ctx: BuildContext, width: float, depth: float, height: float, inset: float,
          material: int, round_legs: bool, thickness: float) -> list[MeshPart]:
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x = sx * (width / 2 - inset - thickness / 2)
            y = sy * (depth / 2 - inset - thickness / 2)
            if round_legs:
                parts.append(ctx.frustum(thickness / 2, thickness / 2, height, (x, y, 0.0),
                                         material, caps=(False, False)))
            else:
                parts.append(ctx.box((thickness, thickness, height), (x, y, height / 2),
                                     material, NO_BOTTOM))
    return parts


def build_chair(ctx: BuildContext) -> ObjectModel:
    """Seat + back + four legs; wooden or upholstered."""
    w, d = ctx.u(0.42, 0.52), ctx.u(0.42, 0.5)
    seat_h, seat_t, back_h = ctx.u(0.43, 0.48), ctx.u(0.04, 0.07), ctx.u(0.35, 0.5)
    back_t = ctx.u(0.03, 0.05)
    upholstered = ctx.rng.random() < 0.5
    frame = ctx.material("metal" if upholstered else "wood")
    cover = ctx.material("fabric") if upholstered else frame
    parts = [ctx.box((w, d, seat_t), (0, 0, seat_h - seat_t / 2), cover)]
    parts.append(ctx.box((w, back_t, back_h), (0, d / 2 - back_t / 2, seat_h + back_h / 2), cover))
    parts += _legs(ctx, w, d, seat_h - seat_t, 0.01, frame, upholstered, ctx.u(0.025, 0.04))
    return _model("chair", parts, variant="upholstered" if upholstered else "wooden",
                  seat_depth_m=d - back_t)


def build_table(ctx: BuildContext, kind: str = "dining") -> ObjectModel:
    """A rectangular four-legged or a round pedestal table (``kind``: dining or coffee)."""
    top_mat, leg_mat = ctx.material("wood"), ctx.material(ctx.rng.choice(["wood", "metal"]))
    if kind == "coffee":
        w, d, h = ctx.u(0.8, 1.2), ctx.u(0.5, 0.7), ctx.u(0.4, 0.48)
    else:
        w, d, h = ctx.u(1.0, 1.7), ctx.u(0.75, 1.0), ctx.u(0.72, 0.77)
    t = ctx.u(0.03, 0.05)
    if kind == "dining" and ctx.rng.random() < 0.3:
        r = ctx.u(0.45, 0.6)
        parts = [ctx.frustum(r, r, t, (0, 0, h - t), top_mat),
                 ctx.frustum(0.05, 0.05, h - t, (0, 0, 0.02), leg_mat, caps=(False, False)),
                 ctx.frustum(0.25, 0.25, 0.02, (0, 0, 0), leg_mat, caps=(False, True))]
        side = r * math.sqrt(2.0) * 0.9
        return _model("table", parts, [SupportSurface((0.0, 0.0), (side, side), h)],
                      variant="round")
    parts = [ctx.box((w, d, t), (0, 0, h - t / 2), top_mat)]
    round_legs = ctx.rng.random() < 0.3
    leg_t, inset = ctx.u(0.04, 0.07), 0.04
    parts += _legs(ctx, w, d, h - t, inset, leg_mat, round_legs, leg_t)
    free_x = w / 2 - inset - leg_t
    return _model("table", parts, [SupportSurface((0.0, 0.0), (w - 0.04, d - 0.04), h)],
                  variant=kind, knee_space=KneeSpace((-free_x, free_x), (-d / 2, d / 2), h - t))


def build_desk(ctx: BuildContext) -> ObjectModel:
    """Top on a side panel and a drawer pedestal with drawer fronts and handles."""
    w, d, h, t = ctx.u(1.1, 1.6), ctx.u(0.6, 0.8), ctx.u(0.72, 0.76), ctx.u(0.025, 0.04)
    body, front, handle = ctx.material("laminate"), ctx.material("laminate"), ctx.material("metal")
    ped_w = ctx.u(0.38, 0.45)
    panel_t = 0.03
    parts = [ctx.box((w, d, t), (0, 0, h - t / 2), body),
             ctx.box((panel_t, d, h - t), (-w / 2 + panel_t / 2, 0, (h - t) / 2), body, NO_BOTTOM),
             ctx.box((ped_w, d - 0.02, h - t), (w / 2 - ped_w / 2, 0.01, (h - t) / 2), body,
                     NO_BOTTOM)]
    n_drawers = int(ctx.rng.integers(2, 4))
    drawer_h = (h - t - 0.04) / n_drawers
    x_ped = w / 2 - ped_w / 2
    for i in range(n_drawers):
        zc = 0.02 + drawer_h * (i + 0.5)
        parts.append(ctx.box((ped_w - 0.02, 0.015, drawer_h - 0.01), (x_ped, -d / 2 + 0.0025, zc),
                             front, faces=("-y", "+z", "-z", "+x", "-x")))
        parts.append(ctx.box((0.1, 0.02, 0.015), (x_ped, -d / 2 - 0.015, zc + drawer_h * 0.25),
                             handle, faces=("-y", "+z", "-z", "+x", "-x")))
    knee = KneeSpace((-w / 2 + panel_t, w / 2 - ped_w), (-d / 2, d / 2), h - t)
    return _model("desk", parts, [SupportSurface((0.0, 0.0), (w - 0.04, d - 0.04), h)],
                  knee_space=knee)


def build_sofa(ctx: BuildContext) -> ObjectModel:
    """Base, two or three seat cushions, back rest, two arms, small feet."""
    w, d = ctx.u(1.6, 2.3), ctx.u(0.85, 1.0)
    arm_w, back_t = ctx.u(0.15, 0.22), ctx.u(0.18, 0.25)
    cover, cushion, feet = ctx.material("fabric"), ctx.material("fabric"), ctx.material("wood")
    z_base, z_seat, z_back, z_arm = 0.08, 0.3, ctx.u(0.8, 0.9), ctx.u(0.58, 0.66)
    parts = [ctx.box((w - 2 * arm_w, d - back_t, z_seat - z_base),
                     (0, -back_t / 2, (z_base + z_seat) / 2), cover, NO_BOTTOM),
             ctx.box((w, back_t, z_back - z_base), (0, d / 2 - back_t / 2, (z_back + z_base) / 2),
                     cover, NO_BOTTOM)]
    for sx in (-1, 1):
        parts.append(ctx.box((arm_w, d - back_t, z_arm - z_base),
                             (sx * (w / 2 - arm_w / 2), -back_t / 2, (z_arm + z_base) / 2), cover,
                             NO_BOTTOM))
    n_cushions = int(ctx.rng.integers(2, 4))
    inner = w - 2 * arm_w
    cw = inner / n_cushions
    for i in range(n_cushions):
        x = -inner / 2 + cw * (i + 0.5)
        parts.append(ctx.box((cw - 0.01, d - back_t - 0.02, 0.14),
                             (x, -back_t / 2, z_seat + 0.07), cushion, NO_BOTTOM))
    parts += _legs(ctx, w, d, z_base, 0.03, feet, True, 0.05)
    return _model("sofa", parts)


def build_cabinet(ctx: BuildContext, nightstand: bool = False) -> ObjectModel:
    """A body with one or two doors and handles (a low one when ``nightstand``)."""
    if nightstand:
        w, d, h = ctx.u(0.4, 0.55), ctx.u(0.35, 0.45), ctx.u(0.5, 0.62)
    else:
        w, d, h = ctx.u(0.5, 1.0), ctx.u(0.4, 0.6), ctx.u(0.8, 1.9)
    body = ctx.material(ctx.rng.choice(["wood", "laminate"]))
    door = ctx.material(ctx.rng.choice(["wood", "laminate"]))
    handle = ctx.material("metal")
    parts = [ctx.box((w, d - 0.02, h), (0, 0.01, h / 2), body, NO_BOTTOM)]
    n_doors = 1 if w < 0.6 else 2
    door_w = (w - 0.03) / n_doors
    for i in range(n_doors):
        x = -w / 2 + 0.015 + door_w * (i + 0.5)
        parts.append(ctx.box((door_w - 0.006, 0.018, h - 0.06), (x, -d / 2 + 0.011, h / 2), door,
                             faces=("-y", "+z", "-z", "+x", "-x")))
        hx = x + (door_w / 2 - 0.05) * (1 if i == 0 and n_doors == 2 else -1)
        parts.append(ctx.box((0.02, 0.025, 0.12), (hx, -d / 2 - 0.010, h * 0.6), handle,
                             faces=("-y", "+z", "-z", "+x", "-x")))
    return _model("cabinet", parts, [SupportSurface((0.0, 0.01), (w - 0.04, d - 0.06), h)],
                       variant="nightstand" if nightstand else "cabinet")


def build_shelf(ctx: BuildContext) -> ObjectModel:
    """An open shelving unit: two sides, top, bottom, 2-4 boards and a back panel."""
    w, d, h = ctx.u(0.6, 1.2), ctx.u(0.28, 0.4), ctx.u(1.2, 2.0)
    t = ctx.u(0.018, 0.03)
    wood, back = ctx.material("wood"), ctx.material(ctx.rng.choice(["wood", "laminate"]))
    parts = [ctx.box((t, d, h), (sx * (w / 2 - t / 2), 0, h / 2), wood, NO_BOTTOM)
             for sx in (-1, 1)]
    parts.append(ctx.box((w - 2 * t, 0.008, h - 2 * t), (0, d / 2 - 0.004, h / 2), back,
                         faces=("-y",)))
    n_boards = int(ctx.rng.integers(2, 5))
    levels = np.linspace(0.05, h - t, n_boards + 2)
    supports = []
    for i, z in enumerate(levels):
        parts.append(ctx.box((w - 2 * t, d - 0.01, t), (0, -0.005, z - t / 2), wood,
                             NO_BOTTOM if i == 0 else mesh.BOX_FACES))
        clearance = (levels[i + 1] - t - z) if i + 1 < len(levels) else 3.0
        supports.append(SupportSurface((0.0, -0.005), (w - 2 * t - 0.02, d - 0.04), float(z),
                                       float(clearance)))
    return _model("shelf", parts, supports)


def build_bed(ctx: BuildContext) -> ObjectModel:
    """Frame, mattress, blanket, one or two pillows and a headboard at +y."""
    w, length = ctx.u(1.0, 1.8), ctx.u(1.95, 2.1)
    frame_h, matt_h, head_h = ctx.u(0.25, 0.35), ctx.u(0.18, 0.25), ctx.u(0.85, 1.1)
    frame, sheet, blanket, pillow = (ctx.material("wood"), ctx.material("bedding"),
                                     ctx.material("bedding"), ctx.material("bedding"))
    head_t = 0.06
    body_len = length - head_t
    y_body = -head_t / 2
    top = frame_h + matt_h
    parts = [ctx.box((w, body_len, frame_h), (0, y_body, frame_h / 2), frame, NO_BOTTOM),
             ctx.box((w - 0.04, body_len - 0.04, matt_h), (0, y_body, frame_h + matt_h / 2),
                     sheet, NO_BOTTOM),
             ctx.box((w, head_t, head_h), (0, length / 2 - head_t / 2, head_h / 2), frame,
                     NO_BOTTOM)]
    blanket_len = body_len * ctx.u(0.55, 0.7)
    parts.append(ctx.box((w - 0.02, blanket_len, 0.03),
                         (0, -length / 2 + blanket_len / 2 + 0.01, top + 0.015), blanket,
                         NO_BOTTOM))
    n_pillows = 1 if w < 1.3 else 2
    pw = (w - 0.1) / n_pillows
    for i in range(n_pillows):
        x = -w / 2 + 0.05 + pw * (i + 0.5)
        parts.append(mesh.sphere((pw / 2 - 0.02, 0.2, 0.07), ctx.max_edge_m,
                                 (x, length / 2 - head_t - 0.25, top + 0.06), material_id=pillow))
    return _model("bed", parts, variant="double" if w >= 1.3 else "single")


def build_monitor(ctx: BuildContext) -> ObjectModel:
    """Screen with a display face, a neck and a foot."""
    w = ctx.u(0.45, 0.7)
    sh, st = w * ctx.u(0.56, 0.65), ctx.u(0.025, 0.045)
    lift = ctx.u(0.08, 0.15)
    case, display = ctx.material("plastic"), ctx.material("screen")
    foot_w, foot_d = ctx.u(0.18, 0.25), ctx.u(0.14, 0.2)
    parts = [ctx.box((foot_w, foot_d, 0.015), (0, 0, 0.0075), case, NO_BOTTOM),
             ctx.box((0.05, 0.025, lift + 0.05), (0, 0.02, (lift + 0.05) / 2), case, NO_BOTTOM),
             ctx.box((w, st, sh), (0, 0.0, lift + sh / 2), case),
             ctx.box((w - 0.03, 0.002, sh - 0.03), (0, -st / 2 - 0.001, lift + sh / 2), display,
                     faces=("-y",))]
    return _model("monitor", parts)


def build_mug(ctx: BuildContext) -> ObjectModel:
    """A cylinder with a coffee surface on top and a C-shaped handle on +x."""
    r, h = ctx.u(0.035, 0.045), ctx.u(0.08, 0.11)
    body, coffee = ctx.material("ceramic"), ctx.material("coffee")
    wall = 0.004
    parts = [ctx.frustum(r, r, h, (0, 0, 0), body, caps=(False, False)),
             mesh.disc(r - wall, ctx.max_edge_m, (0, 0, h - 0.012), material_id=coffee)]
    hw, hh = 0.012, h * 0.6
    parts += [ctx.box((0.03, hw, hw), (r + 0.012, 0, h * 0.8), body),
              ctx.box((0.03, hw, hw), (r + 0.012, 0, h * 0.8 - hh), body),
              ctx.box((hw, hw, hh + hw), (r + 0.027 - hw / 2 + 0.006, 0, h * 0.8 - hh / 2), body)]
    return _model("mug", parts)


def build_bin(ctx: BuildContext) -> ObjectModel:
    """A tapered round or a square waste bin with a dark opening."""
    h = ctx.u(0.3, 0.45)
    shell, inside = ctx.material(ctx.rng.choice(["plastic", "metal"])), ctx.material("coffee")
    if ctx.rng.random() < 0.6:
        r0 = ctx.u(0.11, 0.15)
        r1 = r0 * ctx.u(1.05, 1.2)
        r_inside = r0 + (r1 - r0) * (h - 0.05) / h - 0.005
        parts = [ctx.frustum(r0, r1, h, (0, 0, 0), shell, caps=(False, False)),
                 mesh.disc(r_inside, ctx.max_edge_m, (0, 0, h - 0.05), material_id=inside)]
        return _model("bin", parts, variant="round")
    s = ctx.u(0.22, 0.3)
    parts = [ctx.box((s, s, h), (0, 0, h / 2), shell, ("+x", "-x", "+y", "-y")),
             ctx.box((s - 0.01, s - 0.01, 0.001), (0, 0, h - 0.05), inside, faces=("+z",))]
    return _model("bin", parts, variant="square")


def build_box(ctx: BuildContext, small: bool = False,
              max_xy_m: tuple[float, float] | None = None) -> ObjectModel:
    """A cardboard box with a tape strip (``small`` for boxes that go on shelves; ``max_xy_m``
    caps the footprint, for a box that must fit on top of another one)."""
    if small:
        w, d, h = ctx.u(0.15, 0.3), ctx.u(0.15, 0.25), ctx.u(0.1, 0.22)
    else:
        w, d, h = ctx.u(0.3, 0.6), ctx.u(0.25, 0.5), ctx.u(0.2, 0.45)
    if max_xy_m is not None:  # the tape is 2 mm wider than the box
        w, d = min(w, max_xy_m[0] - 0.002), min(d, max_xy_m[1])
    card, tape = ctx.material("cardboard"), ctx.material("cardboard")
    parts = [ctx.box((w, d, h), (0, 0, h / 2), card, NO_BOTTOM),
             ctx.box((w + 0.002, 0.05, 0.002), (0, 0, h + 0.001), tape,
                     faces=("+z", "+x", "-x"))]
    return _model("box", parts, [SupportSurface((0.0, 0.0), (w - 0.02, d - 0.02), h)])


def build_plant(ctx: BuildContext, small: bool = False) -> ObjectModel:
    """A pot with soil and a clump of bumpy foliage balls (a table plant when ``small``)."""
    s = ctx.u(0.35, 0.5) if small else 1.0
    r0 = ctx.u(0.1, 0.15) * s
    r1, ph = r0 * ctx.u(1.15, 1.35), ctx.u(0.2, 0.32) * s
    pot, soil, leaves = ctx.material("pot"), ctx.material("soil"), ctx.material("foliage")
    parts = [ctx.frustum(r0, r1, ph, (0, 0, 0), pot, caps=(False, False)),
             mesh.disc(r1 * 0.95, ctx.max_edge_m, (0, 0, ph - 0.02 * s), material_id=soil)]
    tall = not small and ctx.rng.random() < 0.5
    top = ph
    if tall:
        stem_h = ctx.u(0.4, 0.8)
        parts.append(ctx.frustum(0.015, 0.012, stem_h + 0.1, (0, 0, ph - 0.05),
                                 ctx.material("wood"), caps=(False, False)))
        top = ph + stem_h
    n_balls = int(ctx.rng.integers(3, 7))
    reach = r1 * 1.8
    for _ in range(n_balls):
        rb = ctx.u(0.12, 0.25) * s
        a = ctx.u(0.0, 2 * math.pi)
        off = ctx.u(0.0, reach - rb) if reach > rb else 0.0
        center = (off * math.cos(a), off * math.sin(a), top + rb * ctx.u(0.6, 1.6))
        parts.append(mesh.sphere(rb, ctx.max_edge_m, center, bumpiness=0.18, rng=ctx.rng,
                                 material_id=leaves))
    return _model("plant", parts, variant="small" if small else ("tall" if tall else "bush"))


def build_lamp(ctx: BuildContext, desk: bool = False) -> ObjectModel:
    """A floor lamp (base, pole, shade) or a desk lamp (``desk``)."""
    metal, shade = ctx.material("metal"), ctx.material("shade")
    if desk:
        rb, pole_h = ctx.u(0.06, 0.08), ctx.u(0.25, 0.4)
        r_low, r_high, shade_h = ctx.u(0.08, 0.11), ctx.u(0.04, 0.06), ctx.u(0.1, 0.14)
    else:
        rb, pole_h = ctx.u(0.13, 0.18), ctx.u(1.25, 1.6)
        r_low, r_high, shade_h = ctx.u(0.18, 0.25), ctx.u(0.12, 0.16), ctx.u(0.22, 0.3)
    parts = [ctx.frustum(rb, rb * 0.9, 0.02, (0, 0, 0), metal, caps=(False, True)),
             ctx.frustum(0.012, 0.012, pole_h, (0, 0, 0.02), metal, caps=(False, False)),
             ctx.frustum(r_low, r_high, shade_h, (0, 0, 0.02 + pole_h - shade_h * 0.3), shade)]
    return _model("lamp", parts, variant="desk" if desk else "floor")


BUILDERS: dict[str, Callable[..., ObjectModel]] = {
    "chair": build_chair, "table": build_table, "desk": build_desk, "sofa": build_sofa,
    "cabinet": build_cabinet, "shelf": build_shelf, "bed": build_bed,
    "monitor": build_monitor, "mug": build_mug, "bin": build_bin, "box": build_box,
    "plant": build_plant, "lamp": build_lamp,
}
"""Thing label name -> builder (extra keyword arguments select a variant)."""
