"""Optional tqdm progress bars for the dataset and bag writers (tqdm imported only when shown)."""
from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], enabled: bool, desc: str) -> Iterable[T]:
    """``items`` wrapped in a tqdm bar counting frames (its length is used when it has one)."""
    if not enabled:
        return items
    from tqdm import tqdm

    total = len(items) if hasattr(items, "__len__") else None
    return tqdm(items, total=total, unit="frame", desc=desc)
