"""Fuse the kept frames again at corrected poses, and keep the instance ids the planner saw.

Why rebuild instead of de-integrating (BundleFusion) or moving submaps (panoptic_mapping,
voxgraph): a loop closure moves nearly every frame since the revisited place, so de-integrating
them costs as much as fusing them again, and the TSDF's running weight caps make exact
de-integration impossible anyway; submaps keep a loop's two passes in separate volumes, so the
doubled wall and the doubled object stay until something merges them, and every read must fuse
across submaps. A rebuild from the kept frames (``frame_store``) into a fresh map gives one
consistent volume, in time linear in the kept frames (bounded by ``max_frames``), and runs
beside live integration (``runtime/map_corrections``).

Instance ids (:func:`inherit_instance_ids`). The rebuilt map's tracker numbers its instances
above every old id (with headroom for the ids the live map creates meanwhile). For each kept
frame, the thing segments voted for old ids when first fused
and vote for new ids now; pairing them per segment weights each (new, old) pair by samples.
Every new instance then takes, among the reported (confirmed) old ids with a large enough share
of its votes, the one
the planner saw first (the smallest: ids are allocated in order) that no heavier instance took
already, so unaffected objects keep their id and objects that a correction reveals as one keep
the older id; the other old id is kept as an alias merged into it. Stuff regions keep theirs by
class.

ROS-free. Owns: :func:`rebuild_map`, :func:`inherit_instance_ids`, :class:`IdInheritance`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from panoptic_mapper.core.mapping.frame_store import StoredFrame
from panoptic_mapper.core.tracking.instances import InstanceStatus

MIN_VOTE_SHARE = 0.25
"""An old id is a candidate for a new instance holding at least this share of its votes for
reported old ids ..."""
MIN_TOTAL_SHARE = 0.05
"""... and at least this share of all its votes."""
ID_HEADROOM = 10_000
"""The rebuilt map numbers its instances from this far above the old map's next id: the old
map keeps integrating (and creating ids) while the rebuild runs, and the two must not collide."""


@dataclass
class IdInheritance:
    """What happened to the ids of the map before the rebuild."""

    kept: dict[int, int] = field(default_factory=dict)
    """Old id -> the rebuilt instance that serves it (renamed to it)."""
    merged: dict[int, int] = field(default_factory=dict)
    """Old id -> the old id it was merged into (the two were one object)."""
    fresh: list[int] = field(default_factory=list)
    """Confirmed rebuilt instances with no old id (new ids); candidates keep theirs."""


@dataclass
class RebuildReport:
    """One rebuild."""

    frames_fused: int = 0
    frames_rejected: int = 0
    ids: IdInheritance = field(default_factory=IdInheritance)


def rebuild_map(new_map, frames: Sequence[StoredFrame], T_world_cam: np.ndarray,  # noqa: N803
                old_map=None,
                before_frame: Callable[[], None] | None = None
                ) -> tuple[RebuildReport, list[np.ndarray]]:
    """Fuse ``frames`` at poses ``T_world_cam`` [K, 4, 4] into the empty ``new_map``.

    With ``old_map``, the new ids start
    above the old map's so that :func:`inherit_instance_ids` can give old ids back.
    ``before_frame`` is called before each frame (the caller may wait there).

    Returns:
        (report, per frame the instance votes [M, 3] of its fusion, empty if rejected).
    """
    tracker = getattr(new_map, "tracker", None)
    old_tracker = getattr(old_map, "tracker", None)
    if tracker is not None and old_tracker is not None:
        tracker.table.next_id = max(tracker.table.next_id,
                                    old_tracker.table.next_id + ID_HEADROOM)
    report = RebuildReport()
    votes: list[np.ndarray] = []
    for stored, T in zip(frames, T_world_cam):  # noqa: N806
        if before_frame is not None:
            before_frame()
        result = new_map.integrate_frame(stored.to_frame(T), stored.segmentation)
        if result.accepted:
            report.frames_fused += 1
        else:
            report.frames_rejected += 1
        votes.append(result.instance_votes if result.instance_votes is not None
                     else np.zeros((0, 3), np.int64))
    return report, votes


def inherit_instance_ids(old_map, new_map, frames: Sequence[StoredFrame],
                         new_votes: Sequence[np.ndarray]) -> IdInheritance:
    """Rename the rebuilt map's instances to the old ids they stand for (module docstring)."""
    result = IdInheritance()
    old_tracker = getattr(old_map, "tracker", None)
    tracker = getattr(new_map, "tracker", None)
    if old_tracker is None or tracker is None:
        return result
    old_table, table = old_tracker.table, tracker.table
    weights = _pair_weights(frames, new_votes, old_table, table)
    # the ids the planner saw: confirmed (reported) instances; candidates were never served
    old_alive = {r.id for r in old_table.alive(things_only=True)
                 if r.status == InstanceStatus.CONFIRMED}
    totals: dict[int, float] = defaultdict(float)
    for (new, _old), w in weights.items():
        totals[new] += w
    by_new: dict[int, dict[int, float]] = defaultdict(dict)
    for (new, old), w in weights.items():
        if old in old_alive:
            by_new[new][old] = w
    taken: set[int] = set()
    confirmed = [r for r in table.alive(things_only=True) if r.status == InstanceStatus.CONFIRMED]
    for record in sorted(confirmed, key=lambda r: -totals.get(r.id, 0.0)):
        candidates = by_new.get(record.id, {})
        reported = sum(candidates.values())
        share = {o: w for o, w in candidates.items()
                 if w >= MIN_VOTE_SHARE * reported and w >= MIN_TOTAL_SHARE * totals[record.id]
                 and o not in taken and o not in table.records}
        if not share:
            result.fresh.append(record.id)
            continue
        old = min(share)
        taken.add(old)
        result.kept[old] = record.id
    for old, new in result.kept.items():
        tracker.rename(new, old)
    # an old id that is not kept: merged into the kept id its votes mostly went to
    for old in sorted(old_alive - taken):
        votes = {new: w for (new, o), w in weights.items() if o == old}
        if not votes:
            continue
        winner = max(votes, key=votes.get)
        survivor = next((o for o, n in result.kept.items() if n == winner), None)
        if survivor is not None and survivor < old and old not in table.records:
            table.add_alias(old, survivor)
            result.merged[old] = survivor
    for channel, region in list(tracker.stuff_regions.items()):
        old = old_tracker.stuff_regions.get(channel)
        if old is not None and old != region and old not in table.records:
            tracker.rename(region, old)
    return result


def _pair_weights(frames: Sequence[StoredFrame], new_votes: Sequence[np.ndarray],
                  old_table, table) -> dict[tuple[int, int], float]:
    """(new id, old id) -> samples of segments that voted for both (ids resolved)."""
    weights: dict[tuple[int, int], float] = defaultdict(float)
    for stored, new in zip(frames, new_votes):
        old = stored.instance_votes
        if old.size == 0 or new.size == 0:
            continue
        old_ids = old_table.resolve(old[:, 1])
        new_ids = table.resolve(new[:, 1])
        for segment in np.intersect1d(old[:, 0], new[:, 0]):
            o_rows = old[:, 0] == segment
            n_rows = new[:, 0] == segment
            o_total = float(old[o_rows, 2].sum())
            for n_id, n_count in zip(new_ids[n_rows], new[n_rows, 2]):
                for o_id, o_count in zip(old_ids[o_rows], old[o_rows, 2]):
                    if n_id > 0 and o_id > 0:
                        weights[(int(n_id), int(o_id))] += float(n_count) * o_count / o_total
    return weights
