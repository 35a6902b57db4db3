"""Furniture group templates: the object sets real rooms have, arranged ``dense`` or ``spaced``.

A group (a dining set, a desk corner, a storage wall, a lounge, a bed with nightstands, a pile of
boxes, single items) is a list of objects posed in the group's frame (+y = the side that goes
to the wall) with requests for smaller objects on their support surfaces. Inside a group objects
may touch on purpose, and same-class objects stand side by side (identical dining chairs, two
monitors, a row of equal cabinets): the hard cases for instance segmentation.

The ``dense`` arrangement is furniture as people leave it: chairs pushed against or under their
table/desk, identical chairs, cabinets, bins and boxes touching in rows, boxes stacked two or three
high, fuller tables and shelves. ``spaced`` is the earlier generator, kept draw for draw so a seed
gives the same scene as before.

Owns: the templates and :class:`Arrangement`. Does not own: where groups go (``layout``) or the
shapes (``furniture``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from panoptic_mapper.core.scene import furniture as fb
from panoptic_mapper.core.scene.furniture import BuildContext, ObjectModel, build_box
from panoptic_mapper.core.scene.meshing import pose_matrix

TOUCH_GAP_M = 0.002
"""Gap between objects placed "touching" (avoids coincident faces)."""
LEG_CLEARANCE_M = 0.01
"""Free gap kept between a tucked chair's side and the table/desk legs or panels."""
CORE_GROUPS = ("desk", "storage", "lounge", "dining", "bedroom")
"""Groups placed first (between them they cover every thing class)."""
FILLER_GROUPS = ("boxes", "plant", "bin", "lamp", "box", "chair", "storage", "desk")
"""Groups added afterwards while there is room."""
DENSE_FILLERS = ("bins", "chairs", "boxes", "storage", "boxes", "bins", "plant", "lamp")
"""Groups a ``dense`` room tries after its planned ones (rows of touching things favoured)."""


@dataclass(frozen=True)
class Arrangement:
    """How tightly furniture is arranged (``SceneConfig.arrangement``)."""

    name: str
    dense: bool
    apart_factor: float = 1.0
    """Scales each template's odds that two members which may touch stand apart instead."""
    tuck_p: float = 0.0
    """Probability that chairs whose seats fit between a table's/desk's legs go under its top."""
    stack_p: float = 0.0
    """Probability that a box on the floor carries one or two more boxes."""
    spacing_scale: float = 1.0
    """Factor on the free gap kept between groups (``SceneConfig.group_spacing_m``)."""
    extra_groups: int = 0
    """Groups from :data:`DENSE_FILLERS` tried per room after the planned ones."""
    separate_tops: bool = False
    """Objects put on a surface keep clear of each other one by one, rows included (``spaced``
    keeps the earlier placement, where the objects of one request, or a row put after others,
    could overlap)."""

    def p_touch(self, p: float) -> float:
        """A template's probability ``p`` that two members touch, under this arrangement."""
        return p if self.apart_factor == 1.0 else 1.0 - (1.0 - p) * self.apart_factor

    def pick(self, spaced: float, dense: float) -> float:
        """A template parameter: its ``spaced`` or its ``dense`` value."""
        return dense if self.dense else spaced


ARRANGEMENTS = {
    "dense": Arrangement("dense", True, apart_factor=0.25, tuck_p=0.8, stack_p=0.6,
                         spacing_scale=1.0 / 3.0, extra_groups=4, separate_tops=True),
    "spaced": Arrangement("spaced", False),
}
"""The arrangements by name (``SceneConfig.arrangement``)."""


@dataclass
class TopRequest:
    """Objects to put on a support surface of a group item."""

    models: list[ObjectModel]
    surface: int = 0
    arrangement: str = "random"
    """``random`` (free positions and yaw), ``row`` (touching/close row along the support's x,
    at its back edge, facing front), ``center`` or ``stack`` (centred, may be as large as the
    object below, raised by the touching gap)."""
    gap_m: float = TOUCH_GAP_M
    trim: bool = False
    """``row``: drop models from the end until the row fits (instead of placing none)."""
    on_top: list[TopRequest] = field(default_factory=list)
    """Requests for each placed model in turn (a stack of boxes)."""


@dataclass
class GroupItem:
    model: ObjectModel
    T_group_object: np.ndarray
    tops: list[TopRequest] = field(default_factory=list)


@dataclass
class Group:
    name: str
    items: list[GroupItem]
    against_wall: bool


def _gap(ctx: BuildContext, p_touch: float, low: float, high: float) -> float:
    return TOUCH_GAP_M if ctx.rng.random() < p_touch else ctx.u(low, high)


def _mugs(ctx: BuildContext, max_count: int, style: Arrangement) -> list[TopRequest]:
    n = int(ctx.rng.integers(1, max_count + 1))
    if n >= 2 and ctx.rng.random() < style.pick(0.5, 0.75):
        mug = fb.build_mug(ctx)
        row = [mug] * (n if style.dense else 2)
        return [TopRequest(row, arrangement="row", gap_m=_gap(ctx, style.p_touch(0.7), 0.01,
                                                              0.05))]
    return [TopRequest([fb.build_mug(ctx) for _ in range(n)])]


def _tuck_depth(ctx: BuildContext, chair: ObjectModel, limit_m: float) -> float:
    """How far a chair's front goes under a top: its backrest stays outside the top's edge."""
    depth = chair.seat_depth_m - TOUCH_GAP_M - ctx.u(0.0, 0.06)
    return max(0.0, min(depth, limit_m))


def _dining_side_y(ctx: BuildContext, style: Arrangement, table: ObjectModel,
                   chair: ObjectModel, side: int, span: float) -> float:
    """``dense``: the y of a row of chairs (x-span ``span``, centred) on one side of a table:
    under the top when the row fits between the legs, else pushed against the top's edge."""
    dc = float(chair.size_m[1])
    knee = table.knee_space
    fits = (knee is not None and -span / 2 >= knee.x_range_m[0] + LEG_CLEARANCE_M
            and span / 2 <= knee.x_range_m[1] - LEG_CLEARANCE_M)
    if fits and ctx.rng.random() < style.tuck_p:
        y0, y1 = knee.y_range_m
        # chairs come from both sides: each may reach the middle of the top, not beyond
        t_in = _tuck_depth(ctx, chair, (y1 - y0) / 2 - LEG_CLEARANCE_M)
        return y1 - t_in + dc / 2 if side > 0 else y0 + t_in - dc / 2
    gap = _gap(ctx, style.p_touch(0.5), 0.02, 0.12)
    return side * (table.size_m[1] / 2 + dc / 2 + gap)


def group_dining(ctx: BuildContext, style: Arrangement) -> Group:
    """A table with identical chairs around it, mugs (and maybe a small plant) on top."""
    table = fb.build_table(ctx, "dining")
    tops = _mugs(ctx, 3, style)
    if ctx.rng.random() < 0.3:
        tops.append(TopRequest([fb.build_plant(ctx, small=True)]))
    if style.dense and ctx.rng.random() < 0.4:
        tops.append(TopRequest([build_box(ctx, small=True)]))
    items = [GroupItem(table, np.eye(4), tops)]
    chair = fb.build_chair(ctx)
    wc, dc = chair.size_m[:2]
    if table.variant == "round":
        r = table.size_m[0] / 2
        n = int(ctx.rng.integers(2, 5))
        a0 = ctx.u(0.0, 2 * math.pi)
        for k in range(n):
            a = a0 + 2 * math.pi * k / n
            extra = _gap(ctx, style.p_touch(0.3), 0.02, 0.12) if style.dense else ctx.u(0.0, 0.12)
            dist = r + dc / 2 + extra
            items.append(GroupItem(chair, pose_matrix((dist * math.cos(a), dist * math.sin(a), 0),
                                                      a - math.pi / 2)))
        return Group("dining", items, against_wall=False)
    w, d = table.size_m[:2]
    for side in (-1, 1):
        k_max = max(1, int((w + 0.1 + TOUCH_GAP_M) // (wc + TOUCH_GAP_M)))
        k = int(ctx.rng.integers(1, min(3, k_max) + 1))
        gap = _gap(ctx, style.p_touch(0.35), 0.03, 0.25)
        gap = min(gap, max(TOUCH_GAP_M, (w + 0.1 - k * wc) / max(1, k - 1)))
        span = k * wc + (k - 1) * gap
        if style.dense:
            y = _dining_side_y(ctx, style, table, chair, side, span)
        else:
            y = side * (d / 2 + dc / 2 + ctx.u(0.0, 0.12))
        for i in range(k):
            x = -span / 2 + wc / 2 + i * (wc + gap)
            items.append(GroupItem(chair, pose_matrix((x, y, 0), 0.0 if side > 0 else math.pi)))
    if ctx.rng.random() < style.pick(0.3, 0.5):
        sx = 1 if ctx.rng.random() < 0.5 else -1
        extra = _gap(ctx, style.p_touch(0.3), 0.02, 0.12) if style.dense else ctx.u(0.0, 0.12)
        x = sx * (w / 2 + dc / 2 + extra)
        items.append(GroupItem(chair, pose_matrix((x, 0, 0), -sx * math.pi / 2)))
    return Group("dining", items, against_wall=False)


def _desk_chair(ctx: BuildContext, style: Arrangement, desk: ObjectModel, chair: ObjectModel
                ) -> np.ndarray:
    """Pose of the chair at a desk (desk frame): ``spaced`` a little way off; ``dense`` under
    the top between the panel and the drawers when it fits, else pushed against the desk."""
    dd = float(desk.size_m[1])
    wc, dc = (float(v) for v in chair.size_m[:2])
    if not style.dense:
        return pose_matrix((ctx.u(-0.1, 0.1), -(dd / 2 + dc / 2 + ctx.u(0.02, 0.2)), 0),
                           math.pi + ctx.u(-0.3, 0.3))
    knee = desk.knee_space
    slack = -1.0 if knee is None else (knee.x_range_m[1] - knee.x_range_m[0] - wc
                                       - 2 * LEG_CLEARANCE_M)
    if slack >= 0 and ctx.rng.random() < style.tuck_p:
        x = knee.x_range_m[0] + LEG_CLEARANCE_M + wc / 2 + ctx.u(0.0, slack)
        y0, y1 = knee.y_range_m
        t_in = _tuck_depth(ctx, chair, y1 - y0 - 0.05)
        return pose_matrix((x, y0 + t_in - dc / 2, 0), math.pi)
    turn = ctx.u(-0.3, 0.3)
    # half the turned chair's extent along y, so its nearest corner keeps the gap to the desk
    half_y = abs(math.sin(turn)) * wc / 2 + abs(math.cos(turn)) * dc / 2
    gap = _gap(ctx, style.p_touch(0.3), 0.02, 0.2)
    return pose_matrix((ctx.u(-0.1, 0.1), -(dd / 2 + half_y + gap), 0), math.pi + turn)


def group_desk(ctx: BuildContext, style: Arrangement) -> Group:
    """A desk at the wall with one or two monitors, a desk lamp and a mug; chair; maybe a bin."""
    desk = fb.build_desk(ctx)
    wd, dd = desk.size_m[:2]
    monitor = fb.build_monitor(ctx)
    two = ctx.rng.random() < style.pick(0.45, 0.7)
    n_mon = 2 if (two and 2 * monitor.size_m[0] < wd - 0.1) else 1
    tops = [TopRequest([monitor] * n_mon, arrangement="row",
                       gap_m=_gap(ctx, style.p_touch(0.6), 0.02, 0.08))]
    if ctx.rng.random() < 0.7:
        tops.append(TopRequest([fb.build_lamp(ctx, desk=True)]))
    if ctx.rng.random() < style.pick(0.8, 0.9):
        tops += _mugs(ctx, 2, style)
    items = [GroupItem(desk, np.eye(4), tops)]
    chair = fb.build_chair(ctx)
    items.append(GroupItem(chair, _desk_chair(ctx, style, desk, chair)))
    if ctx.rng.random() < 0.75:
        bin_ = fb.build_bin(ctx)
        side = 1 if ctx.rng.random() < 0.5 else -1
        x = side * (wd / 2 + bin_.size_m[0] / 2 + _gap(ctx, style.p_touch(0.5), 0.03, 0.15))
        items.append(GroupItem(bin_, pose_matrix((x, dd / 2 - bin_.size_m[1] / 2, 0))))
    return Group("desk", items, against_wall=True)


def _row(ctx: BuildContext, models: list[ObjectModel], p_touch: float, low: float, high: float
         ) -> list[GroupItem]:
    """Models side by side along x, backs aligned at the group's back (+y)."""
    gaps = [_gap(ctx, p_touch, low, high) for _ in models[1:]]
    span = sum(float(m.size_m[0]) for m in models) + sum(gaps)
    depth = max(float(m.size_m[1]) for m in models)
    items, x = [], -span / 2
    for i, m in enumerate(models):
        items.append(GroupItem(m, pose_matrix((x + m.size_m[0] / 2, depth / 2 - m.size_m[1] / 2,
                                               0))))
        x += float(m.size_m[0]) + (gaps[i] if i < len(gaps) else 0.0)
    return items


def group_storage(ctx: BuildContext, style: Arrangement) -> Group:
    """Two or three cabinets/shelves side by side (often identical and touching), with boxes,
    a plant or a lamp on them."""
    n = int(ctx.rng.integers(2, 4))
    models: list[ObjectModel] = []
    if ctx.rng.random() < style.pick(0.5, 0.7):
        kind = str(ctx.rng.choice(["cabinet", "shelf"]))
        unit = fb.BUILDERS[kind](ctx)
        models = [unit] * n
    else:
        models = [fb.BUILDERS[str(ctx.rng.choice(["cabinet", "shelf"]))](ctx) for _ in range(n)]
    items = _row(ctx, models, style.p_touch(0.6), 0.03, 0.2)
    for item in items:
        model = item.model
        if model.label == "cabinet" and model.size_m[2] < 1.4 and \
                ctx.rng.random() < style.pick(0.8, 0.95):
            choice = ctx.rng.random()
            top = (build_box(ctx, small=True) if choice < 0.4 else
                   fb.build_plant(ctx, small=True) if choice < 0.7 else
                   fb.build_lamp(ctx, desk=True))
            item.tops.append(TopRequest([top]))
        elif model.label == "shelf":
            for s in range(len(model.supports) - 1):
                if ctx.rng.random() < style.pick(0.5, 0.85):
                    count = int(ctx.rng.integers(1, 3 if not style.dense else 4))
                    boxes = [build_box(ctx, small=True) for _ in range(count)]
                    item.tops.append(TopRequest(boxes, surface=s, arrangement="row",
                                                gap_m=_gap(ctx, style.p_touch(0.5), 0.01, 0.1),
                                                trim=style.dense))
    return Group("storage", items, against_wall=True)


def group_lounge(ctx: BuildContext, style: Arrangement) -> Group:
    """A sofa at the wall, a coffee table in front, a floor lamp and maybe a plant beside it."""
    sofa = fb.build_sofa(ctx)
    ws, ds = sofa.size_m[:2]
    table = fb.build_table(ctx, "coffee")
    tops = _mugs(ctx, 2, style)
    if ctx.rng.random() < 0.3:
        tops.append(TopRequest([build_box(ctx, small=True)]))
    items = [GroupItem(sofa, np.eye(4)),
             GroupItem(table, pose_matrix((ctx.u(-0.1, 0.1), -(ds / 2 + ctx.u(0.3, 0.45)
                                                               + table.size_m[1] / 2), 0)), tops)]
    sides = [-1, 1]
    ctx.rng.shuffle(sides)
    if ctx.rng.random() < style.pick(0.75, 0.95):
        lamp = fb.build_lamp(ctx)
        x = sides[0] * (ws / 2 + lamp.size_m[0] / 2 + _gap(ctx, style.p_touch(0.3), 0.03, 0.2))
        items.append(GroupItem(lamp, pose_matrix((x, ds / 2 - lamp.size_m[1] / 2, 0))))
    if ctx.rng.random() < 0.5:
        plant = fb.build_plant(ctx)
        gap = _gap(ctx, style.p_touch(0.0), 0.02, 0.2) if style.dense else ctx.u(0.02, 0.2)
        x = sides[1] * (ws / 2 + plant.size_m[0] / 2 + gap)
        items.append(GroupItem(plant, pose_matrix((x, ds / 2 - plant.size_m[1] / 2, 0))))
    return Group("lounge", items, against_wall=True)


def group_bedroom(ctx: BuildContext, style: Arrangement) -> Group:
    """A bed with its head at the wall and one or two nightstands (with lamps) beside it."""
    bed = fb.build_bed(ctx)
    wb, lb = bed.size_m[:2]
    items = [GroupItem(bed, np.eye(4))]
    nightstand = fb.build_cabinet(ctx, nightstand=True)
    sides = [-1, 1] if ctx.rng.random() < 0.5 else [int(ctx.rng.choice([-1, 1]))]
    for side in sides:
        x = side * (wb / 2 + nightstand.size_m[0] / 2 + _gap(ctx, style.p_touch(0.5), 0.02, 0.1))
        tops = [TopRequest([fb.build_lamp(ctx, desk=True)])] if ctx.rng.random() < 0.8 else []
        if ctx.rng.random() < 0.3:
            tops += _mugs(ctx, 1, style)
        items.append(GroupItem(nightstand,
                               pose_matrix((x, lb / 2 - nightstand.size_m[1] / 2, 0)), tops))
    return Group("bedroom", items, against_wall=True)


def _stack(ctx: BuildContext, base: ObjectModel, levels: int) -> TopRequest:
    """``levels`` boxes stacked on ``base``: each the same box again (as moving boxes are) or
    another one no larger than the box below."""
    box = base if ctx.rng.random() < 0.5 else build_box(ctx, max_xy_m=tuple(base.size_m[:2]))
    on_top = [_stack(ctx, box, levels - 1)] if levels > 1 else []
    return TopRequest([box], arrangement="stack", on_top=on_top)


def group_boxes(ctx: BuildContext, style: Arrangement) -> Group:
    """Two to four boxes in a row, mostly touching, some with boxes on top (``dense``: stacks
    two or three high)."""
    boxes = [build_box(ctx) for _ in range(int(ctx.rng.integers(2, 5)))]
    items = _row(ctx, boxes, style.p_touch(0.65), 0.02, 0.1)
    for item in items:
        if style.dense:
            if ctx.rng.random() < style.stack_p:
                item.tops.append(_stack(ctx, item.model, int(ctx.rng.integers(1, 3))))
        elif ctx.rng.random() < 0.35:
            item.tops.append(TopRequest([build_box(ctx, small=True)], arrangement="center"))
    return Group("boxes", items, against_wall=True)


def group_chairs(ctx: BuildContext, style: Arrangement) -> Group:
    """Two or three identical chairs side by side, backs to the wall (mostly touching)."""
    chair = fb.build_chair(ctx)
    items = _row(ctx, [chair] * int(ctx.rng.integers(2, 4)), style.p_touch(0.5), 0.02, 0.1)
    return Group("chairs", items, against_wall=True)


def group_bins(ctx: BuildContext, style: Arrangement) -> Group:
    """Two to four waste/recycling bins in a row along a wall (often identical, touching)."""
    n = int(ctx.rng.integers(2, 5))
    if ctx.rng.random() < 0.6:
        bins = [fb.build_bin(ctx)] * n
    else:
        bins = [fb.build_bin(ctx) for _ in range(n)]
    return Group("bins", _row(ctx, bins, style.p_touch(0.5), 0.02, 0.1), against_wall=True)


def group_single(ctx: BuildContext, kind: str) -> Group:
    """One free-standing object (plant, bin, floor lamp, box or chair)."""
    builders = {"plant": lambda: fb.build_plant(ctx), "bin": lambda: fb.build_bin(ctx),
                "lamp": lambda: fb.build_lamp(ctx), "box": lambda: build_box(ctx),
                "chair": lambda: fb.build_chair(ctx)}
    model = builders[kind]()
    return Group(kind, [GroupItem(model, np.eye(4))], against_wall=ctx.rng.random() < 0.7)


def build_group(ctx: BuildContext, name: str, style: Arrangement = ARRANGEMENTS["spaced"]
                ) -> Group:
    """A group by template name (:data:`CORE_GROUPS`, :data:`FILLER_GROUPS`,
    :data:`DENSE_FILLERS`)."""
    templates = {"dining": group_dining, "desk": group_desk, "storage": group_storage,
                 "lounge": group_lounge, "bedroom": group_bedroom, "boxes": group_boxes,
                 "chairs": group_chairs, "bins": group_bins}
    if name in templates:
        return templates[name](ctx, style)
    return group_single(ctx, name)
