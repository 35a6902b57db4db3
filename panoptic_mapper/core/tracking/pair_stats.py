"""Per-pair evidence for and against merging two instances.

For a pair of instances (a < b) it counts the frames in which one segment covered both
("co-segmented": evidence that they are one object) and the frames in which two different
segments covered them ("separate": evidence that they are two). Separate counts are updated for
many pairs every frame, so they live in sorted numpy arrays (keys ``a << 32 | b``); the rarer
co-segmentation counts live in a dict.

Owns: :class:`PairStats`. Does not own: the merge decision (``tracker.py``).
"""
from __future__ import annotations

import numpy as np

_SHIFT = 32


def pair_key(a: int, b: int) -> tuple[int, int]:
    """The canonical (smaller id, larger id) order of a pair."""
    return (a, b) if a < b else (b, a)


class PairStats:
    """Co-segmented and separate frame counts of instance pairs."""

    def __init__(self) -> None:
        self.co: dict[tuple[int, int], int] = {}
        self._sep_keys = np.zeros(0, np.int64)
        self._sep_counts = np.zeros(0, np.int64)

    def add_co_segmented(self, a: int, b: int) -> tuple[int, int]:
        key = pair_key(a, b)
        self.co[key] = self.co.get(key, 0) + 1
        return key

    def add_separate(self, a: np.ndarray, b: np.ndarray) -> None:
        """Count one frame for each pair (a[i], b[i]) (pairs distinct, a[i] != b[i])."""
        lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
        keys = np.unique((lo << _SHIFT) | hi)
        if keys.size == 0:
            return
        pos = np.searchsorted(self._sep_keys, keys)
        found = pos < self._sep_keys.size
        found[found] = self._sep_keys[pos[found]] == keys[found]
        self._sep_counts[pos[found]] += 1
        new = keys[~found]
        if new.size:
            at = pos[~found]
            self._sep_keys = np.insert(self._sep_keys, at, new)
            self._sep_counts = np.insert(self._sep_counts, at, 1)

    def separate(self, a: int, b: int) -> int:
        lo, hi = pair_key(a, b)
        key = (lo << _SHIFT) | hi
        pos = int(np.searchsorted(self._sep_keys, key))
        if pos < self._sep_keys.size and self._sep_keys[pos] == key:
            return int(self._sep_counts[pos])
        return 0

    def counts(self, a: int, b: int) -> tuple[int, int]:
        """(co-segmented frames, separate frames) of a pair."""
        return self.co.get(pair_key(a, b), 0), self.separate(a, b)

    def replace_id(self, old: int, new: int) -> None:
        """After merging ``old`` into ``new``: move ``old``'s counts onto ``new``."""
        moved: dict[tuple[int, int], int] = {}
        for (a, b), count in list(self.co.items()):
            if old in (a, b):
                del self.co[(a, b)]
                other = b if a == old else a
                if other != new:
                    key = pair_key(new, other)
                    moved[key] = moved.get(key, 0) + count
        for key, count in moved.items():
            self.co[key] = self.co.get(key, 0) + count
        a, b = self._sep_keys >> _SHIFT, self._sep_keys & ((1 << _SHIFT) - 1)
        a, b = np.where(a == old, new, a), np.where(b == old, new, b)
        keep = a != b
        lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
        keys, inverse = np.unique((lo << _SHIFT) | hi, return_inverse=True)
        self._sep_counts = np.bincount(inverse, weights=self._sep_counts[keep],
                                       minlength=keys.size).astype(np.int64)
        self._sep_keys = keys

    def to_dict(self) -> dict:
        return {"co": [[a, b, n] for (a, b), n in sorted(self.co.items())],
                "separate_keys": self._sep_keys.tolist(),
                "separate_counts": self._sep_counts.tolist()}

    def load_dict(self, data: dict) -> None:
        self.co = {(int(a), int(b)): int(n) for a, b, n in data["co"]}
        self._sep_keys = np.asarray(data["separate_keys"], np.int64)
        self._sep_counts = np.asarray(data["separate_counts"], np.int64)
