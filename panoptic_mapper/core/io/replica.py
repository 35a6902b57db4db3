"""Reader of the NICE-SLAM render layout of Replica (``cam_params.json`` + ``<scene>/results``).

Layout: ``cam_params.json`` (``{"camera": {w, h, fx, fy, cx, cy, scale}}``) next to, or inside,
the scene folder; ``<scene>/results/frameNNNNNN.jpg`` and ``depthNNNNNN.png``;
``<scene>/traj.txt`` with one row-major 4x4 ``T_world_cam`` per line (line ``n`` is frame ``n``);
optionally ``<scene>_mesh.ply`` next to the scene folder (ground-truth mesh).

Conventions (checked against ``shared/data/replica_office0_nvblox_fixture`` in the tests):
depth is uint16 in units of ``1 / scale`` metres (scale 6553.5), 0 = no measurement; poses use
OpenCV camera axes as stored (NICE-SLAM's own loader flips y and z for OpenGL: we do not); there
are no timestamps, so frame ``n`` is stamped ``n / 30 s``.

Owns: Replica detection and decoding. Does not own: the generic dataset API (``rgbd_dataset``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.io.image_files import file_error, read_rgb, read_uint16
from panoptic_mapper.core.io.rgbd_dataset import (DEFAULT_CAMERA_FRAME_ID, FrameRecord,
                                                  RgbdDataset, checked_pose, select_records,
                                                  stamp_from_number)
from panoptic_mapper.core.types import CameraIntrinsics, DatasetSample, RgbdFrame

PARAMS_FILE = "cam_params.json"
TRAJECTORY_FILE = "traj.txt"
_COLOR_NAME = re.compile(r"^frame(\d+)\.(jpg|png)$")


def find_scene(root: Path) -> tuple[Path, Path] | None:
    """``(scene_dir, cam_params_path)`` when ``root`` is a Replica scene or a folder holding
    exactly one; None when it is not Replica. Several scenes raise :class:`DataFormatError`."""
    if (root / "results").is_dir():
        for params in (root / PARAMS_FILE, root.parent / PARAMS_FILE):
            if params.is_file():
                return root, params
        return None
    params = root / PARAMS_FILE
    if not params.is_file() or not root.is_dir():
        return None
    scenes = sorted(d for d in root.iterdir() if (d / "results").is_dir())
    if not scenes:
        return None
    if len(scenes) > 1:
        raise DataFormatError(str(root), [d.name for d in scenes],
                              "folder holds several Replica scenes; open one of them",
                              kind="layout")
    return scenes[0], params


def is_replica(root: Path) -> bool:
    """True when ``root`` looks like a Replica (NICE-SLAM) scene or scene collection."""
    try:
        return find_scene(root) is not None
    except DataFormatError:
        return True


class ReplicaDataset(RgbdDataset):
    """A NICE-SLAM Replica scene (see module docstring)."""

    layout = "replica"

    def __init__(self, root: Path, start: int = 0, stride: int = 1,
                 max_frames: int | None = None):
        root = Path(root)
        found = find_scene(root)
        if found is None:
            raise DataFormatError(str(root), "no cam_params.json + */results",
                                  "not a Replica (NICE-SLAM) folder", kind="layout")
        scene_dir, params_path = found
        self.results_dir = scene_dir / "results"
        """Folder of the per-frame images."""
        intrinsics, self.depth_scale = _read_params(params_path)
        self._color_ext: dict[int, str] = {}
        records = []
        for path in self.results_dir.iterdir():
            match = _COLOR_NAME.match(path.name)
            if match:
                number = int(match.group(1))
                self._color_ext[number] = match.group(2)
                records.append(FrameRecord(path.stem, number, stamp_from_number(number)))
        if not records:
            raise DataFormatError(str(self.results_dir), "no frame*.jpg",
                                  "Replica scene without colour images", kind="missing_file")
        records.sort(key=lambda r: r.number)
        self.trajectory_path = scene_dir / TRAJECTORY_FILE
        """The ``traj.txt`` file (one pose per line)."""
        try:
            self._trajectory_lines = self.trajectory_path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise file_error(self.trajectory_path, type(exc).__name__,
                             f"cannot read trajectory: {exc}", kind="missing_file") from exc
        mesh = scene_dir.parent / f"{scene_dir.name}_mesh.ply"
        super().__init__(scene_dir, scene_dir.name, intrinsics,
                         select_records(records, start, stride, max_frames),
                         gt_mesh_path=mesh if mesh.is_file() else None)

    def _load(self, position: int, record: FrameRecord) -> DatasetSample:
        number = record.number
        rgb = read_rgb(self.results_dir / f"frame{number:06d}.{self._color_ext[number]}")
        depth_path = self.results_dir / f"depth{number:06d}.png"
        depth_m = read_uint16(depth_path, "depth").astype(np.float32) / np.float32(
            self.depth_scale)
        T_world_cam = checked_pose(self._pose_matrix(number), self.trajectory_path,
                                   f"line {number + 1}")
        if rgb.shape[:2] != self.intrinsics.shape or depth_m.shape != self.intrinsics.shape:
            raise file_error(depth_path, f"rgb {list(rgb.shape[:2])}, depth "
                             f"{list(depth_m.shape)}", "image sizes differ from cam_params "
                             f"({self.intrinsics.height}x{self.intrinsics.width})",
                             kind="size_mismatch")
        frame = RgbdFrame(stamp_ns=record.stamp_ns, rgb=rgb, depth_m=depth_m,
                          T_world_cam=T_world_cam, intrinsics=self.intrinsics,
                          frame_id=DEFAULT_CAMERA_FRAME_ID, index=position)
        return DatasetSample(frame=frame)

    def _pose_matrix(self, number: int) -> np.ndarray:
        field = f"line {number + 1}"
        if number >= len(self._trajectory_lines):
            raise file_error(self.trajectory_path, len(self._trajectory_lines),
                             f"no pose for frame {number} (trajectory too short)", field=field,
                             kind="pose")
        line = self._trajectory_lines[number]
        try:
            values = np.array([float(v) for v in line.split()], np.float64)
        except ValueError as exc:
            raise file_error(self.trajectory_path, line[:40], f"not numeric: {exc}",
                             field=field, kind="pose") from exc
        if values.size != 16:
            raise file_error(self.trajectory_path, f"{values.size} numbers",
                             "expected 16 numbers (row-major 4x4)", field=field, kind="pose")
        return values.reshape(4, 4)


def _read_params(path: Path) -> tuple[CameraIntrinsics, float]:
    """``cam_params.json`` -> (intrinsics, depth units per metre)."""
    try:
        camera = json.loads(path.read_text(encoding="utf-8"))["camera"]
        values = {key: camera[key] for key in ("w", "h", "fx", "fy", "cx", "cy", "scale")}
    except (OSError, ValueError) as exc:
        raise file_error(path, type(exc).__name__, f"unreadable JSON: {exc}",
                         kind="intrinsics") from exc
    except (KeyError, TypeError) as exc:
        raise file_error(path, str(exc), "expected {'camera': {w, h, fx, fy, cx, cy, scale}}",
                         kind="intrinsics") from exc
    scale = values.pop("scale")
    if not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise file_error(path, scale, "depth scale must be > 0", field="camera.scale",
                         kind="intrinsics")
    try:
        intrinsics = CameraIntrinsics(width=values["w"], height=values["h"], fx=values["fx"],
                                      fy=values["fy"], cx=values["cx"], cy=values["cy"])
    except ValueError as exc:
        raise file_error(path, getattr(exc, "value", ""), str(exc), field="camera",
                         kind="intrinsics") from exc
    return intrinsics, float(scale)
