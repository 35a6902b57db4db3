"""Read what a map picture is drawn from: an exported PLY or a saved map file (``.npz``).

A PLY written by the project's export (``core/io/ply.py``) carries per-vertex label and instance
ids; a saved map (``save_map``, ``PanopticMap.save``) names its method in its metadata, and is
loaded through :func:`create_map` with that method, meshed, and asked for its instances.

Owns: :func:`load_map_mesh`. Does not own: the file formats (``core/io/ply.py``, the maps).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import MapInstance, PanopticMesh


def load_map_mesh(path: str | Path, registry: LabelRegistry
                  ) -> tuple[PanopticMesh, list[MapInstance] | None, str]:
    """``(mesh, instances or None, kind)`` of a ``.ply`` or ``.npz`` map file.

    Raises:
        DataFormatError: missing file, unknown suffix, or a map file that cannot be read
            (e.g. written with another label registry).
    """
    from panoptic_mapper.core.io.ply import read_ply
    from panoptic_mapper.core.mapping.base import MAP_METHODS, create_map

    path = Path(path)
    if not path.is_file():
        raise DataFormatError("map", str(path), "file not found", kind="map_file")
    if path.suffix.lower() == ".ply":
        return read_ply(path), None, "ply"
    if path.suffix.lower() != ".npz":
        raise DataFormatError("map", str(path), "expected a .ply mesh or a .npz saved map",
                              kind="map_file")
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
    except (OSError, ValueError, KeyError) as exc:
        raise DataFormatError("map", str(path), f"not a saved map file: {exc}",
                              kind="map_file") from exc
    method = meta.get("method", "")
    if method not in MAP_METHODS:
        raise DataFormatError("map", str(path), f"unknown map method '{method}'",
                              kind="map_file")
    panoptic_map = create_map(method, registry)
    panoptic_map.load(path)
    panoptic_map.update_mesh()
    return panoptic_map.get_mesh(), panoptic_map.get_instances(), method
