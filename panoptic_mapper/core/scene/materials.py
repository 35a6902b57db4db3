"""Surface appearance of the synthetic scenes: materials and procedural solid textures.

A material is an albedo pair plus a pattern evaluated at 3D world points (a solid texture), so the
same function colours rendered pixels and ground-truth mesh vertices, and a textured surface keeps
its pattern from every view point (what feature-based and colour-fusing methods need).

Owns: :class:`Pattern`, :class:`MaterialTable` and :func:`MaterialTable.albedo_at` (pattern
evaluation, vectorised over points).
Does not own: lighting (``renderer``) or which object gets which material (``furniture``).
"""
from __future__ import annotations

import colorsys
import enum
from dataclasses import dataclass, field

import numpy as np


class Pattern(enum.IntEnum):
    """Procedural pattern of a material."""

    PLAIN = 0
    """The first albedo with faint mottling."""
    WOOD = 1
    """Warped grain stripes across ``axis``, mixing the two albedos."""
    CHECKER = 2
    """3D checkerboard of cell size ``scale_m`` (tiles)."""
    NOISE = 3
    """Two-octave value noise mixing the two albedos (fabric, foliage, cardboard)."""
    STRIPES = 4
    """Regular stripes across ``axis`` (wallpaper, upholstery)."""
    PLANKS = 5
    """Boards of width ``scale_m`` along ``axis``, each with its own tint, plus grain."""


@dataclass(frozen=True)
class Material:
    """One material: two albedos mixed by a pattern."""

    albedo: tuple[float, float, float]
    """Main diffuse colour, linear RGB in [0, 1]."""
    albedo2: tuple[float, float, float]
    """Second colour of the pattern, linear RGB in [0, 1]."""
    pattern: Pattern = Pattern.PLAIN
    scale_m: float = 0.1
    """Characteristic length of the pattern, metres (stripe period, tile size, noise cell)."""
    axis: int = 0
    """World axis (0 = x, 1 = y, 2 = z) across which stripes, grain and planks vary."""


@dataclass
class MaterialTable:
    """All materials of a scene, as arrays indexed by material id."""

    materials: list[Material] = field(default_factory=list)
    _table: np.ndarray | None = field(default=None, init=False, repr=False)

    def add(self, material: Material) -> int:
        """Append a material; returns its id."""
        self.materials.append(material)
        return len(self.materials) - 1

    def __len__(self) -> int:
        return len(self.materials)

    def albedo_at(self, points_m: np.ndarray, material_ids: np.ndarray) -> np.ndarray:
        """Albedo of surface points.

        Every pattern is evaluated on all points and the right one is selected per point: with
        few patterns this is cheaper than gathering and scattering per-pattern subsets.

        Args:
            points_m: [N, 3] world points.
            material_ids: [N] material id of the surface each point lies on.

        Returns:
            [N, 3] float32 linear RGB in [0, 1].
        """
        points = np.asarray(points_m, np.float32)
        props = np.take(self._property_table(), np.asarray(material_ids, np.int64), axis=0)
        pattern = props[:, 6]  # [N, 10] per-point material properties, see _property_table
        p = points * props[:, 7:8]  # pattern units (1 = one stripe period / tile / cell)
        axis = props[:, 8]
        coord = np.where(axis == 0, p[:, 0], np.where(axis == 1, p[:, 1], p[:, 2]))
        noise = value_noise(points * props[:, 9:10])
        present = set(np.unique(pattern).astype(int).tolist())
        mix = np.zeros(len(points), np.float32)
        tint = np.ones(len(points), np.float32)
        for kind in present:
            sel = pattern == kind
            m, t = _PATTERNS[Pattern(kind)](p, coord, noise)
            if m is not None:
                np.copyto(mix, m, where=sel)
            if t is not None:
                np.copyto(tint, t, where=sel)
        albedo = props[:, 3:6] * mix[:, None]
        albedo += props[:, 0:3]
        albedo *= tint[:, None]
        return np.clip(albedo, 0.0, 1.0, out=albedo)

    def _property_table(self) -> np.ndarray:
        """[M, 10] float32 per material: albedo, albedo2 - albedo, pattern, 1/scale, axis,
        noise lattice frequency per metre."""
        if self._table is None or len(self._table) != len(self.materials):
            self._table = np.array(
                [m.albedo + tuple(b - a for a, b in zip(m.albedo, m.albedo2))
                 + (float(m.pattern), 1.0 / m.scale_m, float(m.axis),
                    _NOISE_FREQUENCY[m.pattern] / m.scale_m) for m in self.materials],
                np.float32).reshape(-1, 10)
        return self._table


_NOISE_FREQUENCY = {Pattern.PLAIN: 0.5, Pattern.WOOD: 0.25, Pattern.CHECKER: 3.0,
                    Pattern.NOISE: 1.0, Pattern.STRIPES: 2.0, Pattern.PLANKS: 4.0}
"""Value-noise lattice frequency per pattern, in cycles per pattern unit."""


def _plain(p, coord, noise):
    return None, 0.93 + 0.14 * noise


def _wood(p, coord, noise):
    grain = 0.5 + 0.5 * np.sin(np.float32(2.0 * np.pi) * (coord + 1.5 * noise))
    return grain ** 3, None


def _checker(p, coord, noise):
    parity = np.floor(p + np.float32(1e-3)).astype(np.int64).sum(axis=1) & 1
    return parity.astype(np.float32), 0.95 + 0.1 * noise


def _noise(p, coord, noise):
    return np.clip((noise - 0.5) * 2.6 + 0.5, 0.0, 1.0), None


def _stripes(p, coord, noise):
    stripe = (np.floor(coord * 2.0).astype(np.int64) & 1).astype(np.float32)
    return stripe, 0.95 + 0.1 * noise


def _planks(p, coord, noise):
    board = np.floor(coord).astype(np.int64)
    board_tint = 0.8 + 0.4 * _hash01(board, board * 7 + 3, np.zeros_like(board))
    seam = np.abs(coord - np.round(coord)) < 0.03
    tint = np.where(seam, np.float32(0.55), board_tint * (0.9 + 0.2 * noise))
    return noise * 0.4, tint


_PATTERNS = {Pattern.PLAIN: _plain, Pattern.WOOD: _wood, Pattern.CHECKER: _checker,
             Pattern.NOISE: _noise, Pattern.STRIPES: _stripes, Pattern.PLANKS: _planks}
"""Pattern -> function(p [N, 3] pattern units, coord [N], noise [N]) -> (mix or None,
tint or None), each [N] float32; None keeps the default (mix 0, tint 1)."""


_HASH_PRIMES = (np.uint32(0x8DA6B343), np.uint32(0xD8163841), np.uint32(0xCB1AB31F))


def _finalize(h: np.ndarray) -> np.ndarray:
    """Mix the bits of a uint32 hash (one odd multiply; its high bits are well mixed) and map
    them to [0, 1)."""
    h = h * np.uint32(0x5BD1E995)
    h >>= np.uint32(8)
    return h.astype(np.float32) * np.float32(1.0 / 0x1000000)


def _hash01(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (wrapping hash)."""
    a, b, c = _HASH_PRIMES
    return _finalize((i.astype(np.uint32) * a) ^ (j.astype(np.uint32) * b)
                     ^ (k.astype(np.uint32) * c))


def value_noise(points: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] with unit lattice spacing.

    Args:
        points: [N, 3] coordinates in lattice units.

    Returns:
        [N] float32.
    """
    p = np.asarray(points, np.float32)
    cell = np.floor(p)
    f = p - cell
    f = f * f * (3.0 - 2.0 * f)  # smoothstep: continuous derivative across cells
    c = cell.astype(np.int64).astype(np.uint32)
    # Per-axis hash terms of the two lattice planes around each point; corners XOR them.
    terms = []
    for axis, prime in enumerate(_HASH_PRIMES):
        low = c[:, axis] * prime
        terms.append((low, low + prime))
    weights = [(1.0 - f[:, axis], f[:, axis]) for axis in range(3)]
    out = np.zeros(len(p), np.float32)
    for dx in (0, 1):
        for dy in (0, 1):
            hxy = terms[0][dx] ^ terms[1][dy]
            wxy = weights[0][dx] * weights[1][dy]
            for dz in (0, 1):
                out += wxy * weights[2][dz] * _finalize(hxy ^ terms[2][dz])
    return out


def jitter_color(rng: np.random.Generator, rgb: tuple[float, float, float],
                 hue: float = 0.03, sat: float = 0.1, val: float = 0.12
                 ) -> tuple[float, float, float]:
    """``rgb`` with random hue/saturation/value offsets (uniform within the given amplitudes)."""
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    h = (h + rng.uniform(-hue, hue)) % 1.0
    s = float(np.clip(s + rng.uniform(-sat, sat), 0.0, 1.0))
    v = float(np.clip(v + rng.uniform(-val, val), 0.05, 1.0))
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]

