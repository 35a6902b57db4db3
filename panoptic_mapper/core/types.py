"""Core data types shared by every component: camera, RGB-D frame, 2D panoptic segmentation, mesh,
map instances and label renders.

Owns: the shapes, dtypes, units and validation rules of the data that flows between components.
Does not own: how these are produced (readers, segmenters, mappers) or transported (ROS, bags).

Conventions:
  * Images are numpy arrays, row-major ``[H, W(, C)]``; RGB is ``uint8``.
  * Depth is ``float32`` metres; ``0`` means "no measurement". NaN, inf and negative values are
    rejected here: converters for wire formats (REP 118 32FC1 NaN/inf, 16UC1 0/65535) map their
    invalid markers to 0 before building a frame.
  * ``T_a_b`` is a 4x4 rigid transform that maps points from frame b to frame a.
  * Label id 0 is "void / unlabelled"; segment id 0 is "no segment"; instance id 0 is "no instance".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError

VOID_LABEL_ID = 0
"""Label id of pixels/voxels with no label."""
NO_SEGMENT_ID = 0
"""Segment id of pixels covered by no segment."""
NO_INSTANCE_ID = 0
"""Instance id of pixels/voxels/vertices that belong to no instance."""

RIGID_TOLERANCE = 1e-3
"""Largest allowed deviation of R^T R from identity (and of det R from 1) for a pose."""


# --------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an undistorted image (OpenCV axes: x right, y down, z forward)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise InvalidInputError(f"intrinsics.{name}", value, "must be a positive integer",
                                        kind="intrinsics")
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise InvalidInputError(f"intrinsics.{name}", value,
                                        "focal length must be finite and > 0", kind="intrinsics")
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise InvalidInputError(f"intrinsics.{name}", value, "must be finite",
                                        kind="intrinsics")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (standard notation)
        """The 3x3 camera matrix, float64."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(height, width)``."""
        return (self.height, self.width)

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "CameraIntrinsics":  # noqa: N802,N803
        """Build from a 3x3 (or 4x4) camera matrix."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape not in ((3, 3), (4, 4)):
            raise InvalidInputError("K", K.shape, "camera matrix must be 3x3 or 4x4",
                                    kind="intrinsics")
        return cls(width=width, height=height, fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2])

    def scaled(self, factor: float) -> "CameraIntrinsics":
        """Intrinsics of the image resized by ``factor`` (pixel-centre convention)."""
        width = max(1, int(round(self.width * factor)))
        height = max(1, int(round(self.height * factor)))
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                                cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5)


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------
def validate_query_points(points_m: np.ndarray) -> np.ndarray:
    """Return world points as a float64 [N, 3] array, or raise (kind ``query``) when they are
    mis-shaped or not finite: the check every map's ``query_labels`` makes."""
    points = np.asarray(points_m, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InvalidInputError("points_m", list(points.shape), "must be [N, 3]", kind="query")
    if not np.all(np.isfinite(points)):
        raise InvalidInputError("points_m", "non-finite entries", "must be finite",
                                kind="query")
    return points


def validate_rigid_transform(T: np.ndarray, name: str = "T_world_cam") -> np.ndarray:  # noqa: N803
    """Return ``T`` as a float64 4x4 array, or raise if it is not a finite rigid transform."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InvalidInputError(name, T.shape, "pose must be a 4x4 matrix", kind="pose")
    if not np.all(np.isfinite(T)):
        raise InvalidInputError(name, "non-finite entries", "pose contains NaN or inf", kind="pose")
    if not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0), atol=1e-6):
        raise InvalidInputError(name, T[3].tolist(), "last row must be [0, 0, 0, 1]", kind="pose")
    R = T[:3, :3]
    orth_err = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if orth_err > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
        raise InvalidInputError(
            name, f"|R^T R - I|max={orth_err:.2e}, det={det:.4f}",
            "rotation part is not orthonormal with det +1 (not a rigid transform)", kind="pose")
    return T


# --------------------------------------------------------------------------------------------
# RGB-D frame
# --------------------------------------------------------------------------------------------
@dataclass
class RgbdFrame:
    """One registered RGB-D observation with its camera pose.

    ``rgb`` and ``depth_m`` have the same size as ``intrinsics``. Construction validates every
    field and raises :class:`InvalidInputError` naming the first problem found.
    """

    stamp_ns: int
    """Acquisition time, nanoseconds (ROS time of the image header)."""
    rgb: np.ndarray
    """[H, W, 3] uint8 colour image, RGB order."""
    depth_m: np.ndarray
    """[H, W] float32 depth along the optical axis, metres; 0 = no measurement."""
    T_world_cam: np.ndarray
    """[4, 4] float64 rigid transform from the camera (optical, OpenCV axes) to the world frame."""
    intrinsics: CameraIntrinsics
    """Pinhole intrinsics shared by ``rgb`` and ``depth_m``."""
    frame_id: str = "camera"
    """Name of the camera frame (the ROS header frame_id)."""
    index: int = -1
    """Position in the source sequence, when known (-1 otherwise)."""

    def __post_init__(self) -> None:
        self.stamp_ns = int(self.stamp_ns)
        if self.stamp_ns < 0:
            raise InvalidInputError("stamp_ns", self.stamp_ns, "must be >= 0", kind="stamp")
        h, w = self.intrinsics.shape
        rgb = np.asarray(self.rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InvalidInputError("rgb", f"{rgb.dtype}{list(rgb.shape)}",
                                    "colour image must be uint8 [H, W, 3]", kind="encoding")
        depth = np.asarray(self.depth_m)
        if depth.ndim != 2:
            raise InvalidInputError("depth_m", list(depth.shape), "depth must be [H, W]",
                                    kind="encoding")
        if depth.dtype != np.float32:
            depth = depth.astype(np.float32)
        if rgb.shape[:2] != (h, w) or depth.shape != (h, w):
            raise InvalidInputError(
                "depth_m", f"rgb {list(rgb.shape[:2])}, depth {list(depth.shape)}",
                f"image sizes must match the camera ({h}x{w})", kind="size_mismatch")
        check_depth_values(depth, "depth_m")
        self.rgb = rgb
        self.depth_m = depth
        self.T_world_cam = validate_rigid_transform(self.T_world_cam, "T_world_cam")

    @property
    def valid_depth_mask(self) -> np.ndarray:
        """[H, W] bool, True where depth was measured."""
        return self.depth_m > 0

    @property
    def camera_position_m(self) -> np.ndarray:
        """[3] camera centre in the world frame."""
        return self.T_world_cam[:3, 3].copy()

    def replace(self, **changes) -> "RgbdFrame":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


def check_depth_values(depth_m: np.ndarray, name: str = "depth_m") -> None:
    """Raise if ``depth_m`` holds NaN, inf or negative values (0 is the only invalid marker)."""
    finite = np.isfinite(depth_m)
    if not finite.all():
        n_nan = int(np.isnan(depth_m).sum())
        n_inf = int(np.isinf(depth_m).sum())
        raise InvalidInputError(name, f"{n_nan} NaN, {n_inf} inf pixels",
                                "depth must be finite (use 0 for 'no measurement')",
                                kind="depth_values")
    if depth_m.size and float(depth_m.min()) < 0.0:
        raise InvalidInputError(name, f"min {float(depth_m.min()):.3f} m",
                                "depth must be >= 0 (use 0 for 'no measurement')",
                                kind="depth_values")


# --------------------------------------------------------------------------------------------
# 2D panoptic segmentation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One segment of a 2D panoptic segmentation (mirrors ``panoptic_mapper/msg/Segment``)."""

    id: int
    """Value of this segment in the segment id image; > 0."""
    label: str
    """Label name from the label registry, e.g. ``"chair"``."""
    label_id: int
    """Registry id of the label (> 0)."""
    is_thing: bool
    """True for countable objects, False for stuff."""
    score: float = 1.0
    """Detector confidence in [0, 1]."""
    phrase: str = ""
    """The prompt phrase that produced it, e.g. ``"office chair"``."""

    def __post_init__(self) -> None:
        if int(self.id) <= 0:
            raise InvalidInputError("segment.id", self.id, "segment ids must be > 0 (0 = none)",
                                    kind="segment")
        if not (0.0 <= float(self.score) <= 1.0) or not np.isfinite(self.score):
            raise InvalidInputError(f"segment[{self.id}].score", self.score,
                                    "score must be in [0, 1]", kind="segment")
        if int(self.label_id) < 0 or int(self.label_id) > 65535:
            raise InvalidInputError(f"segment[{self.id}].label_id", self.label_id,
                                    "label_id must fit uint16", kind="segment")
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "label_id", int(self.label_id))
        object.__setattr__(self, "score", float(self.score))
        object.__setattr__(self, "is_thing", bool(self.is_thing))


@dataclass
class PanopticSegmentation2D:
    """Per-frame 2D panoptic segmentation: an id image plus the segments it refers to.

    Ids are per frame: the same object may carry different ids in different frames (no
    association is implied). Pixels with id 0 belong to no segment.
    """

    segment_ids: np.ndarray
    """[H, W] int32 image; pixel value = ``Segment.id``, 0 = none."""
    segments: tuple[Segment, ...] = ()
    """The segments referenced by ``segment_ids`` (a segment may cover no pixel)."""
    stamp_ns: int = 0
    """Stamp of the RGB image it segments."""

    def __post_init__(self) -> None:
        ids = np.asarray(self.segment_ids)
        if ids.ndim != 2:
            raise InvalidInputError("segment_ids", list(ids.shape), "must be a 2D image",
                                    kind="segmentation")
        if ids.dtype.kind not in "iu":
            raise InvalidInputError("segment_ids", str(ids.dtype), "must be an integer image",
                                    kind="encoding")
        if ids.size and int(ids.min()) < 0:
            raise InvalidInputError("segment_ids", int(ids.min()), "ids must be >= 0",
                                    kind="segmentation")
        self.segment_ids = ids.astype(np.int32, copy=False)
        self.segments = tuple(self.segments)
        seen: set[int] = set()
        for seg in self.segments:
            if seg.id in seen:
                raise InvalidInputError("segments", seg.id, "duplicate segment id",
                                        kind="segmentation")
            seen.add(seg.id)
        present = np.unique(self.segment_ids)
        unknown = sorted(set(int(v) for v in present) - seen - {NO_SEGMENT_ID})
        if unknown:
            raise InvalidInputError("segment_ids", unknown[:10],
                                    "id image holds ids missing from the segment list",
                                    kind="segmentation")
        self.stamp_ns = int(self.stamp_ns)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(height, width)``."""
        return tuple(self.segment_ids.shape)  # type: ignore[return-value]

    def segment_by_id(self) -> dict[int, Segment]:
        """Map from segment id to segment."""
        return {s.id: s for s in self.segments}

    def label_image(self) -> np.ndarray:
        """[H, W] int32 image of label ids (0 where no segment)."""
        lut = np.zeros(max([0] + [s.id for s in self.segments]) + 1, dtype=np.int32)
        for s in self.segments:
            lut[s.id] = s.label_id
        return lut[self.segment_ids]

    def score_image(self) -> np.ndarray:
        """[H, W] float32 image of detection scores (0 where no segment)."""
        lut = np.zeros(max([0] + [s.id for s in self.segments]) + 1, dtype=np.float32)
        for s in self.segments:
            lut[s.id] = s.score
        return lut[self.segment_ids]

    @classmethod
    def empty(cls, height: int, width: int, stamp_ns: int = 0) -> "PanopticSegmentation2D":
        """A segmentation with no segments."""
        return cls(np.zeros((height, width), np.int32), (), stamp_ns)


# --------------------------------------------------------------------------------------------
# Map products
# --------------------------------------------------------------------------------------------
@dataclass
class PanopticMesh:
    """A triangle mesh with per-vertex colour, semantic label and instance id (world frame)."""

    vertices_m: np.ndarray
    """[V, 3] float32 vertex positions, metres."""
    triangles: np.ndarray
    """[F, 3] int32 vertex indices."""
    colors: np.ndarray
    """[V, 3] uint8 RGB."""
    label_ids: np.ndarray
    """[V] int32 registry label id per vertex (0 = void)."""
    instance_ids: np.ndarray
    """[V] int32 map instance id per vertex (0 = none)."""

    def __post_init__(self) -> None:
        self.vertices_m = np.asarray(self.vertices_m, np.float32).reshape(-1, 3)
        self.triangles = np.asarray(self.triangles, np.int32).reshape(-1, 3)
        n = len(self.vertices_m)
        self.colors = np.asarray(self.colors, np.uint8).reshape(-1, 3)
        self.label_ids = np.asarray(self.label_ids, np.int32).reshape(-1)
        self.instance_ids = np.asarray(self.instance_ids, np.int32).reshape(-1)
        for name in ("colors", "label_ids", "instance_ids"):
            if len(getattr(self, name)) != n:
                raise InvalidInputError(f"mesh.{name}", len(getattr(self, name)),
                                        f"must have one entry per vertex ({n})", kind="mesh")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= n):
            raise InvalidInputError("mesh.triangles", int(self.triangles.max()),
                                    "triangle index out of range", kind="mesh")

    @property
    def num_vertices(self) -> int:
        return len(self.vertices_m)

    @property
    def num_triangles(self) -> int:
        return len(self.triangles)

    @classmethod
    def empty(cls) -> "PanopticMesh":
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0))


@dataclass
class OrientedBox:
    """An oriented bounding box in the world frame."""

    center_m: np.ndarray
    """[3] box centre, metres."""
    R_world_box: np.ndarray
    """[3, 3] rotation from box axes to world axes."""
    size_m: np.ndarray
    """[3] edge lengths along the box axes, metres."""

    def __post_init__(self) -> None:
        self.center_m = np.asarray(self.center_m, np.float64).reshape(3)
        self.R_world_box = np.asarray(self.R_world_box, np.float64).reshape(3, 3)
        self.size_m = np.asarray(self.size_m, np.float64).reshape(3)

    def corners_m(self) -> np.ndarray:
        """[8, 3] corner positions."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return self.center_m + (signs * self.size_m / 2.0) @ self.R_world_box.T

    def contains(self, points_m: np.ndarray) -> np.ndarray:
        """[N] bool: which of ``points_m`` [N, 3] lie inside."""
        local = (np.asarray(points_m, np.float64) - self.center_m) @ self.R_world_box
        return np.all(np.abs(local) <= self.size_m / 2.0 + 1e-9, axis=1)


@dataclass
class MapInstance:
    """A persistent object (thing) or stuff region of the map (mirrors ``msg/MapInstance``)."""

    id: int
    """Persistent map instance id (> 0)."""
    label: str
    label_id: int
    is_thing: bool
    confidence: float
    """In [0, 1]: how sure the map is of the label."""
    centroid_m: np.ndarray
    """[3] world frame."""
    bbox: OrientedBox
    num_observations: int
    """Frames in which it was seen."""
    score: float = 0.0
    """Relevance to a query; 0 outside query results."""
    label_distribution: dict[int, float] = field(default_factory=dict)
    """label_id -> probability (sums to 1 over the labels ever voted)."""
    num_voxels: int = 0
    mean_color_rgb: np.ndarray | None = None
    """[3] uint8 mean fused colour of its surface, when known."""

    def __post_init__(self) -> None:
        self.centroid_m = np.asarray(self.centroid_m, np.float64).reshape(3)


@dataclass
class LabelRender:
    """Labels of the map seen from a camera: what the map predicts for each pixel."""

    label_ids: np.ndarray
    """[H, W] int32 semantic label per pixel (0 = void / nothing hit)."""
    instance_ids: np.ndarray
    """[H, W] int32 map instance id per pixel (0 = none). Stuff pixels carry their stuff region id."""
    depth_m: np.ndarray
    """[H, W] float32 rendered depth (0 = nothing hit)."""


@dataclass
class GroundTruthLabels:
    """Per-pixel ground truth of a frame (synthetic scenes, labelled datasets).

    Instance ids are consistent across the whole scene. Stuff pixels carry their label and
    instance id 0: a stuff class forms one segment per scene in panoptic metrics.
    """

    label_ids: np.ndarray
    """[H, W] int32 semantic label per pixel (0 = void, excluded from metrics)."""
    instance_ids: np.ndarray
    """[H, W] int32 scene-level instance id for thing pixels (0 = none / stuff)."""

    def __post_init__(self) -> None:
        self.label_ids = np.asarray(self.label_ids).astype(np.int32, copy=False)
        self.instance_ids = np.asarray(self.instance_ids).astype(np.int32, copy=False)
        if self.label_ids.shape != self.instance_ids.shape or self.label_ids.ndim != 2:
            raise InvalidInputError("ground_truth", f"{self.label_ids.shape} vs "
                                    f"{self.instance_ids.shape}",
                                    "label and instance images must be [H, W] of equal size",
                                    kind="size_mismatch")


@dataclass
class DatasetSample:
    """What a dataset reader yields per frame."""

    frame: RgbdFrame
    segmentation: PanopticSegmentation2D | None = None
    """2D panoptic input (e.g. recorded or emulated Grounded SAM output), when the dataset has it."""
    ground_truth: GroundTruthLabels | None = None
    """Per-pixel ground truth, when the dataset has it."""



@dataclass
class LoopCorrection:
    """Optimised keyframe poses a SLAM system publishes after a loop closure (a revisit).

    Frame indices refer to the sequence the correction was made for; stamps identify the
    keyframes anywhere else (a bag, a strided dataset).
    """

    loop_index: int
    """Frame (a keyframe) at which the revisit was recognised; the newest keyframe covered."""
    matched_index: int
    """Earlier keyframe it revisits."""
    publish_index: int
    """Frame with which the correction is published (after the optimisation's latency)."""
    stamp_ns: int
    """Publication stamp, ns (the stamp of ``publish_index``)."""
    keyframe_indices: np.ndarray
    """[K] int64 frame indices of the keyframes covered, increasing."""
    keyframe_stamps_ns: np.ndarray
    """[K] int64 stamps of those keyframes, ns."""
    T_world_keyframe: np.ndarray
    """[K, 4, 4] float64 optimised keyframe poses (world = the SLAM map frame)."""

    def __post_init__(self) -> None:
        self.keyframe_indices = np.asarray(self.keyframe_indices, np.int64).reshape(-1)
        self.keyframe_stamps_ns = np.asarray(self.keyframe_stamps_ns, np.int64).reshape(-1)
        self.T_world_keyframe = np.asarray(self.T_world_keyframe, np.float64)
        k = len(self.keyframe_indices)
        if (k == 0 or self.keyframe_stamps_ns.shape != (k,)
                or self.T_world_keyframe.shape != (k, 4, 4)):
            raise InvalidInputError(
                "loop_correction", f"{k} indices, {self.keyframe_stamps_ns.shape} stamps, "
                f"{self.T_world_keyframe.shape} poses", "needs K >= 1 keyframes with one stamp "
                "and one [4, 4] pose each", kind="size_mismatch")


def stack_points(points: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate [Ni, 3] arrays into one [N, 3] float64 array (empty-safe)."""
    arrays = [np.asarray(p, np.float64).reshape(-1, 3) for p in points]
    return np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 3))
