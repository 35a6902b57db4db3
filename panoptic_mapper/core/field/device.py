"""Which torch device the field trainer uses on this machine.

``TrainerConfig.device`` is a portable name (``auto``, ``cpu``, ``cuda``, ``cuda:N``; its form is
checked when the config is read). What it means depends on the machine, so it is resolved here,
when the trainer is built: ``auto`` takes CUDA where torch sees it and the CPU otherwise; an
explicit CUDA device on a machine without one is a :class:`ConfigError`. The hash grids are
checked against the resolved device at the same time (tiny-cuda-nn needs a CUDA device).

Also :func:`seeded_init`: weights drawn from torch's global generator (``nn.Linear``, the hash
tables) are drawn from a seed instead, without touching the caller's random state.

Owns: :func:`resolve_device`, :func:`resolve_training_device`, :func:`seeded_init`.
Does not own: placing tensors (the trainer) or the grid implementations (``encodings.py``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.field.config import GRID_NAMES, FieldTrainingConfig
from panoptic_mapper.core.field.encodings import resolve_implementation

DEVICE_KEY = "trainer.device"
"""Config path of the device setting inside ``FieldTrainingConfig``."""


def resolve_device(name: str, key: str = DEVICE_KEY) -> torch.device:
    """The device a ``TrainerConfig.device`` value means here; a CUDA device gets its index.

    Raises:
        ConfigError: (naming ``key``) CUDA was requested where torch sees no CUDA device, or
            ``cuda:N`` names a device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) \
            if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(key, name, "CUDA is not available on this machine "
                          "(torch.cuda.is_available() is False: no CUDA device or driver, or a "
                          "CPU-only torch build); use 'auto' (CUDA where present) or 'cpu'")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= count:
        raise ConfigError(key, name, f"this machine has {count} CUDA device(s), "
                          f"cuda:0..cuda:{count - 1}")
    return device


def resolve_training_device(config: FieldTrainingConfig) -> torch.device:
    """:func:`resolve_device` of ``config.trainer.device``, after checking that every hash grid
    can be built there (``implementation: tcnn`` needs a CUDA device and tinycudann).

    Raises:
        ConfigError: naming ``trainer.device`` or ``field.<grid>.implementation``.
    """
    device = resolve_device(config.trainer.device)
    for name in GRID_NAMES:
        try:
            resolve_implementation(getattr(config.field, name), device)
        except ConfigError as exc:
            raise ConfigError(f"field.{name}.implementation", exc.value,
                              f"{exc.reason} ({DEVICE_KEY} '{config.trainer.device}' means "
                              f"{device} here)") from exc
    return device


@contextlib.contextmanager
def seeded_init(seed: int, device: torch.device) -> Iterator[None]:
    """Inside, torch's global generators (the CPU's and ``device``'s when it is a CUDA device)
    start from ``seed``; afterwards they are back where they were. Modules built inside
    initialise their weights the same way on every run."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
