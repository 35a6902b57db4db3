"""The instant panoptic map: TSDF fusion with voted semantics and persistent instance ids.

Per accepted frame (``integrate_frame``):

1. Open3D ``VoxelBlockGrid`` TSDF + colour integration (``core/tsdf/grid.py``).
2. Pixels are sampled every ``voting.sample_stride_px`` pixels, back-projected with their depth,
   and mapped to the voxel they land on; a depth test against the fused TSDF keeps only samples
   whose voxel is on the fused surface.
3. Semantic soft voting of the 2D segmentation into those voxels (``core/labels/voting.py``).
4. Instance association: the map's instance ids under the samples (a cheap render by lookup) are
   matched to the frame's thing segments (``core/tracking/tracker.py``), then the associated ids
   are voted into the voxels (``core/tracking/instance_votes.py``). Stuff is one region per class.

Reading (``get_mesh``, ``get_instances``, ``query_labels``, ``render_labels``): a voxel's panoptic
label is its reported thing instance (with that instance's label) if it has one, else its voted
semantic label (with the stuff region id for stuff; void for a thing label without an instance,
by default). A point takes the support-weighted majority of the 8 voxels around it (trilinear
weights: the 2 voxels of its edge for a mesh vertex), else of the voxels within 2 voxels; mesh
vertices still unlabelled then copy the nearest labelled vertex within a few voxels
(``point_labels.py``). The mesh is updated incrementally: only the blocks around those
integrated since the last update are re-meshed (``core/tsdf/block_mesher.py``), and only the
vertices near voxels whose label key or support changed are labelled anew. Instances are
summarised with gravity-aligned boxes and a shading-robust colour
(``core/tracking/instance_geometry.py``). See ``docs/instant_map.md``.

Thread safety: one writer and any number of readers. Every public method holds one re-entrant
map lock, except the heavy part of a mesh update (marching cubes, stitching, labelling), which
runs on copies taken under it, serialised by a second lock, so that integration goes on.
Getters return snapshots (arrays that are replaced, never mutated, by later updates).

Owns: :class:`InstantMapConfig`, :class:`InstantPanopticMap` (the ``"instant"`` method of
``create_map``). The baselines in ``baselines.py`` subclass it and replace the instance layer.
"""
from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.geometry.camera import back_project, transform_points
from panoptic_mapper.core.io.ply import ColorMode, write_ply
from panoptic_mapper.core.labels.registry import LabelRegistry
from panoptic_mapper.core.labels.voting import (LabelChannels, PixelVotes, VotingConfig,
                                                boundary_distance_px, fuse_label_votes,
                                                labels_from_evidence, vote_weights)
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate
from panoptic_mapper.core.mapping.input_checks import (CheckedInput, FrameChecker,
                                                       InputChecksConfig)
from panoptic_mapper.core.mapping.point_labels import (VoxelKeyTable, changed_block_keys,
                                                       fill_from_neighbours, point_keys,
                                                       vertex_keys)
from panoptic_mapper.core.tracking.instance_geometry import (InstanceSummaryConfig,
                                                             summarize_groups)
from panoptic_mapper.core.tracking.instance_votes import fuse_instance_votes
from panoptic_mapper.core.tracking.instances import InstanceStatus
from panoptic_mapper.core.tracking.tracker import (UNMAPPED, InstanceTracker, ThingSegment,
                                                   TrackingConfig)
from panoptic_mapper.core.tsdf.block_mesher import BlockMesher, MeshDelta
from panoptic_mapper.core.tsdf.grid import (GridState, PanopticVoxelGrid, TsdfConfig,
                                            pack_block_keys, unpack_block_keys)
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import (NO_INSTANCE_ID, CameraIntrinsics,
                                        LabelRender, MapInstance, PanopticMesh,
                                        PanopticSegmentation2D, RgbdFrame,
                                        validate_query_points, validate_rigid_transform)

SAVE_FORMAT_VERSION = 1
_DIRTY_COMPACT_FRAMES = 32
_NEIGHBOURS = np.array([[x, y, z] for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)],
                       np.int64)


@dataclass
class MeshConfig(ConfigBase):
    """Mesh extraction."""

    weight_threshold: float = 3.0
    """Voxels integrated fewer times than this (TSDF weight) produce no surface."""
    min_instance_voxels: int = 0
    """Confirmed thing instances with fewer labelled voxels than this are not reported (their
    voxels count as unassigned)."""
    void_unassigned_things: bool = True
    """A voxel voted to a thing label but owned by no reported instance is void (so no
    instance-less thing segment appears; neighbours' labels fill it on the mesh), instead of
    keeping its label with instance 0."""
    fill_radius_voxels: float = 3.0
    """A vertex that no labelled voxel within 2 voxels reaches takes the label of the nearest
    labelled vertex within this many voxels (0 disables); fills the gaps between strided
    samples on far or grazing surfaces."""

    def validate(self) -> None:
        require(self.weight_threshold >= 0.0, "weight_threshold", self.weight_threshold,
                "must be >= 0")
        require(self.min_instance_voxels >= 0, "min_instance_voxels", self.min_instance_voxels,
                "must be >= 0")
        require(0.0 <= self.fill_radius_voxels <= 10.0, "fill_radius_voxels",
                self.fill_radius_voxels, "must be in [0, 10] voxels")


@dataclass
class InstantMapConfig(ConfigBase):
    """Everything the instant map can be tuned with (YAML nesting = these fields)."""

    tsdf: TsdfConfig = field(default_factory=TsdfConfig)
    """Voxel grid and TSDF integration."""
    voting: VotingConfig = field(default_factory=VotingConfig)
    """Per-pixel semantic votes and per-voxel fusion."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Persistent instance ids."""
    mesh: MeshConfig = field(default_factory=MeshConfig)
    """Mesh extraction."""
    instances: InstanceSummaryConfig = field(default_factory=InstanceSummaryConfig)
    """Instance boxes (gravity-aligned about the up axis) and colours."""
    input_checks: InputChecksConfig = field(default_factory=InputChecksConfig)
    """Which frames are integrated."""


@dataclass
class FrameSamples:
    """The sampled pixels of one frame that passed the depth test (one row each)."""

    voxels: np.ndarray
    """[N] int64 flat voxel index."""
    points_m: np.ndarray
    """[N, 3] world points."""
    segment_ids: np.ndarray
    """[N] int64 frame segment id (0 = none)."""
    depth_m: np.ndarray
    """[N] float32."""
    cos_incidence: np.ndarray
    """[N] float32."""
    edge_distance_px: np.ndarray
    """[N] float32."""


@dataclass(frozen=True)
class _LabelledMesh:
    """The labelled mesh of one map version, with what the next incremental update reuses."""

    version: int
    mesh: PanopticMesh
    raycaster: MeshRaycaster
    raw_keys: np.ndarray
    """[V] panoptic key of each vertex before filling from neighbours (0 = unlabelled)."""
    table: VoxelKeyTable
    """The voxel keys the vertices were labelled with."""


class InstantPanopticMap:
    """Online panoptic map (see module docstring); implements ``PanopticMap``."""

    method_name = "instant"

    def __init__(self, registry: LabelRegistry, config: InstantMapConfig | None = None):
        self.registry = registry
        self.config = config or InstantMapConfig()
        self.channels = LabelChannels(registry)
        self._lock = threading.RLock()
        self._mesh_lock = threading.RLock()
        self._build_state()

    @classmethod
    def from_config(cls, config: dict[str, Any] | InstantMapConfig | None,
                    registry: LabelRegistry) -> "InstantPanopticMap":
        """Build from a nested dict (YAML section), a config object or None (defaults)."""
        if isinstance(config, InstantMapConfig):
            return cls(registry, config)
        return cls(registry, InstantMapConfig.from_dict(config))

    def _build_state(self) -> None:
        cfg = self.config
        self.grid = PanopticVoxelGrid(cfg.tsdf, self.channels.count)
        self.tracker = InstanceTracker(cfg.tracking, self.registry, self.channels)
        self.checker = FrameChecker(cfg.input_checks, self.registry, cfg.tsdf.depth_min_m,
                                    cfg.tsdf.depth_max_m)
        self._frame_index = 0
        self._version = 0
        self._mesher = BlockMesher(cfg.mesh.weight_threshold, cfg.tsdf.block_resolution)
        self._mesh_pending: list[np.ndarray] = []
        self._remeshed: list[np.ndarray] = []
        self._mesh = PanopticMesh.empty()
        self._mesh_version = 0
        self._current: _LabelledMesh | None = None
        self._instances: tuple[int, list[MapInstance]] | None = None
        self._table: tuple[int, VoxelKeyTable] | None = None
        self._reported: tuple[int, np.ndarray] | None = None

    # ---- writing -------------------------------------------------------------------------------
    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Fuse one frame and its 2D segmentation (None: geometry only). Never raises on bad
        input: a rejected frame leaves the map unchanged and says why."""
        with self._lock:
            t_start = time.perf_counter()
            checked = self.checker.check(frame, segmentation)
            if not checked.accepted:
                return IntegrationReport(accepted=False, reason=checked.reject_reason,
                                         warnings=checked.warnings)
            blocks = self.grid.integrate(checked.depth_m, frame.rgb, frame.intrinsics,
                                         frame.T_world_cam)
            t_geometry = time.perf_counter()
            self.checker.accept(frame)
            self._mesh_pending.append(blocks)
            if len(self._mesh_pending) > _DIRTY_COMPACT_FRAMES:
                # Bounded memory even if nobody reads the mesh for hours.
                self._mesh_pending = [_unique_rows(np.concatenate(self._mesh_pending))]
            stats: dict[str, float] = {"num_blocks": float(self.grid.num_blocks),
                                       "geometry_ms": (t_geometry - t_start) * 1e3}
            votes = None
            if checked.segment_ids is not None:
                semantic_stats, votes = self._integrate_semantics(frame, checked)
                stats.update(semantic_stats)
            self._frame_index += 1
            self._version += 1
            stats["total_ms"] = (time.perf_counter() - t_start) * 1e3
            reason = "; ".join(checked.warnings)
            return IntegrationReport(accepted=True, reason=reason, warnings=checked.warnings,
                                     stats=stats, instance_votes=votes)

    def _sample(self, frame: RgbdFrame, checked: CheckedInput) -> FrameSamples:
        """Strided pixels with depth, back-projected, looked up and depth-tested."""
        stride = self.config.voting.sample_stride_px
        intr = frame.intrinsics
        rows = np.arange(stride // 2, intr.height, stride)
        cols = np.arange(stride // 2, intr.width, stride)
        z = checked.depth_m[np.ix_(rows, cols)]
        ids = checked.segment_ids[np.ix_(rows, cols)]
        cam = back_project(intr, cols[None, :], rows[:, None], z)  # [h, w, 3]
        cos = _incidence_cos(cam)
        edge = boundary_distance_px(ids, stride, max(self.config.voting.boundary_width_px,
                                                     float(stride)))
        valid = z > 0
        cam, z, ids, cos, edge = cam[valid], z[valid], ids[valid], cos[valid], edge[valid]
        world = transform_points(frame.T_world_cam, cam)
        voxels = self.grid.lookup(world)
        ok = voxels >= 0
        tsdf = self.grid.attribute("tsdf")
        weight = self.grid.attribute("weight")
        safe = np.where(ok, voxels, 0)
        delta = self.config.voting.visibility_delta_voxels / self.config.tsdf.trunc_voxels
        ok &= (weight[safe] > 0) & (np.abs(tsdf[safe]) <= delta)
        return FrameSamples(voxels=voxels[ok], points_m=world[ok],
                            segment_ids=ids[ok].astype(np.int64), depth_m=z[ok],
                            cos_incidence=cos[ok], edge_distance_px=edge[ok])

    def _integrate_semantics(self, frame: RgbdFrame, checked: CheckedInput
                             ) -> tuple[dict[str, float], np.ndarray]:
        """Vote labels and instances; returns (stats, the frame's instance votes [M, 3])."""
        t0 = time.perf_counter()
        samples = self._sample(frame, checked)
        segments = checked.segments
        size = max([0] + [s.id for s in segments]) + 1
        channel_lut = np.zeros(size, np.int64)
        score_lut = np.ones(size, np.float32)
        thing_lut = np.full(size, -1, np.int64)
        things: list[ThingSegment] = []
        for seg in segments:
            channel = int(self.channels.channel_of[seg.label_id])
            channel_lut[seg.id] = channel
            score_lut[seg.id] = seg.score
            if seg.is_thing:
                thing_lut[seg.id] = len(things)
                things.append(ThingSegment(seg.id, channel, seg.score))
            else:
                self.tracker.observe_stuff(channel, self._frame_index, seg.score)
        seg_ids = np.where(samples.segment_ids < size, samples.segment_ids, 0)
        channel = channel_lut[seg_ids]
        score = np.where(channel > 0, score_lut[seg_ids], 1.0).astype(np.float32)
        vcfg = self.config.voting
        weight = vote_weights(samples.depth_m, samples.cos_incidence, samples.edge_distance_px,
                              score, vcfg)
        weight = np.where(channel > 0, weight, weight * vcfg.background_vote_weight)
        fuse_label_votes(self.grid.attribute("label_evidence"), self.grid.attribute("label_mass"),
                         samples.voxels,
                         PixelVotes(channel=channel, p_label=score, weight=weight),
                         vcfg.count_cap)
        t1 = time.perf_counter()
        slot_ids = self.grid.attribute("instance_id")
        slot_weights = self.grid.attribute("instance_weight")
        resolve = self._resolve_table()
        raw = slot_ids[samples.voxels].astype(np.int64)
        map_id = np.where(slot_weights[samples.voxels] > 0,
                          resolve[np.clip(raw, 0, resolve.size - 1)], UNMAPPED)
        sample_thing = thing_lut[seg_ids]
        target, assoc_stats = self._instance_targets(things, sample_thing, map_id, samples)
        is_stuff = (channel > 0) & ~self.channels.is_thing[channel]
        target = np.where(is_stuff, NO_INSTANCE_ID, target)
        fuse_instance_votes(slot_ids, slot_weights, samples.voxels, target, weight,
                            self._resolve_table(), self.config.tracking.instance_count_cap)
        voted = target > 0
        pairs, counts = np.unique(np.stack([samples.segment_ids[voted],
                                            target[voted].astype(np.int64)], axis=1),
                                  axis=0, return_counts=True)
        t2 = time.perf_counter()
        return ({"num_samples": float(samples.voxels.size),
                 "voting_ms": (t1 - t0) * 1e3, "association_ms": (t2 - t1) * 1e3,
                 **assoc_stats}, np.column_stack([pairs, counts]).astype(np.int64))

    # ---- instance layer (replaced by the baselines) ----------------------------------------
    def _instance_targets(self, things: list[ThingSegment], sample_thing: np.ndarray,
                          map_id: np.ndarray, samples: FrameSamples
                          ) -> tuple[np.ndarray, dict[str, float]]:
        """Instance id each sample votes for (``NO_VOTE`` = none), plus stats."""
        assoc = self.tracker.associate(self._frame_index, things, sample_thing, map_id,
                                       samples.points_m)
        return assoc.sample_instance, {"num_matched": float(assoc.num_matched),
                                       "num_new_instances": float(assoc.num_new),
                                       "num_splits": float(assoc.num_splits)}

    def _resolve_table(self) -> np.ndarray:
        """Stored instance id -> current id."""
        return self.tracker.table.resolve_table()

    def _voxel_instances(self, flat: np.ndarray, channel: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Panoptic decision for voxels: (label channel [M], instance id [M]).

        A reported thing instance wins (its label too); otherwise the voxel keeps its semantic
        channel, with the stuff region id for stuff, and for things no instance (or void, with
        ``mesh.void_unassigned_things``).
        """
        inst = self._slot_instances(flat)
        lut_channel = self._reported_instances()
        inst = np.where(inst < lut_channel.size, inst, 0)
        reported = lut_channel[inst] > 0
        fallback = channel
        if self.config.mesh.void_unassigned_things:
            fallback = np.where(self.channels.is_thing[channel], 0, channel)
        out_channel = np.where(reported, lut_channel[inst], fallback)
        out_inst = np.where(reported, inst, self._stuff_lut()[out_channel])
        return out_channel, out_inst

    def _slot_instances(self, flat: np.ndarray) -> np.ndarray:
        """[M] current instance id held by voxels (0 where none)."""
        resolve = self._resolve_table()
        raw = self.grid.attribute("instance_id")[flat].astype(np.int64)
        has = self.grid.attribute("instance_weight")[flat] > 0
        return np.where(has, resolve[np.clip(raw, 0, resolve.size - 1)], 0)

    def _reported_instances(self) -> np.ndarray:
        """[K] label channel of each reported thing instance id (0 = not reported): confirmed,
        labelled, and owning at least ``mesh.min_instance_voxels`` labelled voxels."""
        if self._reported is not None and self._reported[0] == self._version:
            return self._reported[1]
        size = self.tracker.table.next_id
        lut = np.zeros(size, np.int64)
        for record in self.tracker.table.alive(things_only=True):
            if record.status == InstanceStatus.CONFIRMED:
                lut[record.id] = record.best_channel()
        minimum = self.config.mesh.min_instance_voxels
        if minimum > 0:
            counts = np.bincount(self._slot_instances(self._labelled_voxels()), minlength=size)
            lut[counts[:size] < minimum] = 0
        self._reported = (self._version, lut)
        return lut

    def _stuff_lut(self) -> np.ndarray:
        """[C] stuff region id per channel (0 for thing channels and unseen stuff)."""
        lut = np.zeros(self.channels.count, np.int64)
        for channel, region in self.tracker.stuff_regions.items():
            lut[channel] = region
        return lut

    def _describe(self, record: tuple[np.ndarray, int, int] | None,
                  voxel_channels: np.ndarray) -> dict[str, Any]:
        """Label fields of one reported instance from its thing record (label distribution,
        best channel, observations; None for a stuff region) and its voxels' channels."""
        if record is not None:
            dist, channel, observations = record
        else:
            counts = np.bincount(voxel_channels, minlength=self.channels.count).astype(float)
            counts[0] = 0.0
            dist = counts / max(counts.sum(), 1.0)
            channel, observations = int(np.argmax(counts)), 0
        return {"channel": channel, "confidence": float(dist[channel]),
                "distribution": {int(self.channels.label_ids[c]): float(p)
                                 for c, p in enumerate(dist) if c > 0 and p > 0},
                "num_observations": observations}

    # ---- reading -------------------------------------------------------------------------------
    def _voxel_panoptic(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(label channel [M], instance id [M], support [M]) of allocated voxels."""
        evidence = self.grid.attribute("label_evidence")[flat]
        labels = labels_from_evidence(evidence, self.channels,
                                      self.config.voting.min_label_fraction)
        channel, inst = self._voxel_instances(flat, labels.channel)
        support = np.where(channel > 0, self.grid.attribute("label_mass")[flat], 0.0)
        return channel, inst, support

    def _labelled_voxels(self) -> np.ndarray:
        """[M] flat indices of the voxels that hold label evidence."""
        flat = self.grid.active_flat_indices()
        return flat[self.grid.attribute("label_mass")[flat] > 0]

    def _voxel_table(self) -> VoxelKeyTable:
        """Panoptic key (``channel << 32 | instance``) and support of every voxel slot of the
        grid (0 where unlabelled), cached per map version; a snapshot that later integration
        does not change (the arrays are replaced, never written again)."""
        if self._table is None or self._table[0] != self._version:
            size = self.grid.capacity * self.grid.voxels_per_block
            keys = np.zeros(size, np.int64)
            support = np.zeros(size, np.float32)
            flat = self._labelled_voxels()
            channel, inst, sup = self._voxel_panoptic(flat)
            keys[flat] = (channel << 32) | inst
            support[flat] = sup
            table = VoxelKeyTable(keys=keys, support=support, blocks=self.grid.block_index(),
                                  voxel_size_m=self.config.tsdf.voxel_size_m)
            self._table = (self._version, table)
        return self._table[1]

    def _split_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = self.channels.label_ids[keys >> 32].astype(np.int32)
        return labels, (keys & 0xFFFFFFFF).astype(np.int32)

    def _labelled_mesh(self) -> _LabelledMesh:
        """The labelled mesh of the current map version, brought up to date if needed.

        The caller holds ``_mesh_lock`` (one mesh update at a time). The map lock is held only
        to copy what the update reads (the changed blocks' geometry, the voxel key table);
        marching cubes, stitching and labelling run without it, so integration goes on.
        """
        with self._lock:
            current = self._current
            if current is not None and current.version == self._version:
                return current
            mesher, version = self._mesher, self._version
            changed = _unique_rows(np.concatenate(self._mesh_pending)) \
                if self._mesh_pending else np.zeros((0, 3), np.int32)
            self._mesh_pending = []
            job = mesher.plan(self.grid, changed)
            table = self._voxel_table()
        try:
            delta = mesher.apply(job.run())
        except BaseException:
            mesher.initialized = False  # the changed blocks were taken: re-mesh all next time
            raise
        keys = self._vertex_keys(delta, current, table)
        labels, instances = self._split_keys(fill_from_neighbours(
            delta.mesh.vertices_m, keys,
            self.config.mesh.fill_radius_voxels * self.config.tsdf.voxel_size_m))
        mesh = PanopticMesh(delta.mesh.vertices_m, delta.mesh.triangles, delta.mesh.colors,
                            labels, instances)
        result = _LabelledMesh(version, mesh, MeshRaycaster(mesh), keys, table)
        with self._lock:
            if self._mesher is mesher:  # else the map was reset or loaded meanwhile
                self._current = result
                self._remeshed.append(delta.affected_block_keys)
        return result

    def _vertex_keys(self, delta: MeshDelta, previous: _LabelledMesh | None,
                     table: VoxelKeyTable) -> np.ndarray:
        """[V] panoptic keys (before filling) of the vertices of an updated mesh: kept from
        ``previous`` for a vertex that existed and whose voxels within 2 voxels hold the same
        keys and support as then, computed anew for the others."""
        vertices = delta.mesh.vertices_m
        relabel = np.ones(vertices.shape[0], bool)
        if previous is not None and not delta.full:
            changed = changed_block_keys(previous.table, table)
            if changed is not None:
                # A vertex reads voxels up to 2 voxels from its cell: its block's neighbours.
                near = unpack_block_keys(changed).astype(np.int64)[:, None, :] + _NEIGHBOURS
                region = np.unique(pack_block_keys(near.reshape(-1, 3)))
                shift = self.config.tsdf.block_resolution.bit_length() - 1
                cell = np.floor(vertices.astype(np.float64)
                                / self.config.tsdf.voxel_size_m).astype(np.int64)
                blocks = pack_block_keys(cell >> shift)
                pos = np.minimum(np.searchsorted(region, blocks), max(region.size - 1, 0))
                in_region = region[pos] == blocks if region.size else np.zeros(blocks.size, bool)
                relabel = (delta.previous_index < 0) | in_region
        keys = np.zeros(vertices.shape[0], np.int64)
        kept = ~relabel
        keys[kept] = previous.raw_keys[delta.previous_index[kept]] if kept.any() else 0
        keys[relabel] = vertex_keys(table, vertices[relabel])
        return keys

    def update_mesh(self) -> MeshUpdate:
        """Bring the mesh up to date if the map changed, re-meshing only the blocks whose
        triangles can have changed (those integrated since, and their neighbours at -1 along
        each axis); reports those blocks. Vertex labels may also have changed elsewhere, e.g.
        after an instance merge. Integration can go on while the mesh is computed."""
        with self._mesh_lock:
            current = self._labelled_mesh()
            with self._lock:
                if self._current is not current:  # reset or loaded meanwhile
                    return MeshUpdate(changed=False, num_vertices=self._mesh.num_vertices,
                                      num_triangles=self._mesh.num_triangles)
                changed = self._mesh_version != current.version
                remeshed = np.unique(np.concatenate(self._remeshed)) if self._remeshed \
                    else np.zeros(0, np.int64)
                self._remeshed = []
                self._mesh = current.mesh
                self._mesh_version = current.version
            return MeshUpdate(changed=changed, changed_block_ids=unpack_block_keys(remeshed),
                              num_vertices=current.mesh.num_vertices,
                              num_triangles=current.mesh.num_triangles)

    def get_mesh(self) -> PanopticMesh:
        """The mesh as of the last ``update_mesh`` (read-only snapshot)."""
        with self._lock:
            return self._mesh

    def get_instances(self) -> list[MapInstance]:
        """Confirmed thing instances and stuff regions that own at least one voxel, by id.

        Only the copies of what they read are taken under the map lock (the voxel key table of
        this version, which the mesh update shares, the labelled voxels' positions and colours,
        the instance records); the summaries (boxes, colours) are computed without it, so that
        integration goes on."""
        with self._lock:
            version = self._version
            if self._instances is not None and self._instances[0] == version:
                return list(self._instances[1])
            table = self._voxel_table()
            flat = np.flatnonzero(table.keys)
            positions = self.grid.voxel_positions(flat)
            colors = self.grid.attribute("color")[flat]
            records = {record.id: (record.label_distribution(), record.best_channel(),
                                   record.num_observations)
                       for record in self.tracker.table.alive(things_only=True)}
        keys = table.keys[flat]
        channel, inst = keys >> 32, keys & 0xFFFFFFFF
        groups = summarize_groups(inst, positions, colors, self.config.tsdf.voxel_size_m,
                                  self.config.instances)
        out: list[MapInstance] = []
        for instance_id in sorted(groups):
            geometry = groups[instance_id]
            desc = self._describe(records.get(instance_id), channel[inst == instance_id])
            if desc["channel"] == 0:
                continue
            label = self.registry.by_id(int(self.channels.label_ids[desc["channel"]]))
            out.append(MapInstance(
                id=int(instance_id), label=label.name, label_id=label.id,
                is_thing=label.is_thing, confidence=desc["confidence"],
                centroid_m=geometry.centroid_m, bbox=geometry.bbox,
                num_observations=int(desc["num_observations"]),
                label_distribution=desc["distribution"], num_voxels=geometry.num_voxels,
                mean_color_rgb=geometry.color_rgb))
        with self._lock:
            if self._version == version:
                self._instances = (version, out)
        return list(out)

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label ids [N] int32, instance ids [N] int32) at world points [N, 3]; 0 where the map
        knows nothing. Raises ``InvalidInputError`` for non-finite or mis-shaped input."""
        points = validate_query_points(points_m)
        with self._lock:
            table = self._voxel_table()
        return self._split_keys(point_keys(table, points))

    def render_labels(self, T_world_cam: np.ndarray,  # noqa: N803
                      intrinsics: CameraIntrinsics) -> LabelRender:
        """Raycast the current map (mesh of the current state) into a camera."""
        T = validate_rigid_transform(T_world_cam, "T_world_cam")  # noqa: N806
        with self._mesh_lock:
            raycaster = self._labelled_mesh().raycaster
        return raycaster.render(T, intrinsics)

    def export_ply(self, path: str | Path, color_mode: ColorMode = "rgb") -> Path:
        """Write the mesh of the last ``update_mesh`` as a PLY with per-vertex colour,
        ``label_id`` and ``instance_id`` (readable by Open3D and MeshLab); returns the path.

        ``color_mode``: ``"rgb"`` (fused colour), ``"semantic"`` or ``"instance"`` colours.
        """
        return write_ply(path, self.get_mesh(), color_mode=color_mode, registry=self.registry)

    def finalize(self) -> None:
        """End of sequence: retire the candidates that were never confirmed."""
        with self._lock:
            self.tracker.finalize()
            self._version += 1

    def reset(self) -> None:
        """Forget everything (configuration kept)."""
        with self._lock:
            self._build_state()

    @property
    def num_frames(self) -> int:
        """Frames integrated so far."""
        return self._frame_index

    @property
    def last_frame_stamp_ns(self) -> int:
        """Stamp of the last frame integrated (0 = none)."""
        return int(self.checker.last_stamp_ns)

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the full state (grid, instances, checks) to one ``.npz`` file."""
        with self._lock:
            state = self.grid.export_state()
            meta = {"format_version": SAVE_FORMAT_VERSION, "method": self.method_name,
                    "config": self.config.to_dict(),
                    "label_ids": self.channels.label_ids.tolist(),
                    "frame_index": self._frame_index, "version": self._version,
                    "tracker": self.tracker.to_dict(), "checker": self.checker.to_dict(),
                    "extra": self._extra_state()}
            arrays = {f"grid_{name}": arr for name, arr in state.attributes.items()
                      if name != "label_evidence"}
            # Few voxels hold label evidence: store those rows only.
            evidence = state.attributes["label_evidence"].reshape(-1, self.channels.count)
            rows = np.flatnonzero(evidence.any(axis=1))
            arrays["label_rows"] = rows
            arrays["label_values"] = evidence[rows]
            buffer = io.BytesIO()
            np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                     block_keys=state.block_keys, **arrays)
        Path(path).write_bytes(buffer.getvalue())

    def load(self, path: str | Path) -> None:
        """Replace the state with one written by :meth:`save` (the saved configuration too).

        Raises :class:`DataFormatError` if the file is missing, of another method or written
        for another label registry; the current state is then kept.
        """
        path = Path(path)
        if not path.is_file():
            raise DataFormatError("path", str(path), "map file not found", kind="map_file")
        try:
            with np.load(path) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                self._check_saved_meta(meta)
                config = InstantMapConfig.from_dict(meta["config"])
                keys = data["block_keys"]
                attrs = {name[5:]: data[name] for name in data.files if name.startswith("grid_")}
                res = config.tsdf.block_resolution
                evidence = np.zeros((keys.shape[0] * res ** 3, self.channels.count), np.float32)
                evidence[data["label_rows"]] = data["label_values"]
                attrs["label_evidence"] = evidence.reshape(keys.shape[0], res, res, res,
                                                           self.channels.count)
            # Rebuild in a fresh map and swap only once everything loaded.
            fresh = type(self)(self.registry, config)
            fresh.grid.import_state(GridState(block_keys=keys, attributes=attrs))
            fresh.tracker.load_dict(meta["tracker"])
            fresh.checker.load_dict(meta["checker"])
            fresh._load_extra_state(meta.get("extra", {}))
            fresh._frame_index = int(meta["frame_index"])
            fresh._version = int(meta["version"])
        except DataFormatError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataFormatError("path", str(path), f"not a readable map file: {exc}",
                                  kind="map_file") from exc
        with self._lock:
            locks = self._lock, self._mesh_lock
            self.__dict__.update(fresh.__dict__)
            self._lock, self._mesh_lock = locks

    def _check_saved_meta(self, meta: dict[str, Any]) -> None:
        if meta.get("format_version") != SAVE_FORMAT_VERSION:
            raise DataFormatError("format_version", meta.get("format_version"),
                                  f"unsupported map file version (expected "
                                  f"{SAVE_FORMAT_VERSION})", kind="map_file")
        if meta.get("method") != self.method_name:
            raise DataFormatError("method", meta.get("method"),
                                  f"file holds a '{meta.get('method')}' map, not "
                                  f"'{self.method_name}'", kind="map_file")
        if meta.get("label_ids") != self.channels.label_ids.tolist():
            raise DataFormatError("label_ids", meta.get("label_ids"),
                                  "map was built with another label registry", kind="map_file")

    def _extra_state(self) -> dict[str, Any]:
        """Subclass state to save (JSON-able)."""
        return {}

    def _load_extra_state(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` wrote."""


def _unique_rows(block_keys: np.ndarray) -> np.ndarray:
    """Distinct rows of an [N, 3] int32 block-key array, sorted (x, y, z)."""
    return unpack_block_keys(np.unique(pack_block_keys(block_keys)))


def _incidence_cos(cam: np.ndarray) -> np.ndarray:
    """|cos| of the angle between the depth-image normal and the viewing ray, [h, w].

    Normals come from central differences of the back-projected grid ``cam`` [h, w, 3]; where a
    neighbour has no depth the factor is 1 (no information, no penalty).
    """
    h, w, _ = cam.shape
    out = np.ones((h, w), np.float32)
    if h < 3 or w < 3:
        return out
    cam = cam.astype(np.float32, copy=False)
    du = cam[1:-1, 2:] - cam[1:-1, :-2]
    dv = cam[2:, 1:-1] - cam[:-2, 1:-1]
    nx = du[..., 1] * dv[..., 2] - du[..., 2] * dv[..., 1]
    ny = du[..., 2] * dv[..., 0] - du[..., 0] * dv[..., 2]
    nz = du[..., 0] * dv[..., 1] - du[..., 1] * dv[..., 0]
    ray = cam[1:-1, 1:-1]
    num = np.abs(nx * ray[..., 0] + ny * ray[..., 1] + nz * ray[..., 2])
    den2 = (nx * nx + ny * ny + nz * nz) * (ray * ray).sum(axis=-1)
    z = cam[..., 2]
    valid = ((z[1:-1, 2:] > 0) & (z[1:-1, :-2] > 0) & (z[2:, 1:-1] > 0) & (z[:-2, 1:-1] > 0)
             & (den2 > 0))
    out[1:-1, 1:-1] = np.where(valid, num / np.sqrt(np.where(valid, den2, 1.0)), 1.0)
    return out
