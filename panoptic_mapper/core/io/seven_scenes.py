"""Reader of the Microsoft 7-Scenes layout: ``frames/frame-NNNNNN.{color.jpg,depth.png,pose.txt}``.

Conventions (checked against ``shared/data/7scenes_redkitchen_stride4`` in the tests):
depth is uint16 millimetres with 0 and 65535 both "no reading"; ``pose.txt`` is the 4x4
camera-to-world transform ``T_world_cam`` in metres (OpenCV camera axes); ``camera-intrinsics.txt``
is the 3x3 K shared by colour and depth (they are not registered to each other in 7-Scenes);
there are no timestamps, so frame number ``n`` is stamped ``n / 30 s``.

Owns: 7-Scenes detection and decoding. Does not own: the generic dataset API (``rgbd_dataset``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.io.image_files import (file_error, image_size, read_matrix, read_rgb,
                                                 read_uint16)
from panoptic_mapper.core.io.rgbd_dataset import (DEFAULT_CAMERA_FRAME_ID, FrameRecord,
                                                  RgbdDataset, checked_pose, select_records,
                                                  stamp_from_number)
from panoptic_mapper.core.types import CameraIntrinsics, DatasetSample, RgbdFrame

INTRINSICS_FILE = "camera-intrinsics.txt"
DEPTH_SCALE = 1000.0
"""Depth PNG units per metre (millimetres)."""
INVALID_DEPTH = 65535
"""Kinect "invalid" marker, read as 0 (no measurement) like the value 0 itself."""
_COLOR_NAME = re.compile(r"^(frame-(\d+))\.color\.(jpg|png)$")


def frames_dir(root: Path) -> Path | None:
    """The folder holding ``frame-*.color.*`` files (``root/frames`` or ``root``), or None."""
    for candidate in (root / "frames", root):
        if candidate.is_dir() and any(candidate.glob("frame-*.color.*")):
            return candidate
    return None


def is_seven_scenes(root: Path) -> bool:
    """True when ``root`` looks like a 7-Scenes sequence."""
    return frames_dir(root) is not None


class SevenScenesDataset(RgbdDataset):
    """A 7-Scenes sequence (see module docstring)."""

    layout = "7scenes"

    def __init__(self, root: Path, start: int = 0, stride: int = 1,
                 max_frames: int | None = None):
        root = Path(root)
        folder = frames_dir(root)
        if folder is None:
            raise DataFormatError(str(root), "no frame-*.color.jpg/png",
                                  "not a 7-Scenes folder (expected frames/frame-*.color.jpg)",
                                  kind="layout")
        self.frames_dir = folder
        """Folder of the per-frame files."""
        self._color_ext: dict[str, str] = {}
        records = []
        for path in folder.iterdir():
            match = _COLOR_NAME.match(path.name)
            if match:
                name, number, ext = match.group(1), int(match.group(2)), match.group(3)
                self._color_ext[name] = ext
                records.append(FrameRecord(name, number, stamp_from_number(number)))
        records.sort(key=lambda r: r.number)
        intrinsics = _read_intrinsics(root, folder, records)
        super().__init__(root, root.name, intrinsics,
                         select_records(records, start, stride, max_frames))

    def _load(self, position: int, record: FrameRecord) -> DatasetSample:
        base = self.frames_dir / record.name
        rgb = read_rgb(base.with_name(f"{record.name}.color.{self._color_ext[record.name]}"))
        depth_path = base.with_name(f"{record.name}.depth.png")
        raw = read_uint16(depth_path, "depth")
        depth_m = np.where(raw == INVALID_DEPTH, 0, raw).astype(np.float32) / DEPTH_SCALE
        pose_path = base.with_name(f"{record.name}.pose.txt")
        T_world_cam = checked_pose(read_matrix(pose_path, (4, 4), "T_world_cam"), pose_path)
        if rgb.shape[:2] != self.intrinsics.shape or depth_m.shape != self.intrinsics.shape:
            raise file_error(depth_path, f"rgb {list(rgb.shape[:2])}, depth "
                             f"{list(depth_m.shape)}", "image sizes differ from the camera "
                             f"({self.intrinsics.height}x{self.intrinsics.width})",
                             kind="size_mismatch")
        frame = RgbdFrame(stamp_ns=record.stamp_ns, rgb=rgb, depth_m=depth_m,
                          T_world_cam=T_world_cam, intrinsics=self.intrinsics,
                          frame_id=DEFAULT_CAMERA_FRAME_ID, index=position)
        return DatasetSample(frame=frame)


def _read_intrinsics(root: Path, folder: Path, records: list[FrameRecord]) -> CameraIntrinsics:
    """K from ``camera-intrinsics.txt``; image size from the first readable depth header."""
    path = next((p for p in (root / INTRINSICS_FILE, folder / INTRINSICS_FILE) if p.is_file()),
                None)
    if path is None:
        raise DataFormatError(str(root / INTRINSICS_FILE), "missing",
                              "7-Scenes folder without camera intrinsics", kind="missing_file")
    K = read_matrix(path, (3, 3), "K")  # noqa: N806
    errors = []
    for record in records:
        try:
            height, width = image_size(folder / f"{record.name}.depth.png")
        except DataFormatError as exc:
            errors.append(str(exc))
            continue
        try:
            return CameraIntrinsics.from_K(K, width=width, height=height)
        except ValueError as exc:
            raise file_error(path, K.tolist(), str(exc), field="K", kind="intrinsics") from exc
    raise DataFormatError(str(folder), errors[:3] or "no frames",
                          "no readable depth image to take the image size from",
                          kind="missing_file")
