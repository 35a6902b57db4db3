"""The table of persistent map instances: ids, life cycle, label evidence and id resolution.

An id is never reused. When an instance is merged into another, or a never-confirmed candidate
is retired, its id keeps *resolving* to the survivor (or to the instance it was split from, or
to 0 = none), so voxels that still carry the old id need no rewrite: every read goes through
:meth:`InstanceTable.resolve_table`. Every id points at itself (alive), its survivor (merged) or
its parent (retired); pointers always lead to older ids, so following them terminates, and the
table is rebuilt by pointer jumping in a few vectorised steps however many ids exist.

Owns: :class:`InstanceRecord`, :class:`InstanceTable` (create, confirm, retire, merge, resolve,
serialise). Does not own: the association of segments to instances (``tracker.py``) or geometry.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

import numpy as np

from panoptic_mapper.core.types import NO_INSTANCE_ID


class InstanceStatus(str, enum.Enum):
    """Life cycle of a map instance."""

    CANDIDATE = "candidate"
    """Seen, but not often enough to be reported."""
    CONFIRMED = "confirmed"
    """Reported by the map."""
    RETIRED = "retired"
    """A candidate that was never confirmed; resolves to its parent (or none)."""
    MERGED = "merged"
    """Found to duplicate another instance; resolves to it."""


@dataclass
class InstanceRecord:
    """Book-keeping of one thing instance or stuff region."""

    id: int
    is_thing: bool
    label_evidence: np.ndarray
    """[C] float64 score-weighted label votes of the segments matched to it (channel 0 unused)."""
    status: InstanceStatus = InstanceStatus.CANDIDATE
    num_observations: int = 0
    """Frames in which a segment was associated with it."""
    first_frame: int = -1
    last_frame: int = -1
    """Index of the last frame in which it was observed."""
    parent_id: int = NO_INSTANCE_ID
    """Instance this candidate was split from; it resolves there if retired."""
    merged_into: int = NO_INSTANCE_ID
    bounds_min_m: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    """[3] running lower corner of its observed surface (world, axis-aligned)."""
    bounds_max_m: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))
    """[3] running upper corner of its observed surface."""

    @property
    def alive(self) -> bool:
        return self.status in (InstanceStatus.CANDIDATE, InstanceStatus.CONFIRMED)

    def label_distribution(self) -> np.ndarray:
        """[C] evidence normalised to sum 1 (all zeros when it has none)."""
        total = float(self.label_evidence.sum())
        return self.label_evidence / total if total > 0 else np.zeros_like(self.label_evidence)

    def best_channel(self) -> int:
        return int(np.argmax(self.label_evidence)) if self.label_evidence.any() else 0

    def to_dict(self) -> dict:
        return {"id": self.id, "is_thing": self.is_thing,
                "label_evidence": self.label_evidence.tolist(), "status": self.status.value,
                "num_observations": self.num_observations, "first_frame": self.first_frame,
                "last_frame": self.last_frame, "parent_id": self.parent_id,
                "merged_into": self.merged_into, "bounds_min_m": self.bounds_min_m.tolist(),
                "bounds_max_m": self.bounds_max_m.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "InstanceRecord":
        return cls(id=int(data["id"]), is_thing=bool(data["is_thing"]),
                   label_evidence=np.asarray(data["label_evidence"], np.float64),
                   status=InstanceStatus(data["status"]),
                   num_observations=int(data["num_observations"]),
                   first_frame=int(data["first_frame"]), last_frame=int(data["last_frame"]),
                   parent_id=int(data["parent_id"]), merged_into=int(data["merged_into"]),
                   bounds_min_m=np.asarray(data["bounds_min_m"], np.float64),
                   bounds_max_m=np.asarray(data["bounds_max_m"], np.float64))


class InstanceTable:
    """All instances ever created, indexed by id (ids start at 1 and are never reused)."""

    def __init__(self, num_channels: int):
        self.num_channels = int(num_channels)
        self.records: dict[int, InstanceRecord] = {}
        self.next_id = 1
        self._resolve: np.ndarray | None = None
        self._alive_ids: set[int] = set()
        self._points_to = np.zeros(64, np.int32)
        """Per id: itself (alive), the survivor (merged), the parent or 0 (retired)."""

    def create(self, is_thing: bool, frame_index: int, parent_id: int = NO_INSTANCE_ID,
               status: InstanceStatus = InstanceStatus.CANDIDATE) -> InstanceRecord:
        """A new instance with a fresh id."""
        record = InstanceRecord(id=self.next_id, is_thing=is_thing,
                                label_evidence=np.zeros(self.num_channels), status=status,
                                first_frame=frame_index, last_frame=frame_index,
                                parent_id=parent_id)
        self.records[record.id] = record
        self._alive_ids.add(record.id)
        self._point(record.id, record.id)
        self.next_id += 1
        self._resolve = None
        return record

    def _point(self, instance_id: int, target: int) -> None:
        if instance_id >= self._points_to.size:
            grown = np.zeros(max(2 * self._points_to.size, instance_id + 1), np.int32)
            grown[:self._points_to.size] = self._points_to
            self._points_to = grown
        self._points_to[instance_id] = target

    def get(self, instance_id: int) -> InstanceRecord:
        return self.records[int(instance_id)]

    def alive(self, things_only: bool = False) -> list[InstanceRecord]:
        """Candidates and confirmed instances, by id."""
        records = (self.records[i] for i in sorted(self._alive_ids))
        return [r for r in records if r.is_thing or not things_only]

    def set_status(self, instance_id: int, status: InstanceStatus) -> None:
        record = self.records[instance_id]
        record.status = status
        if record.alive:
            self._alive_ids.add(instance_id)
            self._point(instance_id, instance_id)
        else:
            self._alive_ids.discard(instance_id)
            self._point(instance_id, record.merged_into if status == InstanceStatus.MERGED
                        else record.parent_id)
        self._resolve = None

    def merge(self, keep_id: int, drop_id: int) -> None:
        """Fold ``drop_id`` into ``keep_id`` (evidence, observations, bounds)."""
        keep, drop = self.records[keep_id], self.records[drop_id]
        keep.label_evidence = keep.label_evidence + drop.label_evidence
        keep.num_observations += drop.num_observations
        keep.first_frame = min(keep.first_frame, drop.first_frame)
        keep.last_frame = max(keep.last_frame, drop.last_frame)
        keep.bounds_min_m = np.minimum(keep.bounds_min_m, drop.bounds_min_m)
        keep.bounds_max_m = np.maximum(keep.bounds_max_m, drop.bounds_max_m)
        if drop.status == InstanceStatus.CONFIRMED:
            keep.status = InstanceStatus.CONFIRMED
        drop.status = InstanceStatus.MERGED
        drop.merged_into = keep_id
        self._alive_ids.discard(drop_id)
        self._point(drop_id, keep_id)
        self._resolve = None

    def rename(self, current_id: int, wanted_id: int) -> None:
        """Serve the alive instance ``current_id`` as ``wanted_id`` (an id this table never
        used, e.g. one a map rebuilt after a loop correction inherits): a record under
        ``wanted_id`` takes its state and ``current_id`` resolves to it, so ids stored in voxels
        need no rewrite."""
        if wanted_id in self.records or wanted_id <= 0:
            raise ValueError(f"instance id {wanted_id} is in use or invalid")
        old = self.records[current_id]
        self.records[wanted_id] = dataclasses.replace(old, id=wanted_id)
        self._alive_ids.add(wanted_id)
        self._point(wanted_id, wanted_id)
        old.status = InstanceStatus.MERGED
        old.merged_into = wanted_id
        self._alive_ids.discard(current_id)
        self._point(current_id, wanted_id)
        self._resolve = None

    def add_alias(self, alias_id: int, target_id: int) -> None:
        """Record the unused id ``alias_id`` as merged into ``target_id`` (an id the planner
        saw for an object that a correction revealed to be ``target_id``)."""
        if alias_id in self.records or alias_id <= 0:
            raise ValueError(f"instance id {alias_id} is in use or invalid")
        target = self.records[target_id]
        self.records[alias_id] = InstanceRecord(
            id=alias_id, is_thing=target.is_thing, label_evidence=np.zeros(self.num_channels),
            status=InstanceStatus.MERGED, first_frame=target.first_frame,
            last_frame=target.first_frame, merged_into=target_id)
        self._point(alias_id, target_id)
        self._resolve = None

    def resolve_table(self) -> np.ndarray:
        """[next_id] int32: the id every stored id currently stands for (0 = none)."""
        if self._resolve is None:
            table = self._points_to[:self.next_id].copy()
            while True:
                jumped = table[table]
                if np.array_equal(jumped, table):
                    break
                table = jumped
            self._resolve = table
        return self._resolve

    def resolve(self, ids: np.ndarray) -> np.ndarray:
        """Resolve an array of stored ids (negative values are passed through)."""
        ids = np.asarray(ids)
        table = self.resolve_table()
        safe = np.clip(ids, 0, table.size - 1)
        return np.where(ids >= 0, table[safe], ids)

    def to_dict(self) -> dict:
        return {"next_id": self.next_id,
                "records": [r.to_dict() for r in sorted(self.records.values(),
                                                        key=lambda r: r.id)]}

    def load_dict(self, data: dict) -> None:
        self.records = {}
        for item in data["records"]:
            record = InstanceRecord.from_dict(item)
            if record.label_evidence.size != self.num_channels:
                raise ValueError(f"instance {record.id} has {record.label_evidence.size} label "
                                 f"channels, expected {self.num_channels}")
            self.records[record.id] = record
        self.next_id = int(data["next_id"])
        self._alive_ids = {i for i, r in self.records.items() if r.alive}
        self._points_to = np.zeros(max(64, self.next_id), np.int32)
        for record in self.records.values():
            target = (record.id if record.alive else record.merged_into
                      if record.status == InstanceStatus.MERGED else record.parent_id)
            self._points_to[record.id] = target
        self._resolve = None
