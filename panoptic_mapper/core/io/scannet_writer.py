"""Writer of panoptic_mapper scenes in the ScanNet export layout (read back by ``open_dataset``).

Frames are numbered ``0..N-1`` in the order they are given and written as they arrive, so a
generator of samples is never held in memory. Every sample must have the camera given to the
writer, and all samples must agree on whether they carry a segmentation and ground truth.

Owns: the on-disk encoding of :class:`DatasetSample` streams (see ``docs/dataset_format.md``).
Does not own: reading (``scannet_layout``) or producing samples (scene generator, datasets).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io import scannet_layout as layout
from panoptic_mapper.core.io.image_files import write_jpeg, write_matrix, write_png
from panoptic_mapper.core.io.ply import write_ply
from panoptic_mapper.core.io.progress import progress_bar
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import (VOID_LABEL_ID, CameraIntrinsics, DatasetSample,
                                        PanopticMesh)

MAX_DEPTH_M = 65535 / layout.DEPTH_SCALE
"""Largest depth a uint16 millimetre PNG can hold, metres."""


@dataclass
class DatasetWriteReport:
    """What :func:`write_scannet_layout` wrote."""

    out_dir: Path
    num_frames: int
    has_segmentation: bool
    has_ground_truth: bool


def write_scannet_layout(out_dir: str | Path, samples: Iterable[DatasetSample],
                         registry: LabelRegistry, intrinsics: CameraIntrinsics,
                         gt_mesh: PanopticMesh | None = None,
                         metadata: dict[str, Any] | None = None, progress: bool = True,
                         color_format: Literal["png", "jpg"] = "png",
                         jpeg_quality: int = 95) -> DatasetWriteReport:
    """Write samples as a ScanNet-layout scene that :func:`open_dataset` reads back.

    Args:
        out_dir: new folder (it may exist only if empty).
        samples: frames in order, all with camera ``intrinsics``.
        registry: the labels the segment and ground-truth ids refer to (``labels.yaml``).
        intrinsics: camera of every frame (``intrinsic/intrinsic_depth.txt``).
        gt_mesh: ground-truth mesh (``gt_mesh.ply``), if any.
        metadata: JSON-serialisable free-form dict (``scene.json``), e.g. generator settings.
        progress: show a tqdm progress bar.
        color_format: ``"png"`` (lossless, exact round trip) or ``"jpg"`` (lossy, smaller).
        jpeg_quality: JPEG quality 1..95 when ``color_format="jpg"``.

    Raises:
        InvalidInputError: non-empty ``out_dir``, a sample with another camera, a segmentation
            or ground truth present in some samples only, label ids unknown to ``registry``,
            values that do not fit the 16-bit PNGs, or non-serialisable ``metadata``.
    """
    if color_format not in ("png", "jpg"):
        raise InvalidInputError("color_format", color_format, "must be 'png' or 'jpg'",
                                kind="config")
    if not 1 <= int(jpeg_quality) <= 95:
        raise InvalidInputError("jpeg_quality", jpeg_quality, "must be in 1..95", kind="config")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError("out_dir", str(out), "exists and is not an empty folder",
                                kind="file_exists")
    metadata_text = _metadata_json(metadata)
    for name in (layout.COLOR_DIR, layout.DEPTH_DIR, layout.POSE_DIR, layout.INTRINSIC_DIR):
        (out / name).mkdir(parents=True, exist_ok=True)
    K = np.eye(4)  # noqa: N806
    K[:3, :3] = intrinsics.K
    write_matrix(out / layout.INTRINSIC_DIR / layout.DEPTH_INTRINSICS_FILE, K)
    write_matrix(out / layout.INTRINSIC_DIR / layout.COLOR_INTRINSICS_FILE, K)
    registry.to_yaml(out / layout.LABELS_FILE)
    (out / layout.SCENE_FILE).write_text(metadata_text, encoding="utf-8")
    if gt_mesh is not None:
        write_ply(out / layout.GT_MESH_FILE, gt_mesh)

    known_labels = np.zeros(registry.max_id + 1, bool)
    known_labels[[VOID_LABEL_ID] + [label.id for label in registry]] = True
    writer = _FrameWriter(out, intrinsics, registry, known_labels, color_format,
                          int(jpeg_quality))
    stamps: list[str] = []
    for sample in progress_bar(samples, progress, "writing dataset"):
        stamps.append(f"{len(stamps)} {writer.write(len(stamps), sample)}")
    (out / layout.TIMESTAMPS_FILE).write_text("\n".join(stamps) + "\n" if stamps else "",
                                              encoding="utf-8")
    return DatasetWriteReport(out, len(stamps), bool(writer.has_segmentation),
                              bool(writer.has_ground_truth))


class _FrameWriter:
    """Writes the files of one frame; remembers which optional parts the stream carries."""

    def __init__(self, out: Path, intrinsics: CameraIntrinsics, registry: LabelRegistry,
                 known_labels: np.ndarray, color_format: str, jpeg_quality: int):
        self.out, self.intrinsics, self.registry = out, intrinsics, registry
        self.known_labels, self.color_format = known_labels, color_format
        self.jpeg_quality = jpeg_quality
        self.has_segmentation: bool | None = None
        self.has_ground_truth: bool | None = None

    def write(self, i: int, sample: DatasetSample) -> int:
        """Write frame ``i``; returns its stamp, ns."""
        frame = sample.frame
        if frame.intrinsics != self.intrinsics:
            raise InvalidInputError(f"samples[{i}].frame.intrinsics", frame.intrinsics,
                                    f"differs from the dataset camera {self.intrinsics}",
                                    kind="size_mismatch")
        self.has_segmentation = self._same_parts(i, "segmentation", self.has_segmentation,
                                                 sample.segmentation is not None)
        self.has_ground_truth = self._same_parts(i, "ground_truth", self.has_ground_truth,
                                                 sample.ground_truth is not None)
        if float(frame.depth_m.max(initial=0.0)) > MAX_DEPTH_M:
            raise InvalidInputError(f"samples[{i}].frame.depth_m",
                                    f"max {float(frame.depth_m.max()):.2f} m",
                                    f"exceeds {MAX_DEPTH_M} m (uint16 millimetres)",
                                    kind="depth_values")
        if sample.segmentation is not None:
            self._write_segmentation(i, sample)
        if sample.ground_truth is not None:
            self._write_ground_truth(i, sample)
        if self.color_format == "png":
            write_png(self.out / layout.COLOR_DIR / f"{i}.png", frame.rgb)
        else:
            write_jpeg(self.out / layout.COLOR_DIR / f"{i}.jpg", frame.rgb, self.jpeg_quality)
        depth_mm = np.round(frame.depth_m.astype(np.float64) * layout.DEPTH_SCALE)
        write_png(self.out / layout.DEPTH_DIR / f"{i}.png", depth_mm.astype(np.uint16))
        write_matrix(self.out / layout.POSE_DIR / f"{i}.txt", frame.T_world_cam)
        return frame.stamp_ns

    def _same_parts(self, i: int, part: str, seen: bool | None, present: bool) -> bool:
        if seen is not None and seen != present:
            raise InvalidInputError(f"samples[{i}].{part}", "present" if present else "None",
                                    f"earlier samples {'had' if seen else 'had no'} {part}; "
                                    "all frames of a dataset must agree", kind="dataset")
        if seen is None and present:
            name = layout.PANOPTIC_DIR if part == "segmentation" else layout.LABEL_DIR
            (self.out / name).mkdir()
            if part == "ground_truth":
                (self.out / layout.INSTANCE_DIR).mkdir()
        return present

    def _write_segmentation(self, i: int, sample: DatasetSample) -> None:
        segmentation = sample.segmentation
        field = f"samples[{i}].segmentation"
        if segmentation.shape != self.intrinsics.shape:
            raise InvalidInputError(f"{field}.segment_ids", list(segmentation.shape),
                                    f"must match the camera {list(self.intrinsics.shape)}",
                                    kind="size_mismatch")
        ids = _uint16(segmentation.segment_ids, f"{field}.segment_ids")
        for segment in segmentation.segments:
            if segment.id > 65535:
                raise InvalidInputError(f"{field}.segments", segment.id,
                                        "segment ids must fit uint16", kind="encoding")
            label = self.registry.resolve(label=segment.label, label_id=segment.label_id)
            if label.id != segment.label_id or label.is_thing != segment.is_thing:
                raise InvalidInputError(f"{field}.segments[{segment.id}]", segment.label,
                                        f"disagrees with the registry ({label})",
                                        kind="unknown_label")
        entries = [{"id": s.id, "label": s.label, "label_id": s.label_id,
                    "is_thing": s.is_thing, "score": s.score, "phrase": s.phrase}
                   for s in segmentation.segments]
        base = self.out / layout.PANOPTIC_DIR / str(i)
        write_png(base.with_suffix(".png"), ids)
        base.with_suffix(".json").write_text(json.dumps({"segments": entries}, indent=1),
                                             encoding="utf-8")

    def _write_ground_truth(self, i: int, sample: DatasetSample) -> None:
        truth = sample.ground_truth
        field = f"samples[{i}].ground_truth"
        if truth.label_ids.shape != self.intrinsics.shape:
            raise InvalidInputError(field, list(truth.label_ids.shape),
                                    f"must match the camera {list(self.intrinsics.shape)}",
                                    kind="size_mismatch")
        labels = _uint16(truth.label_ids, f"{field}.label_ids")
        known = np.zeros(labels.shape, bool)
        in_table = labels < len(self.known_labels)
        known[in_table] = self.known_labels[labels[in_table]]
        unknown = labels[~known]
        if unknown.size:
            raise InvalidInputError(f"{field}.label_ids", sorted(set(unknown.tolist()))[:10],
                                    "unknown to the label registry", kind="unknown_label")
        write_png(self.out / layout.LABEL_DIR / f"{i}.png", labels)
        write_png(self.out / layout.INSTANCE_DIR / f"{i}.png",
                  _uint16(truth.instance_ids, f"{field}.instance_ids"))


def _uint16(ids: np.ndarray, field: str) -> np.ndarray:
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > 65535):
        raise InvalidInputError(field, f"range [{int(ids.min())}, {int(ids.max())}]",
                                "must fit a uint16 PNG (0..65535)", kind="encoding")
    return ids.astype(np.uint16)


def _metadata_json(metadata: dict[str, Any] | None) -> str:
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInputError("metadata", type(metadata).__name__, "must be a dict",
                                kind="config")
    try:
        return json.dumps(metadata or {}, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("metadata", str(exc)[:80], "must be JSON-serialisable",
                                kind="config") from exc
