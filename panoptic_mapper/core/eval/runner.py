"""The evaluation runner: feed a recorded sequence to several maps side by side and score them.

>>> result = evaluate("scene_dir", [MethodSpec("instant"), MethodSpec("per_frame")])
>>> result.methods["instant"].panoptic.pq

For every frame of the source (a dataset folder, a bag, or an in-memory :class:`EvalSource`),
every method's map integrates the frame and its 2D segmentation; each call is timed. At the end
each map is finalized and meshed, then scored on:

* evaluated frames (every ``eval_every``-th frame; by default chosen so that about
  ``target_eval_frames`` frames are scored): the map's ``render_labels`` at the frame's pose
  against the ground-truth images -> scene-level PQ/SQ/RQ/PQ_th/PQ_st and 2D mIoU/mAcc, and
  against the observed depth -> depth consistency (always, needs no labels);
* the ground-truth mesh, when there is one: points sampled on it (restricted by default to the
  surface the camera observed) get the label/instance of the nearest predicted mesh vertex ->
  3D mIoU/mAcc, mCov/mW-Cov; and accuracy/completion/Chamfer-L1/precision/recall/F1.

The 2D input segmentation itself is scored on the same frames (image-wise PQ, mIoU), as the
reference point for what the maps add.

With ``poses="estimated"`` the maps integrate every frame at the pose a (simulated) SLAM system
estimated for it (``pose_estimated/`` of a ``make-scene --pose-drift`` scene) instead of the true
one, while rendering for scoring and the observed-surface culling keep the true poses: the
scores then show what pose drift costs the map. With ``corrections="apply"`` (the default) the
scene's loop corrections (``loop_corrections.json``) are applied as a node applies them: the maps
that can (the instant map, fed through the runtime's ``CorrectedMap``: a map session keeping its
frames, and its corrector) rebuild at the corrected keyframe poses before integrating the first
frame stamped at or after a correction's publication; each correction's cost is recorded in
``MethodResult.corrections``. ``corrections="ignore"`` feeds the estimate alone.

Owns: the run loop, frame selection, timing, and turning maps' outputs into metric inputs.
Does not own: metric definitions (``metrics.py``), file formats (``core/io``), reports
(``report.py``) or any map (``core/mapping``).
"""
from __future__ import annotations

import importlib
import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError, DataFormatError, InvalidInputError
from panoptic_mapper.core.eval.metrics import (
    DEFAULT_ROBUST_FRACTION, ConfusionMatrix, DepthConsistency, DepthConsistencyAccumulator,
    GeometryScores, ImageWisePanopticQuality, InstanceCoverage, PanopticImage, PanopticQuality,
    SemanticScores, geometry_scores, image_wise_panoptic_quality, instance_coverage,
    panoptic_image_from_segmentation, scene_panoptic_quality)
from panoptic_mapper.core.eval.surface import (VisibilityAccumulator, closest_surface_points,
                                               point_to_mesh_distance_m, sample_surface)
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import PanopticMap, create_map
from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap
from panoptic_mapper.core.mapping.pose_corrections import KeyframeCorrection
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, GroundTruthLabels,
                                        LoopCorrection, PanopticMesh)

LOGGER = logging.getLogger(__name__)
UNKNOWN_LENGTH_EVAL_EVERY = 10
"""``eval_every`` used when the number of frames is not known in advance (some bags)."""
MAX_WARNINGS_KEPT = 20
"""Distinct integration warnings kept per method in the result."""
CORRECTED_MAP = "panoptic_mapper.runtime.corrected_map:CorrectedMap"
"""What makes an instant map follow loop corrections (a runtime object, resolved by name like the
``refined`` method of ``create_map``: the core does not import the runtime)."""


@dataclass
class EvalConfig(ConfigBase):
    """Settings of one evaluation run (``panoptic-mapper eval``)."""

    stride: int = 1
    """Feed every ``stride``-th frame of the source to the maps."""
    max_frames: int = 0
    """Feed at most this many frames (after the stride); 0 = all."""
    eval_every: int = 0
    """Score every k-th fed frame; 0 = automatic: k = ceil(frames / target_eval_frames)."""
    target_eval_frames: int = 40
    """With ``eval_every = 0``: about this many frames are scored (30-50 is the intent)."""
    eval_pixel_step: int = 2
    """Scored frames are compared on every k-th pixel row and column (pixels k*i + k//2); the
    maps render exactly those pixels through an equivalent pinhole camera. 1 = all pixels."""
    robust_fraction: float = DEFAULT_ROBUST_FRACTION
    """Scene-level PQ: drop classes covering less than this fraction of the labelled pixels
    (Panoptic Lifting's ``robust`` rule); 0 keeps every class."""
    gt_surface_samples: int = 100_000
    """Points sampled on the ground-truth mesh for 3D labels and completion/recall."""
    pred_surface_samples: int = 100_000
    """Points sampled on each predicted mesh for accuracy/precision."""
    cull_unobserved_gt: bool = True
    """Score 3D metrics only on ground-truth surface some fed frame observed: seen first along
    its camera ray (ray cast on the ground-truth mesh) where the frame has a depth measurement."""
    visibility_every: int = 5
    """Culling looks through every n-th fed frame (consecutive frames see nearly the same
    surface; each look costs a ray per unobserved sample in view)."""
    label_transfer_max_distance_m: float = 0.10
    """Ground-truth points farther than this from every predicted mesh vertex get no predicted
    label (they count as wrong), metres."""
    geometry_threshold_m: float = 0.05
    """Inlier distance of precision / recall / F1, metres."""
    coverage_matching: Literal["hungarian", "best"] = "hungarian"
    """How mCov assigns predicted to ground-truth instances (see ``metrics.instance_coverage``)."""
    seed: int = 0
    """Seed of the surface sampling."""
    poses: Literal["true", "estimated"] = "true"
    """Poses the maps integrate the frames with: the source's own (``true``), or the SLAM
    estimate recorded beside them (``estimated``: a dataset folder with ``pose_estimated/``).
    Scoring always uses the source's own poses."""
    corrections: Literal["apply", "ignore"] = "apply"
    """With ``poses="estimated"``: apply the SLAM system's loop corrections to the maps that can
    follow them (``apply``), or feed the live estimate alone (``ignore``)."""

    def validate(self) -> None:
        super().validate()
        require(self.poses in ("true", "estimated"), "poses", self.poses,
                "must be 'true' or 'estimated'")
        require(self.corrections in ("apply", "ignore"), "corrections", self.corrections,
                "must be 'apply' or 'ignore'")
        require(self.stride >= 1, "stride", self.stride, "must be >= 1")
        require(self.max_frames >= 0, "max_frames", self.max_frames, "must be >= 0")
        require(self.eval_every >= 0, "eval_every", self.eval_every, "must be >= 0")
        require(self.target_eval_frames >= 1, "target_eval_frames", self.target_eval_frames,
                "must be >= 1")
        require(self.eval_pixel_step >= 1, "eval_pixel_step", self.eval_pixel_step,
                "must be >= 1")
        require(0.0 <= self.robust_fraction < 1.0, "robust_fraction", self.robust_fraction,
                "must be in [0, 1)")
        require(self.gt_surface_samples >= 1, "gt_surface_samples", self.gt_surface_samples,
                "must be >= 1")
        require(self.pred_surface_samples >= 1, "pred_surface_samples",
                self.pred_surface_samples, "must be >= 1")
        require(self.visibility_every >= 1, "visibility_every", self.visibility_every,
                "must be >= 1")
        require(self.label_transfer_max_distance_m > 0, "label_transfer_max_distance_m",
                self.label_transfer_max_distance_m, "must be > 0")
        require(self.geometry_threshold_m > 0, "geometry_threshold_m",
                self.geometry_threshold_m, "must be > 0")


@dataclass
class MethodSpec:
    """One map configuration to evaluate."""

    name: str
    """Display name, unique within a run (e.g. ``instant`` or ``instant_2cm``)."""
    method: str = ""
    """Key of ``core.mapping.base.MAP_METHODS``; empty = ``name``."""
    config: dict[str, Any] | None = None
    """The method's config (nested dict, e.g. loaded from YAML); None = its defaults."""
    factory: Callable[[LabelRegistry], PanopticMap] | None = None
    """Builds the map instead of ``create_map`` (custom maps, test doubles)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInputError("method.name", self.name, "must not be empty", kind="config")
        self.method = self.method or self.name

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        """``"instant"`` or ``"NAME=METHOD"`` (e.g. ``"fine=instant"``)."""
        name, sep, method = text.partition("=")
        return cls(name=name.strip(), method=method.strip() if sep else name.strip())

    def create(self, registry: LabelRegistry) -> PanopticMap:
        """A fresh map for this method."""
        if self.factory is not None:
            return self.factory(registry)
        return create_map(self.method, registry, self.config)


@dataclass
class EvalSource:
    """A sequence to evaluate on, already opened."""

    name: str
    """Scene name shown in reports."""
    samples: Iterable[DatasetSample]
    """The frames, in order (iterated once)."""
    registry: LabelRegistry
    """The label registry the ground truth and segmentations refer to."""
    num_frames: int | None = None
    """Number of samples, when known (used to choose ``eval_every`` and for progress)."""
    gt_mesh: PanopticMesh | None = None
    """Ground-truth mesh (world frame, vertex labels/instances), when available."""
    path: str = ""
    """Where it was read from (for reports)."""
    integration_poses: dict[int, np.ndarray] | None = None
    """Frame stamp (ns) -> [4, 4] pose the maps integrate that frame with instead of its own
    (e.g. a SLAM estimate); None = the frames' own poses. Scoring uses the frames' own."""
    notes: list[str] = field(default_factory=list)
    """Remarks about the source, copied into the result."""
    corrections: list[LoopCorrection] = field(default_factory=list)
    """Loop corrections to apply while feeding (publication order); empty = none."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class TimingStats:
    """Wall-clock timings of one method (the machine may be shared: see the report)."""

    frames: int
    integrate_ms_median: float | None
    integrate_ms_p95: float | None
    integrate_ms_mean: float | None
    finalize_s: float
    update_mesh_s: float
    render_ms_median: float | None
    """Median ``render_labels`` time per scored frame (at the evaluation resolution)."""


@dataclass
class MethodResult:
    """Everything measured for one method on one scene; a metric is None when not computable
    (the reason is in ``notes``)."""

    name: str
    method: str
    timing: TimingStats
    panoptic: PanopticQuality | None = None
    """Scene-level PQ over the scored frames."""
    semantic_2d: SemanticScores | None = None
    semantic_3d: SemanticScores | None = None
    coverage_3d: InstanceCoverage | None = None
    geometry: GeometryScores | None = None
    depth: DepthConsistency | None = None
    frames_rejected: int = 0
    num_instances: int = 0
    """Instances the finished map holds (``get_instances()``)."""
    num_thing_instances: int = 0
    """Of those, thing instances."""
    warnings: list[str] = field(default_factory=list)
    """Distinct integration warnings and rejection reasons (at most 20)."""
    notes: list[str] = field(default_factory=list)
    mesh_vertices: int = 0
    mesh_triangles: int = 0
    corrections: list[dict[str, Any]] = field(default_factory=list)
    """One entry per loop correction applied (or refused): publication stamp, fed position,
    ``duration_s``, ``frames_fused``, ``max_shift_m`` ... (``error`` when refused)."""

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "method": self.method,
                               "timing": asdict(self.timing)}
        for key in ("panoptic", "semantic_2d", "semantic_3d", "coverage_3d", "geometry",
                    "depth"):
            value = getattr(self, key)
            out[key] = None if value is None else value.to_dict()
        out.update(frames_rejected=self.frames_rejected, num_instances=self.num_instances,
                   num_thing_instances=self.num_thing_instances,
                   warnings=list(self.warnings),
                   notes=list(self.notes), mesh_vertices=self.mesh_vertices,
                   mesh_triangles=self.mesh_triangles,
                   corrections=[dict(c) for c in self.corrections])
        return out


@dataclass
class InputSegmentationScores:
    """Quality of the 2D input segmentation on the scored frames (ids per frame)."""

    panoptic: ImageWisePanopticQuality
    semantic: SemanticScores
    frames: int

    def to_dict(self) -> dict:
        return {"panoptic": self.panoptic.to_dict(), "semantic": self.semantic.to_dict(),
                "frames": self.frames}


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate` on one scene."""

    scene: str
    source: str
    num_frames: int
    """Frames fed to the maps."""
    eval_every: int
    eval_positions: list[int]
    """Positions (in the fed sequence) of the scored frames."""
    methods: dict[str, MethodResult]
    config: EvalConfig
    input_segmentation: InputSegmentationScores | None = None
    skipped_frames: list[str] = field(default_factory=list)
    """Frames the reader could not decode, with the reason."""
    notes: list[str] = field(default_factory=list)
    gt_points_scored: int = 0
    """Ground-truth surface samples used for the 3D metrics (after culling)."""

    def to_dict(self) -> dict:
        return {
            "scene": self.scene, "source": self.source, "num_frames": self.num_frames,
            "eval_every": self.eval_every, "eval_positions": list(self.eval_positions),
            "gt_points_scored": self.gt_points_scored,
            "methods": {k: v.to_dict() for k, v in self.methods.items()},
            "input_segmentation": (None if self.input_segmentation is None
                                   else self.input_segmentation.to_dict()),
            "skipped_frames": list(self.skipped_frames), "notes": list(self.notes),
            "config": self.config.to_dict()}


# --------------------------------------------------------------------------------------------
# Opening sources
# --------------------------------------------------------------------------------------------
BAG_SUFFIXES = (".mcap", ".db3")


def is_bag(path: str | Path) -> bool:
    """True for a rosbag2 folder (``metadata.yaml``) or a ``.mcap`` / ``.db3`` file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or \
        (path.is_file() and path.suffix in BAG_SUFFIXES)


def open_source(path: str | Path, config: EvalConfig | None = None,
                registry: LabelRegistry | None = None,
                gt_mesh_path: str | Path | None = None) -> EvalSource:
    """Open a dataset folder or a bag for evaluation.

    Args:
        path: a dataset folder (any layout of ``core.io.datasets``) or a ROS 2 bag.
        config: frame selection (``stride``, ``max_frames``).
        registry: label registry; default: the dataset's ``labels.yaml`` (for a bag: a
            ``labels.yaml`` beside it), else the default registry.
        gt_mesh_path: ground-truth mesh; default: the dataset's (for a bag: ``gt_mesh.ply``
            beside it), if any.
    """
    from panoptic_mapper.core.io.ply import read_ply

    config = config or EvalConfig()
    path = Path(path)
    max_frames = config.max_frames or None
    integration_poses, notes, corrections = None, [], []
    if is_bag(path):
        if config.poses == "estimated":
            raise ConfigError("poses", config.poses, "needs a dataset folder with "
                              "pose_estimated/: a bag holds only the poses a SLAM system "
                              "published, not the truth to score against")
        samples, num_frames, found_registry, found_mesh = _open_bag(path, config)
        if _drifting_scene_beside(path):
            notes.append("the bag's pose topic carries a drifting SLAM estimate (scene.json "
                         "beside it has pose_drift): maps were fed and scored with it; score "
                         "the dataset folder with poses=estimated to compare with the truth")
    else:
        from panoptic_mapper.core.io.datasets import open_dataset

        dataset = open_dataset(path, stride=config.stride, max_frames=max_frames)
        samples, num_frames = dataset, len(dataset)
        found_registry, found_mesh = dataset.registry, dataset.gt_mesh_path
        if config.poses == "estimated":
            estimate = dataset.slam_estimate
            if estimate is None:
                raise ConfigError("poses", config.poses, f"{path} has no pose_estimated/ "
                                  "(make-scene --pose-drift writes one)")
            integration_poses = estimate.T_world_cam_by_stamp
            if config.corrections == "apply" and estimate.corrections:
                corrections = list(estimate.corrections)
                notes.append(f"maps integrated the SLAM estimate (pose_estimated/) and applied "
                             f"its {len(corrections)} loop corrections where they can; scored "
                             "at the true poses")
            else:
                notes.append("maps integrated the SLAM estimate (pose_estimated/, loop corrections "
                             "not applied) and were scored at the true poses")
    mesh_path = Path(gt_mesh_path) if gt_mesh_path is not None else found_mesh
    if mesh_path is not None and not Path(mesh_path).is_file():
        raise DataFormatError("gt_mesh", str(mesh_path), "file not found", kind="missing_file")
    return EvalSource(
        name=path.name if path.name else str(path), samples=samples,
        registry=registry or found_registry or LabelRegistry.default(), num_frames=num_frames,
        gt_mesh=read_ply(mesh_path) if mesh_path is not None else None, path=str(path),
        integration_poses=integration_poses, notes=notes, corrections=corrections)


def _drifting_scene_beside(bag: Path) -> bool:
    """True when the scene folder holding the bag (``make-scene``'s ``OUT/bag``) declares a
    simulated pose drift in its ``scene.json``."""
    import json

    scene_json = (bag.parent if bag.is_dir() else bag.parent.parent) / "scene.json"
    try:
        return "pose_drift" in json.loads(scene_json.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _open_bag(path: Path, config: EvalConfig):
    from panoptic_mapper.core.io.bag import read_bag

    beside = [path.parent, path] if path.is_dir() else [path.parent]
    labels = next((d / "labels.yaml" for d in beside if (d / "labels.yaml").is_file()), None)
    mesh = next((d / "gt_mesh.ply" for d in beside if (d / "gt_mesh.ply").is_file()), None)
    frames = _BagSelection(read_bag(path), config.stride, config.max_frames or None)
    return frames, frames.num_frames, LabelRegistry.from_yaml(labels) if labels else None, mesh


class _BagSelection:
    """Every ``stride``-th frame of a bag, at most ``max_frames`` of them."""

    def __init__(self, frames, stride: int, max_frames: int | None):
        self._frames, self._stride, self._max_frames = frames, stride, max_frames
        colour = frames.info.topics.get(frames.topics.rgb)
        count = 0 if colour is None else colour.message_count
        # An upper bound: incomplete frames are skipped while reading.
        self.num_frames = math.ceil(count / stride)
        if max_frames is not None:
            self.num_frames = min(self.num_frames, max_frames)

    @property
    def skipped(self):
        """Frames of the bag that could not be assembled (see ``core.io.bag``)."""
        return self._frames.skipped

    def __iter__(self):
        frames = itertools.islice(iter(self._frames), 0, None, self._stride)
        return frames if self._max_frames is None else itertools.islice(frames, self._max_frames)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
@dataclass
class _ScoredFrame:
    """What a scored frame keeps until the maps are finished (at the evaluation resolution)."""

    position: int
    T_world_cam: np.ndarray
    intrinsics: CameraIntrinsics
    depth_m: np.ndarray
    ground_truth: GroundTruthLabels | None
    input_segmentation: PanopticImage | None
    """The frame's 2D input segmentation as label/instance images."""


@dataclass
class _GroundTruthSurface:
    mesh: PanopticMesh
    points_m: np.ndarray
    """[N, 3] samples on the ground-truth mesh."""
    label_ids: np.ndarray
    """[N] label of each sample (from the nearest triangle corner)."""
    instance_ids: np.ndarray
    visibility: VisibilityAccumulator | None

    @property
    def scored(self) -> np.ndarray:
        """[N] bool: the samples scored (the observed ones when culling)."""
        if self.visibility is None:
            return np.ones(len(self.points_m), bool)
        return self.visibility.observed


@dataclass
class _MethodRun:
    spec: MethodSpec
    map: PanopticMap
    integrate_ms: list[float] = field(default_factory=list)
    rejected: int = 0
    warnings: dict[str, None] = field(default_factory=dict)
    corrections: list[dict[str, Any]] = field(default_factory=list)

    def remember(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS_KEPT:
            self.warnings.setdefault(text, None)


def evaluate(source: str | Path | EvalSource, methods: list[MethodSpec],
             config: EvalConfig | None = None, progress: bool = False) -> EvalResult:
    """Run every method on the source and score them (see module docstring).

    Args:
        source: a dataset folder or bag path (opened with ``config.stride`` and
            ``config.max_frames``), or an opened :class:`EvalSource` (fed as it is).
        methods: the maps to run side by side (display names must be unique).
        config: run settings; defaults to :class:`EvalConfig()`.
        progress: show tqdm progress bars.

    Returns:
        One :class:`MethodResult` per method, plus the input segmentation's own scores.
    """
    config = config or EvalConfig()
    if not isinstance(source, EvalSource):
        source = open_source(source, config)
    names = [m.name for m in methods]
    if not methods or len(set(names)) != len(names):
        raise InvalidInputError("methods", names, "need at least one method, names unique",
                                kind="config")
    registry = source.registry
    pending = sorted(source.corrections, key=lambda c: c.stamp_ns) \
        if config.corrections == "apply" else []
    runs = [_MethodRun(spec, _correctable(spec, registry) if pending else spec.create(registry))
            for spec in methods]
    eval_every = _eval_every(config, source.num_frames)
    notes: list[str] = list(source.notes)
    notes += [f"{run.spec.name} cannot follow loop corrections: fed the estimate alone"
              for run in runs if pending and not hasattr(run.map, "apply_correction")]
    if config.eval_every == 0 and source.num_frames is None:
        notes.append(f"number of frames unknown in advance: scored every "
                     f"{UNKNOWN_LENGTH_EVAL_EVERY}th frame")
    gt_surface = _prepare_gt_surface(source.gt_mesh, config)

    scored: list[_ScoredFrame] = []
    position = -1
    for position, sample in enumerate(_progress(source.samples, progress, source.num_frames,
                                                f"{source.name}: integrate")):
        frame = sample.frame
        while pending and frame.stamp_ns >= pending[0].stamp_ns:
            _apply_correction(runs, pending.pop(0), position)
        fed = frame if source.integration_poses is None else \
            frame.replace(T_world_cam=_integration_pose(source, frame.stamp_ns))
        for run in runs:
            start = time.perf_counter()
            report = run.map.integrate_frame(fed, sample.segmentation)
            run.integrate_ms.append(1e3 * (time.perf_counter() - start))
            if not report.accepted:
                run.rejected += 1
                run.remember(f"rejected: {report.reason}")
            for warning in report.warnings:
                run.remember(warning)
        if (gt_surface is not None and gt_surface.visibility is not None
                and position % config.visibility_every == 0):
            gt_surface.visibility.observe(frame.depth_m, frame.T_world_cam, frame.intrinsics)
        if position % eval_every != 0:
            continue
        scored.append(_scored_frame(position, sample, config.eval_pixel_step))
    num_frames = position + 1
    if pending:
        notes.append(f"{len(pending)} loop corrections published after the last fed frame: "
                     "not applied")
    if num_frames == 0:
        raise DataFormatError("source", source.path or source.name, "no readable frame",
                              kind="empty")

    skipped = [f"{s.name}: {s.reason}" for s in getattr(source.samples, "skipped", [])]
    input_scores = _score_input_segmentation(scored, registry)
    if not any(f.ground_truth is not None for f in scored):
        notes.append("no per-frame ground-truth labels: 2D panoptic/semantic metrics skipped")
    if gt_surface is None:
        notes.append("no ground-truth mesh: 3D and geometry metrics skipped")

    results = {run.spec.name: _score_method(run, scored, gt_surface, registry, config,
                                            progress, source.name) for run in runs}
    return EvalResult(
        scene=source.name, source=source.path, num_frames=num_frames, eval_every=eval_every,
        eval_positions=[f.position for f in scored], methods=results, config=config,
        input_segmentation=input_scores, skipped_frames=skipped, notes=notes,
        gt_points_scored=0 if gt_surface is None else int(gt_surface.scored.sum()))


def _correctable(spec: MethodSpec, registry: LabelRegistry) -> PanopticMap:
    """``spec``'s map, made to follow loop corrections when it is an instant map (module
    docstring); other maps as they are (those that can have ``apply_correction``)."""
    first = spec.create(registry)
    if hasattr(first, "apply_correction") or not isinstance(first, InstantPanopticMap):
        return first
    module, name = CORRECTED_MAP.split(":")
    made = [first]
    return getattr(importlib.import_module(module), name)(
        lambda: made.pop() if made else spec.create(registry), registry)


def _apply_correction(runs: list[_MethodRun], correction: LoopCorrection, position: int) -> None:
    """Apply ``correction`` to every map that can follow it, recording what it cost."""
    keyframes = KeyframeCorrection.from_loop_correction(correction)
    for run in runs:
        if not hasattr(run.map, "apply_correction"):
            continue
        record: dict[str, Any] = {"stamp_ns": int(correction.stamp_ns), "position": position,
                                  "keyframes": keyframes.num_keyframes}
        try:
            record.update(run.map.apply_correction(keyframes))
        except InvalidInputError as exc:
            record["error"] = str(exc)
            run.remember(f"loop correction refused: {exc}")
        run.corrections.append(record)


def _integration_pose(source: EvalSource, stamp_ns: int) -> np.ndarray:
    try:
        return source.integration_poses[stamp_ns]
    except KeyError:
        raise DataFormatError(f"{source.path or source.name}: integration_poses", stamp_ns,
                              "no pose to integrate the frame with this stamp",
                              kind="pose") from None


def _eval_every(config: EvalConfig, num_frames: int | None) -> int:
    if config.eval_every > 0:
        return config.eval_every
    if num_frames is None:
        return UNKNOWN_LENGTH_EVAL_EVERY
    return max(1, math.ceil(num_frames / config.target_eval_frames))


def _progress(iterable, enabled: bool, total: int | None, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", dynamic_ncols=True)


def _prepare_gt_surface(mesh: PanopticMesh | None,
                        config: EvalConfig) -> _GroundTruthSurface | None:
    if mesh is None:
        return None
    samples = sample_surface(mesh.vertices_m, mesh.triangles, config.gt_surface_samples,
                             config.seed)
    visibility = VisibilityAccumulator(mesh, samples) if config.cull_unobserved_gt else None
    return _GroundTruthSurface(mesh=mesh, points_m=samples.points_m,
                               label_ids=mesh.label_ids[samples.nearest_vertex],
                               instance_ids=mesh.instance_ids[samples.nearest_vertex],
                               visibility=visibility)


def pixel_grid_camera(intrinsics: CameraIntrinsics, step: int) -> CameraIntrinsics:
    """The pinhole camera whose pixel (u', v') is pixel (step*u' + step//2, step*v' + step//2)
    of ``intrinsics`` (exact: u = step*u' + o  <=>  u' = (fx/step) x/z + (cx - o)/step)."""
    if step == 1:
        return intrinsics
    offset = step // 2
    return CameraIntrinsics(
        width=len(range(offset, intrinsics.width, step)),
        height=len(range(offset, intrinsics.height, step)),
        fx=intrinsics.fx / step, fy=intrinsics.fy / step,
        cx=(intrinsics.cx - offset) / step, cy=(intrinsics.cy - offset) / step)


def pixel_grid(image: np.ndarray, step: int) -> np.ndarray:
    """The pixels of ``image`` [H, W, ...] seen by :func:`pixel_grid_camera` (a strided view)."""
    offset = step // 2
    return np.ascontiguousarray(image[offset::step, offset::step])


def _scored_frame(position: int, sample: DatasetSample, step: int) -> _ScoredFrame:
    frame = sample.frame
    full_shape = frame.intrinsics.shape
    gt, seg = sample.ground_truth, sample.segmentation
    for name, image in (("ground_truth", None if gt is None else gt.label_ids),
                        ("segmentation", None if seg is None else seg.segment_ids)):
        if image is not None and image.shape != full_shape:
            raise InvalidInputError(f"frame {position}: {name}", list(image.shape),
                                    f"must match the camera {list(full_shape)}",
                                    kind="size_mismatch")
    if gt is not None:
        gt = GroundTruthLabels(pixel_grid(gt.label_ids, step), pixel_grid(gt.instance_ids, step))
    segmentation = None
    if seg is not None:
        image = panoptic_image_from_segmentation(seg)
        segmentation = PanopticImage(pixel_grid(image.label_ids, step),
                                     pixel_grid(image.instance_ids, step))
    return _ScoredFrame(position, frame.T_world_cam, pixel_grid_camera(frame.intrinsics, step),
                        pixel_grid(frame.depth_m, step), gt, segmentation)


def _score_input_segmentation(scored: list[_ScoredFrame],
                              registry: LabelRegistry) -> InputSegmentationScores | None:
    pairs = [(f.ground_truth, f.input_segmentation) for f in scored
             if f.ground_truth is not None and f.input_segmentation is not None]
    if not pairs:
        return None
    matrix = ConfusionMatrix()
    for gt, pred in pairs:
        matrix.add(gt.label_ids, pred.label_ids)
    return InputSegmentationScores(
        panoptic=image_wise_panoptic_quality([g for g, _ in pairs], [p for _, p in pairs],
                                             registry.thing_ids),
        semantic=matrix.scores(), frames=len(pairs))


def _score_method(run: _MethodRun, scored: list[_ScoredFrame],
                  gt_surface: _GroundTruthSurface | None, registry: LabelRegistry,
                  config: EvalConfig, progress: bool, scene: str) -> MethodResult:
    the_map = run.map
    start = time.perf_counter()
    the_map.finalize()
    finalize_s = time.perf_counter() - start
    start = time.perf_counter()
    the_map.update_mesh()
    update_mesh_s = time.perf_counter() - start
    mesh = the_map.get_mesh()
    instances = the_map.get_instances()

    gt_frames, pred_frames, render_ms = [], [], []
    matrix, depth = ConfusionMatrix(), DepthConsistencyAccumulator()
    for frame in _progress(scored, progress, len(scored), f"{scene}: render {run.spec.name}"):
        start = time.perf_counter()
        render = the_map.render_labels(frame.T_world_cam, frame.intrinsics)
        render_ms.append(1e3 * (time.perf_counter() - start))
        for name in ("label_ids", "instance_ids", "depth_m"):
            shape = np.shape(getattr(render, name))
            if shape != frame.intrinsics.shape:
                raise InvalidInputError(f"{run.spec.name}.render_labels().{name}", list(shape),
                                        f"must be {list(frame.intrinsics.shape)}",
                                        kind="size_mismatch")
        depth.add(frame.depth_m, render.depth_m)
        if frame.ground_truth is not None:
            gt_frames.append(frame.ground_truth)
            pred_frames.append(PanopticImage(np.asarray(render.label_ids),
                                             np.asarray(render.instance_ids)))
            matrix.add(frame.ground_truth.label_ids, render.label_ids)

    timing = TimingStats(
        frames=len(run.integrate_ms),
        integrate_ms_median=_percentile(run.integrate_ms, 50),
        integrate_ms_p95=_percentile(run.integrate_ms, 95),
        integrate_ms_mean=float(np.mean(run.integrate_ms)) if run.integrate_ms else None,
        finalize_s=finalize_s, update_mesh_s=update_mesh_s,
        render_ms_median=_percentile(render_ms, 50))
    result = MethodResult(name=run.spec.name, method=run.spec.method, timing=timing,
                          depth=depth.result(), frames_rejected=run.rejected,
                          num_instances=len(instances),
                          num_thing_instances=sum(bool(getattr(i, "is_thing", False))
                                                  for i in instances),
                          warnings=list(run.warnings), mesh_vertices=mesh.num_vertices,
                          mesh_triangles=mesh.num_triangles, corrections=run.corrections)
    if gt_frames:
        result.panoptic = scene_panoptic_quality(gt_frames, pred_frames, registry.thing_ids,
                                                 config.robust_fraction)
        result.semantic_2d = matrix.scores()
    if gt_surface is not None:
        _score_3d(result, mesh, gt_surface, registry, config)
    return result


def _score_3d(result: MethodResult, mesh: PanopticMesh, gt_surface: _GroundTruthSurface,
              registry: LabelRegistry, config: EvalConfig) -> None:
    scored = gt_surface.scored
    if not scored.any():
        result.notes.append("no ground-truth surface point was observed: 3D metrics skipped")
        return
    if mesh.num_triangles == 0:
        result.notes.append("the map's mesh has no triangle: 3D and geometry metrics skipped")
        return
    points = gt_surface.points_m[scored]
    gt_labels = gt_surface.label_ids[scored]
    closest = closest_surface_points(points, mesh.vertices_m, mesh.triangles)
    hit = closest.distance_m <= config.label_transfer_max_distance_m
    pred_labels = np.where(hit, mesh.label_ids[closest.nearest_vertex], 0)
    pred_instances = np.where(hit, mesh.instance_ids[closest.nearest_vertex], 0)

    if (gt_labels != 0).any():
        matrix = ConfusionMatrix()
        matrix.add(gt_labels, pred_labels)
        result.semantic_3d = matrix.scores()
        labelled = gt_labels != 0
        gt_things = _is_thing(registry, gt_labels[labelled])
        pred_things = _is_thing(registry, pred_labels[labelled])
        result.coverage_3d = instance_coverage(
            np.where(gt_things, gt_surface.instance_ids[scored][labelled], 0),
            np.where(pred_things, pred_instances[labelled], 0), config.coverage_matching)
    else:
        result.notes.append("the ground-truth mesh has no labels: 3D semantic metrics skipped")

    try:
        pred_samples = sample_surface(mesh.vertices_m, mesh.triangles,
                                      config.pred_surface_samples, config.seed)
    except InvalidInputError as exc:
        result.notes.append(f"geometry metrics skipped: {exc}")
        return
    gt_mesh = gt_surface.mesh
    result.geometry = geometry_scores(
        point_to_mesh_distance_m(pred_samples.points_m, gt_mesh.vertices_m, gt_mesh.triangles),
        closest.distance_m, config.geometry_threshold_m)


def _is_thing(registry: LabelRegistry, label_ids: np.ndarray) -> np.ndarray:
    table = registry.is_thing_table()
    inside = (label_ids >= 0) & (label_ids < len(table))
    return np.where(inside, table[np.clip(label_ids, 0, len(table) - 1)], False)


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None
