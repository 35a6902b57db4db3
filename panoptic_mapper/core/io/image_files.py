"""Reading and writing the image and text files of dataset folders, with errors that name the file.

Owns: PNG/JPEG decoding into numpy (PIL), 16-bit PNG encoding, whitespace matrix text files, and
turning every I/O or decoding failure into a :class:`DataFormatError` whose field is the file path.
Does not own: what the pixels mean (units, label ids): the dataset layouts decide that.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from panoptic_mapper.core.errors import DataFormatError

IMAGE_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)
"""What PIL raises for missing, truncated or corrupt files (SyntaxError: broken PNG chunks)."""


def file_error(path: Path | str, value, reason: str, field: str = "",
               kind: str = "file") -> DataFormatError:
    """A :class:`DataFormatError` whose field is ``"<path>"`` or ``"<path>:<field>"``."""
    name = f"{path}:{field}" if field else str(path)
    return DataFormatError(name, value, reason, kind=kind)


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, reading only its header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except IMAGE_READ_ERRORS as exc:
        raise file_error(path, type(exc).__name__, f"cannot read image header: {exc}",
                         kind="image_file") from exc
    return height, width


def read_rgb(path: Path) -> np.ndarray:
    """A colour image file (JPEG, PNG, any PIL mode) -> ``[H, W, 3]`` uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except IMAGE_READ_ERRORS as exc:
        raise file_error(path, type(exc).__name__, f"cannot decode colour image: {exc}",
                         kind="image_file") from exc


def read_uint16(path: Path, field: str = "pixels") -> np.ndarray:
    """A single-channel PNG (8- or 16-bit) -> ``[H, W]`` uint16 array.

    Raises :class:`DataFormatError` for colour images or undecodable files, naming the file.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image)
    except IMAGE_READ_ERRORS as exc:
        raise file_error(path, type(exc).__name__, f"cannot decode image: {exc}",
                         kind="image_file") from exc
    if mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
        raise file_error(path, mode, "expected a single-channel 8/16-bit image", field=field,
                         kind="encoding")
    if array.dtype.kind not in "iu" or array.ndim != 2:
        raise file_error(path, f"{array.dtype}{list(array.shape)}",
                         "expected a single-channel integer image", field=field, kind="encoding")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 65535):
        raise file_error(path, f"range [{int(array.min())}, {int(array.max())}]",
                         "values must fit uint16", field=field, kind="encoding")
    return array.astype(np.uint16, copy=False)


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``[h, w, 3]`` uint8 to ``[height, width, 3]`` (no-op if equal)."""
    if rgb.shape[:2] == (height, width):
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def resize_ids(ids: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an id image ``[h, w]`` (ids must never be blended)."""
    if ids.shape == (height, width):
        return ids
    rows = np.minimum((np.arange(height) + 0.5) * ids.shape[0] / height, ids.shape[0] - 1)
    cols = np.minimum((np.arange(width) + 0.5) * ids.shape[1] / width, ids.shape[1] - 1)
    return ids[rows.astype(np.int64)[:, None], cols.astype(np.int64)[None, :]]


def write_png(path: Path, array: np.ndarray) -> None:
    """Write ``[H, W]`` uint16 / uint8 or ``[H, W, 3]`` uint8 as a lossless PNG."""
    array = np.ascontiguousarray(array)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    """Write ``[H, W, 3]`` uint8 RGB as JPEG (lossy; ``quality`` 1..95)."""
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="JPEG", quality=int(quality))


def read_matrix(path: Path, shape: tuple[int, ...], field: str = "matrix") -> np.ndarray:
    """A whitespace-separated numeric text file -> float64 array of ``shape``.

    Non-finite values (``-inf`` in ScanNet's invalid poses) are returned as they are; callers
    decide whether they are acceptable.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise file_error(path, type(exc).__name__, f"cannot read file: {exc}",
                         kind="missing_file") from exc
    try:
        values = np.array([float(token) for token in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise file_error(path, text[:40], f"not a numeric matrix: {exc}", field=field,
                         kind="matrix") from exc
    if values.size != int(np.prod(shape)):
        raise file_error(path, f"{values.size} numbers", f"expected {int(np.prod(shape))} "
                         f"numbers (a {'x'.join(map(str, shape))} matrix)", field=field,
                         kind="matrix")
    return values.reshape(shape)


def write_matrix(path: Path, matrix: np.ndarray) -> None:
    """Write a 2D array with full float64 precision (``%.17g`` round-trips exactly)."""
    np.savetxt(path, np.asarray(matrix, np.float64), fmt="%.17g")
