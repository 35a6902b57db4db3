"""The reader API shared by every dataset layout: lazy frames, frame selection, per-frame errors.

A dataset is opened cheaply (file lists, intrinsics, stamps); images are decoded only when a
frame is requested. A bad frame (missing or truncated file, non-rigid pose, inconsistent
segmentation) never makes the whole dataset unusable:

* ``dataset[i]`` raises :class:`DataFormatError` for that frame, naming the file, field and value;
* ``for sample in dataset`` yields the good frames and records each bad one in
  ``dataset.skipped`` (a list of :class:`SkippedFrame`, reset at the start of every iteration),
  logging one warning per skipped frame.

Owns: :class:`RgbdDataset`, :class:`FrameRecord`, :class:`SkippedFrame`, frame selection
(``start``, ``stride``, ``max_frames``) and the pose check shared by the layouts.
Does not own: the layouts themselves (``seven_scenes``, ``replica``, ``scannet_layout``) or
layout detection (``datasets``).
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal, Sequence

import numpy as np

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.io.image_files import file_error
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import CameraIntrinsics, DatasetSample, validate_rigid_transform

if TYPE_CHECKING:  # slam_estimate imports this module
    from panoptic_mapper.core.io.slam_estimate import SlamEstimate

LOGGER = logging.getLogger(__name__)

DEFAULT_CAMERA_FRAME_ID = "camera_color_optical_frame"
"""``frame_id`` of the frames read from datasets (and of the images in bags we write)."""
DEFAULT_FPS = 30.0
"""Frame rate assumed for datasets without timestamps (7-Scenes, Replica renders), Hz."""


def stamp_from_number(frame_number: int, fps: float = DEFAULT_FPS) -> int:
    """Stamp of frame ``frame_number`` of a ``fps`` sequence, ns (``round(n / fps * 1e9)``)."""
    return int(round(frame_number * 1e9 / fps))


@dataclass(frozen=True)
class FrameRecord:
    """What a dataset knows about a frame before decoding it."""

    name: str
    """The frame's name in the source, e.g. ``"frame-000004"`` or ``"12"`` (file stem)."""
    number: int
    """The frame number parsed from the file name (7-Scenes: index in the full sequence)."""
    stamp_ns: int
    """Acquisition time, ns."""


@dataclass
class SkippedFrame:
    """A frame that could not be read, and why."""

    position: int
    """Index of the frame in the dataset (after start/stride/max_frames selection)."""
    name: str
    """The frame's name in the source (see :attr:`FrameRecord.name`)."""
    error: InvalidInputError
    """The error, naming the file, field and value."""

    @property
    def reason(self) -> str:
        return str(self.error)


def select_records(records: Sequence[FrameRecord], start: int, stride: int,
                   max_frames: int | None) -> list[FrameRecord]:
    """``records[start::stride][:max_frames]``, with the arguments validated."""
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise InvalidInputError("start", start, "must be an integer >= 0", kind="selection")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise InvalidInputError("stride", stride, "must be an integer >= 1", kind="selection")
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise InvalidInputError("max_frames", max_frames, "must be None or >= 1",
                                kind="selection")
    if records and start >= len(records):
        raise InvalidInputError("start", start,
                                f"beyond the last frame (the dataset has {len(records)})",
                                kind="selection")
    chosen = list(records[start::stride])
    return chosen if max_frames is None else chosen[:max_frames]


def checked_pose(T_world_cam: np.ndarray, path: Path | str,  # noqa: N803
                 field: str = "T_world_cam") -> np.ndarray:
    """Validate a pose read from ``path`` and re-orthonormalise its rotation.

    Poses stored as text carry rounding errors (7-Scenes: up to 4e-4 in R^T R). A pose within
    :data:`panoptic_mapper.core.types.RIGID_TOLERANCE` of a rotation is projected onto the
    nearest rotation (SVD), so that downstream conversions (e.g. to quaternions in bags)
    are exact; anything further off is rejected with the file named.
    """
    try:
        T = validate_rigid_transform(T_world_cam, field)  # noqa: N806
    except InvalidInputError as exc:
        raise file_error(path, exc.value, exc.reason, field=field, kind="pose") from exc
    U, _, Vt = np.linalg.svd(T[:3, :3])  # noqa: N806
    T = T.copy()  # noqa: N806
    T[:3, :3] = U @ Vt
    return T


class RgbdDataset(abc.ABC):
    """A posed RGB-D sequence on disk, decoded lazily frame by frame (see module docstring)."""

    layout: ClassVar[str] = ""
    """Short layout name: ``"7scenes"``, ``"replica"`` or ``"scannet"``."""

    def __init__(self, root: Path, name: str, intrinsics: CameraIntrinsics,
                 records: Sequence[FrameRecord], *, registry: LabelRegistry | None = None,
                 gt_mesh_path: Path | None = None, has_segmentation: bool = False,
                 has_ground_truth: bool = False, metadata: dict[str, Any] | None = None):
        self.root = Path(root)
        """The dataset folder."""
        self.name = name
        """Human-readable name (scene or folder name)."""
        self.intrinsics = intrinsics
        """Intrinsics of every frame (colour is resized to the depth image when they differ)."""
        self.registry = registry
        """The label registry of ``labels.yaml`` the label ids refer to, or None."""
        self.gt_mesh_path = gt_mesh_path
        """Ground-truth mesh file, or None."""
        self.has_segmentation = has_segmentation
        """True when frames carry a 2D panoptic input segmentation."""
        self.has_ground_truth = has_ground_truth
        """True when frames carry per-pixel ground-truth labels."""
        self.metadata: dict[str, Any] = dict(metadata or {})
        """Free-form metadata (``scene.json``), empty when absent."""
        self.records: tuple[FrameRecord, ...] = tuple(records)
        """One record per selected frame, in order."""
        self.skipped: list[SkippedFrame] = []
        """Frames the last iteration could not read (see module docstring)."""

    # ---- sequence protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, position: int) -> DatasetSample:
        """Decode frame ``position``; raises :class:`DataFormatError` if it is unreadable."""
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise InvalidInputError("position", position, "must be an integer", kind="index")
        if not -len(self) <= position < len(self):
            raise IndexError(f"frame {position} out of range (dataset has {len(self)} frames)")
        record = self.records[int(position)]
        try:
            return self._load(int(position) % len(self), record)
        except DataFormatError:
            raise
        except InvalidInputError as exc:
            raise DataFormatError(f"{self.root} frame {record.name}:{exc.field}", exc.value,
                                  exc.reason, kind=exc.kind) from exc

    def __iter__(self) -> Iterator[DatasetSample]:
        return self.iter_samples("skip")

    def iter_samples(self, on_error: Literal["skip", "raise"] = "skip"
                     ) -> Iterator[DatasetSample]:
        """Yield the frames in order; a bad frame is recorded in :attr:`skipped` (``"skip"``)
        or raises (``"raise"``)."""
        if on_error not in ("skip", "raise"):
            raise InvalidInputError("on_error", on_error, "must be 'skip' or 'raise'",
                                    kind="config")
        self.skipped = []
        for position, record in enumerate(self.records):
            try:
                sample = self[position]
            except DataFormatError as exc:
                if on_error == "raise":
                    raise
                self.skipped.append(SkippedFrame(position, record.name, exc))
                LOGGER.warning("%s: skipping frame %s: %s", self.name, record.name, exc)
                continue
            yield sample

    # ---- cheap per-frame facts -------------------------------------------------------------
    @property
    def stamps_ns(self) -> np.ndarray:
        """[N] int64 frame stamps, ns (known without decoding images)."""
        return np.array([r.stamp_ns for r in self.records], dtype=np.int64)

    @property
    def slam_estimate(self) -> "SlamEstimate | None":
        """The pose stream and loop corrections of a simulated SLAM system recorded with the
        sequence (scenes made with ``make-scene --pose-drift``), keyed by stamp; None when the
        dataset has none. The frames themselves always carry the dataset's (true) poses."""
        return None

    @property
    def frame_names(self) -> list[str]:
        """The frames' names in the source, in order."""
        return [r.name for r in self.records]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, frames={len(self)}, "
                f"size={self.intrinsics.width}x{self.intrinsics.height}, "
                f"segmentation={self.has_segmentation}, ground_truth={self.has_ground_truth})")

    # ---- layout-specific ---------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self, position: int, record: FrameRecord) -> DatasetSample:
        """Decode one frame (``position`` is its index in this dataset)."""
