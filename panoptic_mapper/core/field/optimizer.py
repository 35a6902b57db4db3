"""The field's Adam optimiser: one parameter group per kind of parameter, each with its own
learning rate (``OptimizerConfig``), decayed together by the schedule.

Owns: :func:`build_optimizer`, :func:`match_state_shapes`. Does not own: the decay
(``schedule.lr_factor``) or when a step runs (``trainer.py``).
"""
from __future__ import annotations

import torch

from panoptic_mapper.core.field.config import OptimizerConfig
from panoptic_mapper.core.field.panoptic_field import PanopticField


def build_optimizer(field: PanopticField,
                    config: OptimizerConfig) -> tuple[torch.optim.Adam, list[float]]:
    """Adam over ``field``'s parameters and the base learning rate of each group (in group
    order: grids, decoders, inv_s, instance module, token means, rotations, log scales,
    features, class features)."""
    f = field
    # The encodings' own leaf parameters: tiny-cuda-nn's table() is a view, which Adam rejects.
    grids = [p for e in (f.sdf_encoding, f.semantic_encoding, f.instance_encoding)
             for p in e.parameters()]
    groups = [
        {"params": grids, "lr": config.grids, "eps": 1e-15},
        {"params": list(f.sdf_decoder.parameters()) + list(f.semantic_decoder.parameters()),
         "lr": config.decoders},
        {"params": [f.log_inv_s], "lr": config.inv_s},
        {"params": list(f.instance_module.parameters()), "lr": config.instance_module},
        {"params": [f.tokens.means], "lr": config.token_means},
        {"params": [f.tokens.quats], "lr": config.token_quats},
        {"params": [f.tokens.log_scales], "lr": config.token_log_scales},
        {"params": [f.tokens.features], "lr": config.token_features},
        {"params": [f.tokens.class_features], "lr": config.token_class_features},
    ]
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), foreach=True)
    return optimizer, [g["lr"] for g in groups]


def match_state_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter's optimiser state its parameter's shape: a grid table is flat in
    tiny-cuda-nn and [P, F] in torch (the same entries), so moments saved with one
    implementation fit the other."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in list(state.items()):
                if (torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape
                        and value.numel() == param.numel()):
                    state[key] = value.view(param.shape)
