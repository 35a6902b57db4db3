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

Owns: the file format (:func:`write_refined_file`, :func:`read_refined_file`), keyframe arrays,
and saving and loading a refined layer with it (:func:`save_layer`, :func:`load_layer`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.field.keyframes import Keyframe
from panoptic_mapper.core.field.config import GRID_NAMES
from panoptic_mapper.core.types import CameraIntrinsics

if TYPE_CHECKING:
    from panoptic_mapper.core.mapping.refined_config import RefinedLayerConfig
    from panoptic_mapper.core.mapping.refined_layer import RefinedLayer

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


# ---- a layer's whole state ----------------------------------------------------------------------
def save_layer(layer: "RefinedLayer", path: str | Path, full_config: dict | None = None) -> None:
    """Write ``layer`` with its prior's part to one file (``full_config``: the configuration to
    store, default the layer's)."""
    with layer.locked():
        with tempfile.TemporaryDirectory() as tmp:
            prior_file = Path(tmp) / "prior.npz"
            layer.prior.save_prior(prior_file)
            prior_bytes = prior_file.read_bytes()
        state = layer.trainer.state_dict()
        if layer.appearance is not None:
            state["appearance"] = layer.appearance.state_dict()
        meta = {"config": full_config or layer.config.to_dict(),
                "semantic_labels": layer.classes.semantic_class_labels().tolist(),
                **layer.state_meta()}
        serving = layer.serving_checkpoint()
        keyframes = layer.store.snapshot()
    write_refined_file(path, meta, prior_bytes, state, serving, keyframes)


def load_layer(layer: "RefinedLayer", path: Path) -> dict:
    """Replace ``layer``'s state (and its prior's) with a saved one, atomically; returns the
    file's stored configuration (a dict).

    The complete new state (keyframes, field checkpoint, id bindings) is built first. Then the
    prior loads the file's prior part (its loader keeps its state on a bad file), the loaded
    field is published over it (the previous field's, when the file was saved during a restart
    on a grown box), and only then is the new state swapped in. If publishing fails, the prior
    is restored from a backup written just before. The file's layer settings are used except
    the machine-dependent ones, which stay the layer's: ``training.trainer.device`` and the
    grids' ``implementation``.

    Raises:
        DataFormatError: the file is missing, truncated or corrupt in any part, holds another
            method or format version, or was written with another label registry; the message
            names the path and the part. The layer is unchanged.
    """
    if not path.is_file():
        raise DataFormatError("path", str(path), "map file not found", kind="map_file")
    saved = read_refined_file(path)
    check_refined_meta(saved.meta, layer.classes.semantic_class_labels().tolist())
    fresh = _restored_layer(layer, saved, path)
    serving = fresh.trainer
    if saved.serving_checkpoint is not None:
        with file_part(path, "serving field checkpoint"):
            serving = fresh.new_trainer()
            serving.load_state_dict(saved.serving_checkpoint)
    with layer.locked(), tempfile.TemporaryDirectory() as tmp:
        backup = Path(tmp) / "current_prior.npz"
        layer.prior.save_prior(backup)
        try:
            with file_part(path, "prior"):
                prior_file = Path(tmp) / "prior.npz"
                prior_file.write_bytes(saved.prior_bytes)
                layer.prior.load_prior(prior_file, saved.prior_kind)
            if saved.meta["published"]:
                with file_part(path, "field checkpoint (publishing it)"):
                    fresh.publish_field(serving)
        except BaseException:
            layer.prior.load_prior(backup, layer.prior.kind)
            raise
        layer.adopt(fresh)
    return saved.meta["config"]


def _restored_layer(layer: "RefinedLayer", saved: RefinedFile, path: Path) -> "RefinedLayer":
    """A new layer over ``layer``'s prior with the file's state except the prior's (not
    published yet); raises :class:`DataFormatError` naming the failing part."""
    meta = saved.meta
    with file_part(path, "meta"):
        # A file of the stand-alone map also holds its instant map's settings ("instant"),
        # which a layer over another prior does not have.
        known = {f.name for f in dataclasses.fields(layer.config)}
        config = type(layer.config).from_dict({k: v for k, v in meta["config"].items()
                                               if k in known or k != "instant"})
        keep_machine_settings(config, layer.config)
        fresh = type(layer)(layer.registry, config, layer.prior, layer.summary)
        fresh.restore_meta(meta)
    with file_part(path, "keyframes"):
        fresh.store.replace_all([keyframe_from_arrays(info, arrays) for info, arrays
                                 in zip(meta["keyframes"], saved.keyframe_arrays)])
    with file_part(path, "field checkpoint"):
        fresh.trainer.load_state_dict(saved.checkpoint)
        if "appearance" in saved.checkpoint:
            fresh.load_appearance(saved.checkpoint["appearance"])
    return fresh


def keep_machine_settings(saved: "RefinedLayerConfig", running: "RefinedLayerConfig") -> None:
    """Give a loaded map's config the running map's device and grid implementations: where a
    field trained is no part of the map (a map trained on a GPU loads on a CPU)."""
    saved.training.trainer.device = running.training.trainer.device
    for name in GRID_NAMES:
        getattr(saved.training.field, name).implementation = \
            getattr(running.training.field, name).implementation
