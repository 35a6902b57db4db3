"""Baseline panoptic maps for comparisons in the same evaluation run.

Both share the instant map's geometry and semantic voting (they subclass
:class:`InstantPanopticMap`) and replace only its instance layer:

* :class:`PerFrameLiftingMap` (``"per_frame"``): no association. Each frame's thing segment ids
  are voted into the voxels as they come, so one object carries whatever id the last frames gave
  it, and unrelated objects share ids.
* :class:`ConnectedComponentsMap` (``"components"``): no instance votes at all. Instances are the
  connected components (26-neighbourhood) of labelled voxels that share a thing label,
  recomputed whenever the map is read; ids are therefore not stable over time, and touching
  objects of one class become one instance.

In both, stuff is one region per stuff class, with ids ``STUFF_ID_BASE + channel`` so that they
never collide with thing ids.

Owns: the two baselines. Does not own: TSDF, voting, I/O (inherited).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from panoptic_mapper.core.labels.voting import labels_from_evidence
from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap, FrameSamples
from panoptic_mapper.core.tracking.tracker import NO_VOTE, ThingSegment

STUFF_ID_BASE = 1 << 24
"""Stuff region id of channel ``c`` in the baselines: ``STUFF_ID_BASE + c``."""

MIN_COMPONENT_VOXELS = 10
"""Connected components smaller than this (voxels) get no instance id."""

# The 13 "forward" offsets of the 26-neighbourhood (each undirected edge is found once).
_FORWARD_OFFSETS = np.array([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                             for dz in (-1, 0, 1) if (dx, dy, dz) > (0, 0, 0)], np.int64)


class _BaselineMixin:
    """Stuff ids shared by the baselines (they have no thing records: an instance's label is
    the majority of its voxels', as for a stuff region of the instant map)."""

    channels: Any

    def _stuff_lut(self) -> np.ndarray:
        lut = np.where(self.channels.is_thing, 0, STUFF_ID_BASE + np.arange(self.channels.count))
        lut[0] = 0
        return lut


class PerFrameLiftingMap(_BaselineMixin, InstantPanopticMap):
    """Baseline (a): per-frame lifting, each frame's segment ids kept as they come."""

    method_name = "per_frame"

    def _build_state(self) -> None:
        super()._build_state()
        self._max_raw_id = 0

    def _instance_targets(self, things: list[ThingSegment], sample_thing: np.ndarray,
                          map_id: np.ndarray, samples: FrameSamples
                          ) -> tuple[np.ndarray, dict[str, float]]:
        ids = np.array([t.segment_id for t in things] + [NO_VOTE], np.int64)
        target = ids[np.where(sample_thing >= 0, sample_thing, len(things))]
        if things:
            self._max_raw_id = max(self._max_raw_id, int(ids[:-1].max()))
        return target, {}

    def _resolve_table(self) -> np.ndarray:
        return np.arange(self._max_raw_id + 1, dtype=np.int32)

    def _voxel_instances(self, flat: np.ndarray, channel: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        raw = self.grid.attribute("instance_id")[flat].astype(np.int64)
        has = self.grid.attribute("instance_weight")[flat] > 0
        thing = self.channels.is_thing[channel]
        inst = np.where(thing & has, raw, self._stuff_lut()[channel])
        return channel, inst

    def _extra_state(self) -> dict[str, Any]:
        return {"max_raw_id": self._max_raw_id}

    def _load_extra_state(self, data: dict[str, Any]) -> None:
        self._max_raw_id = int(data.get("max_raw_id", 0))


class ConnectedComponentsMap(_BaselineMixin, InstantPanopticMap):
    """Baseline (b): semantic voting, instances = connected components of same-label voxels."""

    method_name = "components"

    def _build_state(self) -> None:
        super()._build_state()
        self._components: tuple[int, np.ndarray, np.ndarray] | None = None

    def _instance_targets(self, things: list[ThingSegment], sample_thing: np.ndarray,
                          map_id: np.ndarray, samples: FrameSamples
                          ) -> tuple[np.ndarray, dict[str, float]]:
        return np.full(sample_thing.shape, NO_VOTE, np.int64), {}

    def _component_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted flat indices [M], component id [M]) of labelled thing voxels."""
        if self._components is None or self._components[0] != self._version:
            flat = self._labelled_voxels()
            labels = labels_from_evidence(self.grid.attribute("label_evidence")[flat],
                                          self.channels, self.config.voting.min_label_fraction)
            thing = self.channels.is_thing[labels.channel]
            flat, channel = flat[thing], labels.channel[thing]
            order = np.argsort(flat)
            flat, channel = flat[order], channel[order]
            coords = np.rint(self.grid.voxel_positions(flat)
                             / self.config.tsdf.voxel_size_m).astype(np.int64)
            self._components = (self._version, flat, _components(coords, channel))
        return self._components[1], self._components[2]

    def _voxel_instances(self, flat: np.ndarray, channel: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        table_flat, table_ids = self._component_table()
        inst = self._stuff_lut()[channel]
        if table_flat.size:
            pos = np.clip(np.searchsorted(table_flat, flat), 0, table_flat.size - 1)
            hit = table_flat[pos] == flat
            inst = np.where(hit & self.channels.is_thing[channel], table_ids[pos], inst)
        return channel, inst


def _components(coords: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Component id (1-based, 0 for components under ``MIN_COMPONENT_VOXELS``) of voxels with
    integer coordinates [M, 3], connecting 26-neighbours of the same channel [M]. Ids are
    numbered in the order of each component's first voxel in (x, y, z) order, so they do not
    depend on the input order."""
    n = coords.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    lo = coords.min(axis=0) - 1
    span = coords.max(axis=0) - lo + 2
    keys = _pack(coords, lo, span)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    rows, cols = [], []
    for offset in _FORWARD_OFFSETS:
        probe = _pack(coords + offset, lo, span)
        pos = np.clip(np.searchsorted(sorted_keys, probe), 0, n - 1)
        match = sorted_keys[pos] == probe
        a = np.flatnonzero(match)
        b = order[pos[match]]
        same = channel[a] == channel[b]
        rows.append(a[same])
        cols.append(b[same])
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(rows_all.size, np.int8), (rows_all, cols_all)), shape=(n, n))
    num, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=num)
    first_key = np.full(num, np.iinfo(np.int64).max)
    np.minimum.at(first_key, comp, keys)
    rank = np.empty(num, np.int64)
    rank[np.argsort(first_key)] = np.arange(num)
    big = sizes >= MIN_COMPONENT_VOXELS
    new_id = np.zeros(num, np.int64)
    kept = np.flatnonzero(big)
    new_id[kept[np.argsort(rank[kept])]] = np.arange(1, kept.size + 1)
    return new_id[comp]


def _pack(coords: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    """One int64 key per integer coordinate [N, 3] inside the box ``lo + [0, span)``."""
    c = coords - lo
    return (c[:, 0] * span[1] + c[:, 1]) * span[2] + c[:, 2]
