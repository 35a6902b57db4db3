"""Multiresolution hash-grid encoding with a tiny-cuda-nn fast path and a pure-PyTorch fallback.

``HashGridEncoding(config, device)`` picks its implementation from ``config.implementation``
and the device the encoding is placed on (``resolve_implementation``): ``torch`` runs everywhere
(``_torch_ref.hash_grid_encode``); ``tcnn`` uses tiny-cuda-nn's fused CUDA kernel, which takes
and returns CUDA tensors, so it needs ``tinycudann``, CUDA and an encoding placed on a CUDA
device; ``auto`` takes tcnn only for an encoding on a CUDA device where tinycudann imports, torch
otherwise. The refined map's field is built on its trainer's device (``TrainerConfig.device``).
Both keep the same parameter layout, so :meth:`HashGridEncoding.table` can move between them, and
the state dict always holds the table as ``_table`` [P, F] (the torch form), so a checkpoint
written with either implementation loads into the other.

Owns: the encoding module and the tcnn availability check.
Does not own: scene normalisation (inputs are already in the unit cube) or decoders.
"""
from __future__ import annotations

import functools
import importlib
import logging

import torch
from torch import nn

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.field._torch_ref import HashGridLayout, hash_grid_encode
from panoptic_mapper.core.field.config import HashGridConfig

LOGGER = logging.getLogger(__name__)

TABLE_INIT_RANGE = 1e-4
"""Tables start uniform in [-1e-4, 1e-4] (tiny-cuda-nn's initialisation)."""


@functools.lru_cache(maxsize=1)
def tcnn_available() -> bool:
    """True when ``tinycudann`` imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        importlib.import_module("tinycudann")
    except Exception:  # noqa: BLE001 (a broken build fails with arbitrary errors)
        return False
    return True


def resolve_implementation(config: HashGridConfig,
                           device: torch.device | str | None = None) -> str:
    """``"tcnn"`` or ``"torch"``: what ``config.implementation`` means for an encoding placed
    on ``device`` (None: the CPU) on this machine.

    Raises:
        ConfigError: ``tcnn`` was requested for an encoding not on a CUDA device, or where
            tinycudann does not import or CUDA is absent.
    """
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if config.implementation == "torch":
        return "torch"
    if config.implementation == "tcnn":
        if not on_cuda:
            raise ConfigError("implementation", "tcnn",
                              f"tiny-cuda-nn computes on CUDA tensors only, and this encoding "
                              f"is placed on {device or 'cpu'} (place it on a CUDA device, or "
                              "use 'auto' or 'torch')")
        if not tcnn_available():
            raise ConfigError("implementation", "tcnn",
                              "tiny-cuda-nn needs the tinycudann package and a CUDA device; "
                              "neither is usable here (use 'auto' or 'torch')")
        return "tcnn"
    return "tcnn" if on_cuda and tcnn_available() else "torch"


class HashGridEncoding(nn.Module):
    """Points in the unit cube [N, 3] -> hash-grid features [N, L * F].

    Args:
        config: grid sizes and implementation choice.
        device: where the table lives and the encoding computes (None: the CPU); tiny-cuda-nn
            is used only on a CUDA device (see :func:`resolve_implementation`).
    """

    def __init__(self, config: HashGridConfig, device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        self.layout = HashGridLayout.create(config.num_levels, config.log2_hashmap_size,
                                            config.base_resolution, config.max_resolution)
        self.implementation = resolve_implementation(config, device)
        self.output_dim = config.output_dim
        if self.implementation == "tcnn":
            self._tcnn = _make_tcnn_encoding(config, self.layout)
            self._table = None
            self.register_state_dict_post_hook(_tcnn_params_as_table)
            self.register_load_state_dict_pre_hook(_table_as_tcnn_params)
        else:
            self._tcnn = None
            table = torch.empty(self.layout.total_entries, config.features_per_level,
                                device=device)
            nn.init.uniform_(table, -TABLE_INIT_RANGE, TABLE_INIT_RANGE)
            self._table = nn.Parameter(table)
            for name, value in self.layout.tensors(table.device).items():
                self.register_buffer(f"_layout_{name}", value, persistent=False)

    def table(self) -> torch.Tensor:
        """[P, F] the feature table, in tiny-cuda-nn's layout (a view for tcnn)."""
        if self._tcnn is not None:
            return self._tcnn.params.view(-1, self.config.features_per_level)
        return self._table

    @torch.no_grad()
    def load_table(self, table: torch.Tensor) -> None:
        """Overwrite the table with a [P, F] table of the same layout (either implementation)."""
        target = self.table()
        if tuple(table.shape) != tuple(target.shape):
            raise ConfigError("table", list(table.shape),
                              f"expected a table of shape {list(target.shape)}")
        target.copy_(table.to(device=target.device, dtype=target.dtype))

    def forward(self, points01: torch.Tensor) -> torch.Tensor:
        """Encode [N, 3] points (clamped to the unit cube) into [N, L * F] float32 features."""
        points01 = points01.clamp(0.0, 1.0)
        if self._tcnn is not None:
            return self._tcnn(points01.contiguous()).float()
        return hash_grid_encode(
            points01, self._table, self._layout_scales, self._layout_resolutions,
            self._layout_sizes, self._layout_offsets, self._layout_dense,
            smoothstep=self.config.interpolation == "smoothstep")


def _tcnn_params_as_table(module: HashGridEncoding, state: dict, prefix: str,
                          local_metadata: dict) -> None:
    """State-dict hook of a tcnn encoding: its flat parameters saved as the torch ``_table``."""
    params = state.pop(prefix + "_tcnn.params")
    state[prefix + "_table"] = params.view(-1, module.config.features_per_level)


def _table_as_tcnn_params(module: HashGridEncoding, state: dict, prefix: str, *args) -> None:
    """Load hook of a tcnn encoding: a saved ``_table`` (either implementation) becomes its
    flat parameters."""
    if prefix + "_table" in state:
        state[prefix + "_tcnn.params"] = state.pop(prefix + "_table").reshape(-1)


def _make_tcnn_encoding(config: HashGridConfig, layout: HashGridLayout) -> nn.Module:
    """A ``tinycudann.Encoding`` with the same grid as ``layout`` (imported lazily)."""
    tcnn = importlib.import_module("tinycudann")
    per_level_scale = 1.0
    if config.num_levels > 1:
        per_level_scale = (config.max_resolution / config.base_resolution) ** (
            1.0 / (config.num_levels - 1))
    encoding = tcnn.Encoding(
        n_input_dims=3,
        encoding_config={
            "otype": "HashGrid",
            "n_levels": config.num_levels,
            "n_features_per_level": config.features_per_level,
            "log2_hashmap_size": config.log2_hashmap_size,
            "base_resolution": config.base_resolution,
            "per_level_scale": per_level_scale,
            "interpolation": "Smoothstep" if config.interpolation == "smoothstep" else "Linear",
        },
        dtype=torch.float32,
    )
    expected = layout.total_entries * config.features_per_level
    if encoding.params.numel() != expected:
        LOGGER.warning("tiny-cuda-nn allocated %d hash-grid parameters, the reference layout "
                       "has %d: tables cannot be exchanged", encoding.params.numel(), expected)
    return encoding
