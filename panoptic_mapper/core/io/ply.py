"""PLY files of panoptic meshes: vertex ``x y z red green blue label_id instance_id`` + faces.

Written files put the standard properties first, so Open3D, MeshLab and CloudCompare read
geometry and colour and ignore (or show as scalar fields) ``label_id`` / ``instance_id``.
``color_mode`` chooses what ``red green blue`` hold: the fused sensor colour (``"rgb"``), the
label registry colour of ``label_id`` (``"semantic"``) or :func:`instance_color` of
``instance_id`` (``"instance"``); the ids are written unchanged in every mode, and the mode is
recorded in a ``comment color_mode=...`` header line.

The reader accepts ASCII and binary (either endianness) PLYs from other tools: any property
order and types, extra properties and elements, ``vertex_indices`` or ``vertex_index`` lists of
any length (polygons are fan-triangulated). Missing colours read as grey (128) and missing
``label_id`` / ``instance_id`` as 0.

Owns: PLY encoding and parsing. Does not own: mesh extraction or colour tables (``labels``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.labels.registry import instance_color
from panoptic_mapper.core.types import PanopticMesh

ColorMode = Literal["rgb", "semantic", "instance"]
COLOR_MODES: tuple[str, ...] = ("rgb", "semantic", "instance")
MISSING_COLOR = 128
"""Grey level given to vertices of a PLY without colour properties."""

_PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
_COLOR_NAMES = (("red", "green", "blue"), ("r", "g", "b"),
                ("diffuse_red", "diffuse_green", "diffuse_blue"))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def write_ply(path: str | Path, mesh: PanopticMesh, *, binary: bool = True,
              color_mode: ColorMode = "rgb", registry: LabelRegistry | None = None) -> Path:
    """Write ``mesh`` as a PLY file and return its path.

    Args:
        path: output file (``.ply``); parent folders are created.
        mesh: the mesh; its ``label_ids`` / ``instance_ids`` are always written as they are.
        binary: binary little endian (default, compact and fast) or ASCII.
        color_mode: what ``red green blue`` hold (see module docstring).
        registry: label colours; required for ``color_mode="semantic"``.

    Raises:
        InvalidInputError: unknown ``color_mode``, ``"semantic"`` without a registry, or label
            ids the registry does not know.
    """
    colors = _display_colors(mesh, color_mode, registry)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "binary_little_endian" if binary else "ascii"
    header = "\n".join([
        "ply", f"format {fmt} 1.0", "comment written by panoptic_mapper",
        f"comment color_mode={color_mode}", f"element vertex {mesh.num_vertices}",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue",
        "property int label_id", "property int instance_id",
        f"element face {mesh.num_triangles}", "property list uchar int vertex_indices",
        "end_header", ""])
    vertex_dtype = np.dtype([("xyz", "<f4", (3,)), ("rgb", "u1", (3,)), ("label_id", "<i4"),
                             ("instance_id", "<i4")])
    vertices = np.empty(mesh.num_vertices, vertex_dtype)
    vertices["xyz"], vertices["rgb"] = mesh.vertices_m, colors
    vertices["label_id"], vertices["instance_id"] = mesh.label_ids, mesh.instance_ids
    faces = np.empty(mesh.num_triangles, np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    faces["n"], faces["v"] = 3, mesh.triangles
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        if binary:
            handle.write(vertices.tobytes())
            handle.write(faces.tobytes())
        else:
            _write_ascii_rows(handle, vertices, "%.9g %.9g %.9g %d %d %d %d %d")
            _write_ascii_rows(handle, faces, "%d %d %d %d")
    return path


def _write_ascii_rows(handle, records: np.ndarray, row_format: str) -> None:
    if len(records):
        columns = [records[name].reshape(len(records), -1).astype(np.float64)
                   for name in records.dtype.names]
        np.savetxt(handle, np.concatenate(columns, axis=1), fmt=row_format)


def _display_colors(mesh: PanopticMesh, color_mode: str,
                    registry: LabelRegistry | None) -> np.ndarray:
    """[V, 3] uint8 colours written as ``red green blue`` for ``color_mode``."""
    if color_mode == "rgb":
        return mesh.colors
    if color_mode == "semantic":
        if registry is None:
            raise InvalidInputError("registry", None, "color_mode 'semantic' needs the label "
                                    "registry", kind="config")
        table = registry.color_table()
        known = np.zeros(len(table), bool)
        known[[0] + [label.id for label in registry]] = True
        ids = mesh.label_ids
        bad = (ids < 0) | (ids >= len(table))
        bad[~bad] = ~known[ids[~bad]]
        if bad.any():
            raise InvalidInputError("mesh.label_ids", sorted(set(ids[bad].tolist()))[:10],
                                    "unknown to the label registry", kind="unknown_label")
        return table[ids]
    if color_mode == "instance":
        unique, inverse = np.unique(mesh.instance_ids, return_inverse=True)
        palette = np.array([instance_color(int(i)) for i in unique], np.uint8).reshape(-1, 3)
        return palette[inverse.reshape(-1)]
    raise InvalidInputError("color_mode", color_mode, f"must be one of {list(COLOR_MODES)}",
                            kind="config")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Property:
    name: str
    dtype: str
    """numpy type code without byte order, e.g. ``"f4"``."""
    count_dtype: str = ""
    """For list properties: type of the length prefix; empty for scalars."""


@dataclass
class _Element:
    name: str
    count: int
    properties: list[_Property]


def read_ply(path: str | Path) -> PanopticMesh:
    """Read a PLY mesh (or point cloud: no faces) into a :class:`PanopticMesh`.

    Raises:
        DataFormatError: missing, truncated or malformed file, naming the file and the problem.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(str(path), type(exc).__name__, f"cannot read PLY: {exc}",
                              kind="missing_file") from exc
    fmt, elements, body_start = _parse_header(path, data)
    if fmt == "ascii":
        tables = _read_ascii(path, data[body_start:], elements)
    else:
        tables = _read_binary(path, data, body_start, elements, _FORMATS[fmt])
    return _to_mesh(path, tables)


def _parse_header(path: Path, data: bytes) -> tuple[str, list[_Element], int]:
    if not data.startswith(b"ply"):
        raise DataFormatError(str(path), data[:16], "not a PLY file (no 'ply' magic)",
                              kind="ply")
    match = re.search(rb"end_header\r?\n", data)
    if match is None:
        raise DataFormatError(str(path), "no end_header", "truncated or malformed PLY header",
                              kind="ply")
    fmt, elements = "", []
    lines = data[:match.start()].decode("ascii", errors="replace").splitlines()
    for line_no, line in enumerate(lines, start=1):
        words = line.split()
        where = f"{path}:header line {line_no}"
        if not words or words[0] in ("ply", "comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _FORMATS:
                raise DataFormatError(where, line, f"unknown format; known: {list(_FORMATS)}",
                                      kind="ply")
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            elements[-1].properties.append(_parse_property(where, line, words))
        else:
            raise DataFormatError(where, line, "unexpected header line", kind="ply")
    if not fmt:
        raise DataFormatError(str(path), "no format line", "malformed PLY header", kind="ply")
    return fmt, elements, match.end()


def _parse_property(where: str, line: str, words: list[str]) -> _Property:
    if len(words) == 5 and words[1] == "list":
        if words[2] in _PLY_TYPES and words[3] in _PLY_TYPES:
            return _Property(words[4], _PLY_TYPES[words[3]], _PLY_TYPES[words[2]])
    elif len(words) == 3 and words[1] in _PLY_TYPES:
        return _Property(words[2], _PLY_TYPES[words[1]])
    raise DataFormatError(where, line, "unknown property type", kind="ply")


def _read_binary(path: Path, data: bytes, offset: int, elements: list[_Element],
                 order: str) -> dict[str, dict[str, np.ndarray | list]]:
    tables: dict[str, dict[str, np.ndarray | list]] = {}
    for element in elements:
        try:
            table, offset = _read_binary_element(data, offset, element, order)
        except (ValueError, IndexError) as exc:
            raise DataFormatError(f"{path}:element {element.name}", element.count,
                                  f"truncated or malformed binary data: {exc}",
                                  kind="ply") from exc
        tables[element.name] = table
    return tables


def _read_binary_element(data: bytes, offset: int, element: _Element, order: str
                         ) -> tuple[dict[str, np.ndarray | list], int]:
    props = element.properties
    if all(not p.count_dtype for p in props):
        dtype = np.dtype([(p.name, order + p.dtype) for p in props])
        records = np.frombuffer(data, dtype, count=element.count, offset=offset)
        return ({p.name: records[p.name] for p in props},
                offset + element.count * dtype.itemsize)
    if len(props) == 1 and element.count:
        # Fast path for the usual face element: one list with the same length on every row.
        prop = props[0]
        first = int(np.frombuffer(data, order + prop.count_dtype, count=1, offset=offset)[0])
        dtype = np.dtype([("n", order + prop.count_dtype), ("v", order + prop.dtype, (first,))])
        if offset + element.count * dtype.itemsize <= len(data):
            records = np.frombuffer(data, dtype, count=element.count, offset=offset)
            if np.all(records["n"] == first):
                return ({prop.name: records["v"]}, offset + element.count * dtype.itemsize)
    columns: dict[str, list] = {p.name: [] for p in props}
    for _ in range(element.count):
        for prop in props:
            if prop.count_dtype:
                count_type = np.dtype(order + prop.count_dtype)
                n = int(np.frombuffer(data, count_type, count=1, offset=offset)[0])
                offset += count_type.itemsize
                item_type = np.dtype(order + prop.dtype)
                columns[prop.name].append(np.frombuffer(data, item_type, count=n, offset=offset))
                offset += n * item_type.itemsize
            else:
                item_type = np.dtype(order + prop.dtype)
                columns[prop.name].append(np.frombuffer(data, item_type, count=1,
                                                        offset=offset)[0])
                offset += item_type.itemsize
    return ({p.name: columns[p.name] if p.count_dtype else np.asarray(columns[p.name])
             for p in props}, offset)


def _read_ascii(path: Path, body: bytes, elements: list[_Element]
                ) -> dict[str, dict[str, np.ndarray | list]]:
    tokens = body.split()
    position = 0
    tables: dict[str, dict[str, np.ndarray | list]] = {}
    for element in elements:
        props = element.properties
        try:
            if all(not p.count_dtype for p in props):
                n = element.count * len(props)
                if position + n > len(tokens):
                    raise ValueError(f"needs {n} values, {len(tokens) - position} left")
                block = np.array(tokens[position:position + n], np.float64)
                block = block.reshape(element.count, len(props))
                position += n
                tables[element.name] = {p.name: block[:, i].astype(p.dtype)
                                        for i, p in enumerate(props)}
                continue
            columns: dict[str, list] = {p.name: [] for p in props}
            for _ in range(element.count):
                for prop in props:
                    if prop.count_dtype:
                        n = int(tokens[position])
                        columns[prop.name].append(
                            np.array(tokens[position + 1:position + 1 + n], np.float64)
                            .astype(prop.dtype))
                        position += 1 + n
                    else:
                        columns[prop.name].append(float(tokens[position]))
                        position += 1
            tables[element.name] = {
                p.name: columns[p.name] if p.count_dtype
                else np.asarray(columns[p.name], p.dtype) for p in props}
        except (ValueError, IndexError) as exc:
            raise DataFormatError(f"{path}:element {element.name}", element.count,
                                  f"truncated or malformed ASCII data: {exc}",
                                  kind="ply") from exc
    return tables


def _to_mesh(path: Path, tables: dict[str, dict[str, np.ndarray | list]]) -> PanopticMesh:
    vertex = tables.get("vertex")
    if vertex is None or not all(k in vertex for k in ("x", "y", "z")):
        raise DataFormatError(str(path), sorted(vertex or {}),
                              "PLY has no vertex element with x, y, z", kind="ply")
    n = len(vertex["x"])
    xyz = np.stack([np.asarray(vertex[k], np.float32) for k in ("x", "y", "z")], axis=1)
    colors = np.full((n, 3), MISSING_COLOR, np.uint8)
    for names in _COLOR_NAMES:
        if all(k in vertex for k in names):
            channels = np.stack([np.asarray(vertex[k]) for k in names], axis=1)
            if channels.dtype.kind == "f":
                channels = np.round(np.clip(channels, 0.0, 1.0) * 255.0)
            colors = channels.astype(np.uint8)
            break
    label_ids = _id_column(vertex, ("label_id", "label"), n)
    instance_ids = _id_column(vertex, ("instance_id", "instance"), n)
    triangles = _triangles(path, tables.get("face", {}))
    try:
        return PanopticMesh(xyz, triangles, colors, label_ids, instance_ids)
    except InvalidInputError as exc:
        raise DataFormatError(f"{path}:{exc.field}", exc.value, exc.reason, kind="ply") from exc


def _id_column(vertex: dict[str, np.ndarray | list], names: tuple[str, ...], n: int
               ) -> np.ndarray:
    for name in names:
        if name in vertex:
            return np.asarray(vertex[name]).astype(np.int32)
    return np.zeros(n, np.int32)


def _triangles(path: Path, face: dict[str, np.ndarray | list]) -> np.ndarray:
    """[F, 3] int32 triangles; polygons are fan-triangulated."""
    lists = face.get("vertex_indices", face.get("vertex_index"))
    if lists is None:
        return np.zeros((0, 3), np.int32)
    if isinstance(lists, np.ndarray) and lists.ndim == 2 and lists.shape[1] == 3:
        return lists.astype(np.int32)
    triangles = []
    for i, polygon in enumerate(lists):
        polygon = np.asarray(polygon, np.int64).reshape(-1)
        if len(polygon) < 3:
            raise DataFormatError(f"{path}:face[{i}]", polygon.tolist(),
                                  "a face needs at least 3 vertices", kind="ply")
        for k in range(1, len(polygon) - 1):
            triangles.append((polygon[0], polygon[k], polygon[k + 1]))
    return np.asarray(triangles, np.int32).reshape(-1, 3)
