"""Reader of the ScanNet export layout, with panoptic_mapper's optional extras.

See ``docs/dataset_format.md`` for the full table. Frame ``i`` is ``color/<i>.jpg|png``,
``depth/<i>.png`` (uint16 mm, 0 = invalid), ``pose/<i>.txt`` (4x4 ``T_world_cam``; a non-finite
ScanNet pose marks a bad frame), optionally ``label-filt/<i>.png`` + ``instance-filt/<i>.png``
(ground truth), ``panoptic/<i>.png`` + ``<i>.json`` (2D panoptic input) and ``pose_estimated/``
+ ``loop_corrections.json`` (a simulated SLAM estimate, ``slam_estimate``). Colour and label
images of another size than the depth image are resized to it (bilinear for colour, nearest for
ids) and ``intrinsic/intrinsic_depth.txt`` describes the result.

Owns: detection and decoding of this layout, the panoptic JSON schema and its validation
against ``labels.yaml``. Does not own: writing it (``scannet_writer``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.io.image_files import (file_error, image_size, read_matrix, read_rgb,
                                                 read_uint16, resize_ids, resize_rgb)
from panoptic_mapper.core.io.rgbd_dataset import (DEFAULT_CAMERA_FRAME_ID, FrameRecord,
                                                  RgbdDataset, checked_pose, select_records,
                                                  stamp_from_number)
from panoptic_mapper.core.io.slam_estimate import (SlamEstimate, has_slam_estimate,
                                                   read_slam_estimate)
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import (VOID_LABEL_ID, CameraIntrinsics, DatasetSample,
                                        GroundTruthLabels, PanopticSegmentation2D, RgbdFrame,
                                        Segment)

COLOR_DIR, DEPTH_DIR, POSE_DIR, INTRINSIC_DIR = "color", "depth", "pose", "intrinsic"
LABEL_DIR, INSTANCE_DIR, PANOPTIC_DIR = "label-filt", "instance-filt", "panoptic"
DEPTH_INTRINSICS_FILE = "intrinsic_depth.txt"
COLOR_INTRINSICS_FILE = "intrinsic_color.txt"
TIMESTAMPS_FILE, LABELS_FILE = "timestamps.txt", "labels.yaml"
GT_MESH_FILE, SCENE_FILE = "gt_mesh.ply", "scene.json"
DEPTH_SCALE = 1000.0
"""Depth PNG units per metre (millimetres)."""
COLOR_EXTENSIONS = (".jpg", ".png")


def is_scannet_layout(root: Path) -> bool:
    """True when ``root`` has the four required folders of the layout."""
    return all((root / name).is_dir() for name in (COLOR_DIR, DEPTH_DIR, POSE_DIR,
                                                   INTRINSIC_DIR))


class ScanNetLayoutDataset(RgbdDataset):
    """A ScanNet export or a panoptic_mapper scene (see module docstring)."""

    layout = "scannet"

    def __init__(self, root: Path, start: int = 0, stride: int = 1,
                 max_frames: int | None = None):
        root = Path(root)
        missing = [name for name in (COLOR_DIR, DEPTH_DIR, POSE_DIR, INTRINSIC_DIR)
                   if not (root / name).is_dir()]
        if missing:
            raise DataFormatError(str(root), missing, "ScanNet layout folders missing",
                                  kind="missing_file")
        self._color_paths: dict[int, Path] = {}
        for path in (root / COLOR_DIR).iterdir():
            if path.suffix.lower() in COLOR_EXTENSIONS and path.stem.isdigit():
                self._color_paths[int(path.stem)] = path
        if not self._color_paths:
            raise DataFormatError(str(root / COLOR_DIR), "no <i>.jpg/png",
                                  "ScanNet layout without colour images", kind="missing_file")
        numbers = sorted(self._color_paths)
        stamps = _read_timestamps(root / TIMESTAMPS_FILE, numbers)
        records = [FrameRecord(str(n), n, stamps[n]) for n in numbers]
        registry = None
        if (root / LABELS_FILE).is_file():
            registry = LabelRegistry.from_yaml(root / LABELS_FILE)
        intrinsics = _read_intrinsics(root, numbers)
        mesh = root / GT_MESH_FILE
        super().__init__(root, root.name, intrinsics,
                         select_records(records, start, stride, max_frames),
                         registry=registry, gt_mesh_path=mesh if mesh.is_file() else None,
                         has_segmentation=(root / PANOPTIC_DIR).is_dir(),
                         has_ground_truth=(root / LABEL_DIR).is_dir(),
                         metadata=_read_scene_json(root / SCENE_FILE))
        self._slam_estimate: SlamEstimate | None = None

    @property
    def slam_estimate(self) -> SlamEstimate | None:
        """``pose_estimated/`` and ``loop_corrections.json`` of the selected frames, read on first
        use (see ``slam_estimate``); None when the folder has no ``pose_estimated/``."""
        if self._slam_estimate is None and has_slam_estimate(self.root):
            self._slam_estimate = read_slam_estimate(
                self.root, {r.number: r.stamp_ns for r in self.records})
        return self._slam_estimate

    def _load(self, position: int, record: FrameRecord) -> DatasetSample:
        n, (height, width) = record.number, self.intrinsics.shape
        depth_path = self.root / DEPTH_DIR / f"{n}.png"
        raw_depth = read_uint16(depth_path, "depth")
        if raw_depth.shape != (height, width):
            raise file_error(depth_path, list(raw_depth.shape), "depth size differs from the "
                             f"dataset's ({height}x{width})", kind="size_mismatch")
        rgb = resize_rgb(read_rgb(self._color_paths[n]), height, width)
        pose_path = self.root / POSE_DIR / f"{n}.txt"
        T_world_cam = checked_pose(read_matrix(pose_path, (4, 4), "T_world_cam"), pose_path)
        frame = RgbdFrame(stamp_ns=record.stamp_ns, rgb=rgb,
                          depth_m=raw_depth.astype(np.float32) / np.float32(DEPTH_SCALE),
                          T_world_cam=T_world_cam, intrinsics=self.intrinsics,
                          frame_id=DEFAULT_CAMERA_FRAME_ID, index=position)
        segmentation = self._load_segmentation(n, record.stamp_ns) if self.has_segmentation \
            else None
        ground_truth = self._load_ground_truth(n) if self.has_ground_truth else None
        return DatasetSample(frame=frame, segmentation=segmentation, ground_truth=ground_truth)

    def _load_ground_truth(self, n: int) -> GroundTruthLabels:
        height, width = self.intrinsics.shape
        label_path = self.root / LABEL_DIR / f"{n}.png"
        labels = resize_ids(read_uint16(label_path, "label_ids"), height, width)
        instances = resize_ids(read_uint16(self.root / INSTANCE_DIR / f"{n}.png",
                                           "instance_ids"), height, width)
        if self.registry is not None:
            unknown = sorted(set(np.unique(labels).tolist()) - _known_ids(self.registry))
            if unknown:
                raise file_error(label_path, unknown[:10], f"label ids not in "
                                 f"{self.root / LABELS_FILE}", field="label_ids",
                                 kind="unknown_label")
        return GroundTruthLabels(label_ids=labels, instance_ids=instances)

    def _load_segmentation(self, n: int, stamp_ns: int) -> PanopticSegmentation2D:
        height, width = self.intrinsics.shape
        png_path = self.root / PANOPTIC_DIR / f"{n}.png"
        json_path = png_path.with_suffix(".json")
        segments = parse_panoptic_json(json_path, self.registry)
        ids = resize_ids(read_uint16(png_path, "segment_ids"), height, width)
        try:
            return PanopticSegmentation2D(ids.astype(np.int32), segments, stamp_ns)
        except InvalidInputError as exc:
            raise file_error(png_path, exc.value, f"{exc.reason} (segments of {json_path.name})",
                             field=exc.field, kind="segmentation") from exc


def _known_ids(registry: LabelRegistry) -> set[int]:
    return {VOID_LABEL_ID} | {label.id for label in registry}


def parse_panoptic_json(path: Path, registry: LabelRegistry | None) -> tuple[Segment, ...]:
    """Read ``{"segments": [{id, label, label_id, is_thing, score?, phrase?}, ...]}``.

    With a registry, each segment's label name and id must agree with it (an unknown label or a
    thing/stuff flag that differs from the registry raises :class:`DataFormatError`).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise file_error(path, type(exc).__name__, f"cannot read: {exc}",
                         kind="missing_file") from exc
    except ValueError as exc:
        raise file_error(path, type(exc).__name__, f"invalid JSON: {exc}",
                         kind="segmentation") from exc
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise file_error(path, type(data).__name__, "expected {\"segments\": [...]}",
                         kind="segmentation")
    segments = []
    for i, entry in enumerate(data["segments"]):
        field = f"segments[{i}]"
        if not isinstance(entry, dict):
            raise file_error(path, entry, "each segment must be an object", field=field,
                             kind="segmentation")
        missing = [k for k in ("id", "label", "label_id", "is_thing") if k not in entry]
        if missing:
            raise file_error(path, missing, "segment keys missing", field=field,
                             kind="segmentation")
        if not isinstance(entry["is_thing"], bool):
            raise file_error(path, entry["is_thing"], "must be true or false",
                             field=f"{field}.is_thing", kind="segmentation")
        segment = _segment_from_entry(path, field, entry)
        if registry is not None:
            _check_against_registry(path, field, segment, registry)
        segments.append(segment)
    return tuple(segments)


def _segment_from_entry(path: Path, field: str, entry: dict[str, Any]) -> Segment:
    try:
        return Segment(id=int(entry["id"]), label=str(entry["label"]),
                       label_id=int(entry["label_id"]), is_thing=entry["is_thing"],
                       score=float(entry.get("score", 1.0)), phrase=str(entry.get("phrase", "")))
    except InvalidInputError as exc:
        raise file_error(path, exc.value, exc.reason, field=f"{field}.{exc.field}",
                         kind="segmentation") from exc
    except (TypeError, ValueError) as exc:
        raise file_error(path, entry, f"bad value: {exc}", field=field,
                         kind="segmentation") from exc


def _check_against_registry(path: Path, field: str, segment: Segment,
                            registry: LabelRegistry) -> None:
    try:
        label = registry.resolve(label=segment.label, label_id=segment.label_id)
    except InvalidInputError as exc:
        raise file_error(path, exc.value, exc.reason, field=f"{field}.label",
                         kind="unknown_label") from exc
    if label.id != segment.label_id:
        raise file_error(path, segment.label_id, f"label '{segment.label}' has id {label.id}",
                         field=f"{field}.label_id", kind="unknown_label")
    if label.is_thing != segment.is_thing:
        raise file_error(path, segment.is_thing, f"'{label.name}' has is_thing="
                         f"{label.is_thing} in the registry", field=f"{field}.is_thing",
                         kind="unknown_label")


def _read_timestamps(path: Path, numbers: list[int]) -> dict[int, int]:
    """``timestamps.txt`` (``<i> <stamp_ns>`` lines) or ``i / 30 s`` when absent."""
    if not path.is_file():
        return {n: stamp_from_number(n) for n in numbers}
    stamps: dict[int, int] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            number, stamp = int(parts[0]), int(parts[1])
            if len(parts) != 2 or stamp < 0:
                raise ValueError("expected '<frame> <stamp_ns>' with stamp_ns >= 0")
        except (ValueError, IndexError) as exc:
            raise file_error(path, line[:60], str(exc), field=f"line {line_no}",
                             kind="stamp") from exc
        if number in stamps:
            raise file_error(path, number, "frame listed twice", field=f"line {line_no}",
                             kind="stamp")
        stamps[number] = stamp
    missing = [n for n in numbers if n not in stamps]
    if missing:
        raise file_error(path, missing[:10], "frames without a timestamp", kind="stamp")
    return stamps


def _read_intrinsics(root: Path, numbers: list[int]) -> CameraIntrinsics:
    """The depth camera's K with the size of the first readable depth image."""
    path = root / INTRINSIC_DIR / DEPTH_INTRINSICS_FILE
    if not path.is_file():
        raise DataFormatError(str(path), "missing", "depth intrinsics are required",
                              kind="missing_file")
    K = read_matrix(path, (4, 4), "K")  # noqa: N806
    errors = []
    for n in numbers:
        try:
            height, width = image_size(root / DEPTH_DIR / f"{n}.png")
        except DataFormatError as exc:
            errors.append(str(exc))
            continue
        try:
            return CameraIntrinsics.from_K(K, width=width, height=height)
        except ValueError as exc:
            raise file_error(path, K.tolist(), str(exc), field="K", kind="intrinsics") from exc
    raise DataFormatError(str(root / DEPTH_DIR), errors[:3] or "no frames",
                          "no readable depth image to take the image size from",
                          kind="missing_file")


def _read_scene_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise file_error(path, type(exc).__name__, f"invalid JSON: {exc}",
                         kind="metadata") from exc
    if not isinstance(data, dict):
        raise file_error(path, type(data).__name__, "must hold a JSON object", kind="metadata")
    return data
