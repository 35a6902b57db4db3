"""The refined map's file: the prior, the keyframes and the field checkpoint in one ``.npz``.

Layout (format 3; 1 and 2 still load):

* ``meta``: JSON (format version, method, configuration, class list, id bindings, keyframe
  infos, restart count, ``prior_kind``);
* ``prior``: the prior's own save file (an instant map's ``.npz``, or for a prior received over
  DDS a mesh-and-instances file, see ``prior_kind``);
* ``field``: ``FieldTrainer.state_dict()`` (``torch.save``), plus ``serving_field`` during a
  restart on a grown box (the previous field, which serves);
* ``kf{i}_{name}``: the arrays of keyframe ``i``.

Reading decodes every part first and names the part that failed (``DataFormatError``); the
layer swaps its state in only once all of them were read (``refined_layer.py``).

Owns: the file format (:func:`write_refined_file`, :func:`read_refined_file`), keyframe arrays.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.field.keyframes import Keyframe
from panoptic_mapper.core.types import CameraIntrinsics

SAVE_FORMAT_VERSION = 3
"""Version 2 added the restart count and, during a restart, the serving field's checkpoint;
version 3 the kind of the prior part (``prior_kind``)."""
READABLE_FORMAT_VERSIONS = (1, 2, 3)
METHOD_NAME = "refined"
KEYFRAME_ARRAYS = ("depth_m", "semantic_class", "thing_mask", "thing_classes", "T_world_cam")
OPTIONAL_KEYFRAME_ARRAYS = ("rgb", "score")
SAVED_META_KEYS = ("config", "selector", "bindings", "published", "finalized", "keyframes")
"""Meta entries a reader needs besides the format version, method and class list."""


@dataclass
class RefinedFile:
    """The parts of a map file, decoded but not yet turned into map state."""

    meta: dict[str, Any]
    prior_bytes: bytes
    """The prior's own save file."""
    checkpoint: dict
    """``FieldTrainer.state_dict()`` (plus ``"appearance"`` when it was trained)."""
    serving_checkpoint: dict | None
    """The previous field's ``FieldTrainer.state_dict()`` when the map was saved during a
    restart on a grown box (that field served), else None."""
    keyframe_arrays: list[dict[str, np.ndarray]]
    """Per keyframe: its arrays by name (``KEYFRAME_ARRAYS`` and the optional ones present)."""

    @property
    def prior_kind(self) -> str:
        """What the prior part holds (files before format 3 always hold an instant map)."""
        return str(self.meta.get("prior_kind", "instant"))


def keyframe_info(keyframe: Keyframe) -> dict[str, Any]:
    """The JSON part of a keyframe."""
    k = keyframe
    return {"stamp_ns": k.stamp_ns, "has_segmentation": k.has_segmentation,
            "intrinsics": [k.intrinsics.width, k.intrinsics.height, k.intrinsics.fx,
                           k.intrinsics.fy, k.intrinsics.cx, k.intrinsics.cy]}


def write_refined_file(path: str | Path, meta: dict[str, Any], prior_bytes: bytes,
                       checkpoint: dict, serving_checkpoint: dict | None,
                       keyframes: list[Keyframe]) -> None:
    """Write one map file (``meta`` gets the format version, method and keyframe infos)."""
    meta = {**meta, "format_version": SAVE_FORMAT_VERSION, "method": METHOD_NAME,
            "keyframes": [keyframe_info(k) for k in keyframes]}
    arrays: dict[str, np.ndarray] = {}
    for i, k in enumerate(keyframes):
        arrays.update({f"kf{i}_{name}": np.asarray(getattr(k, name)) for name in KEYFRAME_ARRAYS})
        arrays.update({f"kf{i}_{name}": getattr(k, name) for name in OPTIONAL_KEYFRAME_ARRAYS
                       if getattr(k, name) is not None})
    if serving_checkpoint is not None:
        arrays["serving_field"] = _torch_bytes(serving_checkpoint)
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             prior=np.frombuffer(prior_bytes, np.uint8), field=_torch_bytes(checkpoint),
             **arrays)
    Path(path).write_bytes(buffer.getvalue())


def read_refined_file(path: Path) -> RefinedFile:
    """Decode every part of a map file written by :func:`write_refined_file`.

    Raises:
        DataFormatError: a part is missing, truncated or corrupt (the message names it).
    """
    with file_part(path, "archive"):
        data = np.load(path)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
    with data:
        with file_part(path, "meta"):
            meta = json.loads(bytes(data["meta"]).decode())
            if not isinstance(meta, dict):
                raise ValueError("meta is not a JSON object")
            missing = [key for key in SAVED_META_KEYS if key not in meta]
            if missing:
                raise ValueError(f"meta lacks {missing}")
        with file_part(path, "prior"):
            prior_bytes = bytes(data["prior"])
        with file_part(path, "field checkpoint"):
            checkpoint = _torch_dict(data["field"])
        serving_checkpoint = None
        if "serving_field" in data.files:
            with file_part(path, "serving field checkpoint"):
                serving_checkpoint = _torch_dict(data["serving_field"])
        with file_part(path, "keyframes"):
            keyframe_arrays = []
            for i in range(len(meta.get("keyframes", []))):
                arrays = {name: data[f"kf{i}_{name}"] for name in KEYFRAME_ARRAYS}
                arrays.update({name: data[f"kf{i}_{name}"] for name in OPTIONAL_KEYFRAME_ARRAYS
                               if f"kf{i}_{name}" in data.files})
                keyframe_arrays.append(arrays)
    return RefinedFile(meta, prior_bytes, checkpoint, serving_checkpoint, keyframe_arrays)


def check_refined_meta(meta: dict[str, Any], semantic_labels: list[int]) -> None:
    """Raise :class:`DataFormatError` unless ``meta`` is a readable refined map of this label
    registry (``semantic_labels``: the field's class list)."""
    if meta.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise DataFormatError("format_version", meta.get("format_version"),
                              f"unsupported map file version (expected one of "
                              f"{list(READABLE_FORMAT_VERSIONS)})", kind="map_file")
    if meta.get("method") != METHOD_NAME:
        raise DataFormatError("method", meta.get("method"),
                              f"file holds a '{meta.get('method')}' map, not '{METHOD_NAME}'",
                              kind="map_file")
    if meta.get("semantic_labels") != semantic_labels:
        raise DataFormatError("semantic_labels", meta.get("semantic_labels"),
                              "map was built with another label registry", kind="map_file")


def keyframe_from_arrays(info: dict, arrays: dict[str, np.ndarray]) -> Keyframe:
    """A saved keyframe; raises ValueError when its arrays do not fit its image size."""
    width, height, fx, fy, cx, cy = info["intrinsics"]
    image = (int(height), int(width))
    expected = {"depth_m": (image, np.floating), "semantic_class": (image, np.integer),
                "thing_mask": (image, np.integer), "T_world_cam": ((4, 4), np.floating),
                "rgb": ((*image, 3), np.integer), "score": (image, np.integer)}
    for name, (shape, kind) in expected.items():
        array = arrays.get(name)
        if array is not None and (array.shape != shape or not np.issubdtype(array.dtype, kind)):
            raise ValueError(f"keyframe at {info['stamp_ns']} ns: {name} is {array.dtype} "
                             f"{list(array.shape)}, expected {kind.__name__} {list(shape)}")
    thing_classes = arrays["thing_classes"]
    if thing_classes.ndim != 1 or not np.issubdtype(thing_classes.dtype, np.integer):
        raise ValueError(f"keyframe at {info['stamp_ns']} ns: thing_classes is "
                         f"{thing_classes.dtype} {list(thing_classes.shape)}, expected a 1-D "
                         "integer array")
    return Keyframe(int(info["stamp_ns"]), arrays["T_world_cam"],
                    CameraIntrinsics(int(width), int(height), fx, fy, cx, cy),
                    arrays["depth_m"], arrays["semantic_class"], arrays["thing_mask"],
                    arrays["thing_classes"], bool(info["has_segmentation"]), arrays.get("rgb"),
                    arrays.get("score"))


@contextlib.contextmanager
def file_part(path: Path, part: str) -> Iterator[None]:
    """Turn any failure while reading ``part`` of the map file into a DataFormatError."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (zip, numpy, json, pickle, torch and our own
        # checks fail with many exception types; every one means this part is unusable)
        raise DataFormatError("path", str(path), f"{part} part of the map file is unusable: "
                              f"{type(exc).__name__}: {exc}", kind="map_file") from exc


def _torch_bytes(state: dict) -> np.ndarray:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def _torch_dict(array: np.ndarray) -> dict:
    state = torch.load(io.BytesIO(bytes(array)), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("the checkpoint is not a dict")
    return state
