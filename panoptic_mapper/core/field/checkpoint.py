"""The trainer's checkpoint: everything needed to resume training, as plain CPU tensors and
Python values (loadable with ``torch.load(weights_only=True)`` on a machine with or without
CUDA, and with either hash-grid implementation).

Keys: ``step``, ``total_steps``, ``rng`` (numpy bit-generator state), ``generator`` (torch CPU
generator state), ``last_losses``, ``setup``; once set up also ``box_center_m`` [3],
``box_half_size_m`` ([3] per axis; one number, a cube, in checkpoints written before the box was
per axis), ``num_tokens``, ``field`` (module state dict), ``optimizer``,
``manager`` (token-manager state); with a prior also ``prior_targets``
(:meth:`PriorDistillation.to_state`).

Owns: :func:`encode_state`, :func:`decode_state`, :class:`DecodedState`, :func:`cpu_copy`.
Does not own: building the field from it (``trainer.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from panoptic_mapper.core.field.gaussian_tokens import InstanceTokens
from panoptic_mapper.core.field.panoptic_field import PanopticField, SceneBox
from panoptic_mapper.core.field.prior_distill import PriorDistillation
from panoptic_mapper.core.field.token_manager import TokenManagerState


def cpu_copy(value):
    """A state dict (nested dicts and lists) with every tensor on the CPU, in new containers:
    the live state is not touched (an optimiser's state dict shares its per-parameter dicts).
    Tensors already on the CPU are shared, not cloned."""
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        copy = type(value)((key, cpu_copy(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):  # module versions, read by load_state_dict
            copy._metadata = value._metadata
        return copy
    if isinstance(value, list):
        return [cpu_copy(item) for item in value]
    return value


def encode_state(step: int, total_steps: int, rng: np.random.Generator,
                 generator: torch.Generator, last_losses: dict[str, float],
                 field: PanopticField | None, optimizer: torch.optim.Optimizer | None,
                 manager_state: TokenManagerState | None,
                 distillation: PriorDistillation | None) -> dict:
    """The checkpoint dict of a trainer's state (see the module docstring)."""
    state = {"step": step, "total_steps": total_steps, "rng": rng.bit_generator.state,
             "generator": generator.get_state(), "last_losses": dict(last_losses),
             "setup": field is not None}
    if field is not None:
        state.update({"box_center_m": list(field.box.center_m),
                      "box_half_size_m": list(field.box.half_size_m),
                      "num_tokens": field.tokens.num_tokens,
                      "field": cpu_copy(field.state_dict()),
                      "optimizer": cpu_copy(optimizer.state_dict()),
                      "manager": manager_state.to_dict()})
    if distillation is not None:
        state["prior_targets"] = distillation.to_state()
    return state


@dataclass
class DecodedState:
    """A checkpoint taken apart; the trainer builds its field from ``box`` and ``tokens``, then
    loads ``field_state`` and ``optimizer_state`` into it."""

    step: int
    total_steps: int
    rng_state: dict
    generator_state: torch.Tensor
    last_losses: dict[str, float]
    box: SceneBox | None
    """None: the trainer was not set up."""
    tokens: InstanceTokens | None
    """Placeholder tokens of the saved count (their values come with ``field_state``)."""
    field_state: dict | None
    optimizer_state: dict | None
    manager_state: TokenManagerState | None
    distillation: PriorDistillation | None


def decode_state(state: dict, key_dim: int) -> DecodedState:
    """Take a checkpoint apart (``key_dim``: the instance grid's output dimension).

    Raises:
        KeyError, TypeError, ValueError: a missing or malformed entry.
    """
    distillation = (PriorDistillation.from_state(state["prior_targets"])
                    if "prior_targets" in state else None)
    decoded = DecodedState(int(state["step"]), int(state["total_steps"]), state["rng"],
                           state["generator"], dict(state["last_losses"]), None, None, None,
                           None, None, distillation)
    if not state["setup"]:
        return decoded
    count = int(state["num_tokens"])
    decoded.tokens = InstanceTokens.create(np.zeros((count, 3)), np.ones((count, 3)),
                                           np.arange(1, count + 1), key_dim, key_dim,
                                           torch.Generator())
    half = state["box_half_size_m"]  # one number before the box was per axis: a cube
    decoded.box = SceneBox(tuple(state["box_center_m"]),
                           float(half) if np.ndim(half) == 0 else tuple(half))
    decoded.field_state = state["field"]
    decoded.optimizer_state = state["optimizer"]
    decoded.manager_state = TokenManagerState.from_dict(state["manager"])
    return decoded

