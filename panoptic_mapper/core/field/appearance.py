"""Optional appearance branch: 3D Gaussian Splatting trained with gsplat (CUDA only).

PR++ renders colour with a separate 3DGS model (section 1.10): Gaussians initialised from the
back-projected RGB-D keyframes, loss ``(1 - 0.2) L1 + 0.2 (1 - SSIM) + 0.1 |D_gs - D|_1`` with
zero-depth pixels masked, densified by gsplat's default strategy. Segmentation never uses it.
gsplat's rasteriser is a CUDA kernel: without CUDA (or without gsplat), or when the refined map's
field trains on the CPU (``TrainerConfig.device``, which the branch follows), the branch is
skipped and :func:`appearance_unavailable_reason` says why; nothing is emulated on the CPU.

Owns: :class:`AppearanceConfig`, :class:`GsplatAppearance`, :func:`ssim`.
Does not own: keyframe storage (``keyframes.py``) or when the branch runs (the refined map).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.keyframes import Keyframe
from panoptic_mapper.core.types import CameraIntrinsics


@dataclass
class AppearanceConfig(ConfigBase):
    """The gsplat colour branch (code: 30k iterations, standard 3DGS learning rates)."""

    enabled: bool = False
    """Train it in ``finalize()`` (needs CUDA and gsplat; otherwise skipped with a warning)."""
    steps: int = 7000
    """Optimisation steps, one keyframe each."""
    initial_points: int = 200_000
    """Back-projected keyframe pixels that seed the Gaussians (random subset)."""
    lambda_dssim: float = 0.2
    """Weight of ``1 - SSIM`` against L1 (paper and 3DGS: 0.2)."""
    depth_weight: float = 0.1
    """Weight of the depth L1 against the observed depth (paper: 0.1)."""
    densify: bool = True
    """Clone, split and prune Gaussians with gsplat's ``DefaultStrategy``."""
    lr_means: float = 1.6e-4
    """Adam learning rate of the Gaussian centres, metres per step scale."""
    lr_colors: float = 2.5e-3
    """Adam learning rate of the colour logits."""
    lr_opacities: float = 0.05
    """Adam learning rate of the opacity logits."""
    lr_scales: float = 5e-3
    """Adam learning rate of the log scales."""
    lr_quats: float = 1e-3
    """Adam learning rate of the rotations."""

    def validate(self) -> None:
        require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        require(self.initial_points >= 1, "initial_points", self.initial_points, "must be >= 1")
        for name in ("lambda_dssim", "depth_weight"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        for name in ("lr_means", "lr_colors", "lr_opacities", "lr_scales", "lr_quats"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")


def appearance_unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """Why the gsplat branch cannot run on ``device`` (None: the default CUDA device), or None
    when it can."""
    if not torch.cuda.is_available():
        return ("the appearance branch rasterises with gsplat's CUDA kernels and no CUDA device "
                "is available; skipped")
    if device is not None and torch.device(device).type != "cuda":
        return (f"the appearance branch rasterises with gsplat's CUDA kernels and follows the "
                f"field's device, which is {device} (training.trainer.device); skipped")
    try:
        importlib.import_module("gsplat")
    except Exception as exc:  # noqa: BLE001 (gsplat fails with build errors of any type)
        return f"gsplat is not importable ({type(exc).__name__}: {exc}); skipped"
    return None


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean structural similarity of two [B, 3, H, W] images in [0, 1] (box window)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pad = window // 2
    mu_a = F.avg_pool2d(a, window, 1, pad, count_include_pad=False)
    mu_b = F.avg_pool2d(b, window, 1, pad, count_include_pad=False)
    var_a = F.avg_pool2d(a * a, window, 1, pad, count_include_pad=False) - mu_a ** 2
    var_b = F.avg_pool2d(b * b, window, 1, pad, count_include_pad=False) - mu_b ** 2
    cov = F.avg_pool2d(a * b, window, 1, pad, count_include_pad=False) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
             / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return value.mean()


class GsplatAppearance:
    """3D Gaussians with RGB colour, trained on keyframes with gsplat.

    Args:
        config: steps, seeding and learning rates.
        keyframes: the training views (those with colour are used).
        seed: seed of the keyframe and pixel draws.
        device: the CUDA device to train on (None: the default one); the refined map passes
            its field's device.

    Raises:
        InvalidInputError: when the branch is unavailable (the message says why) or no
            keyframe carries colour.
    """

    def __init__(self, config: AppearanceConfig, keyframes: list[Keyframe], seed: int = 0,
                 device: torch.device | str | None = None):
        reason = appearance_unavailable_reason(device)
        if reason is not None:
            raise InvalidInputError("appearance", "gsplat", reason, kind="appearance")
        self._gsplat = importlib.import_module("gsplat")
        self.config = config
        self.device = torch.device("cuda" if device is None else device)
        self.keyframes = [k for k in keyframes if k.rgb is not None]
        if not self.keyframes:
            raise InvalidInputError("keyframes", 0, "no keyframe kept its colour image "
                                    "(KeyframeConfig.keep_rgb)", kind="appearance")
        self.rng = np.random.default_rng(seed)
        self.params = self._initial_gaussians()
        self.optimizers = {
            name: torch.optim.Adam([param], lr=lr, eps=1e-15) for name, param, lr in (
                ("means", self.params["means"], config.lr_means),
                ("colors", self.params["colors"], config.lr_colors),
                ("opacities", self.params["opacities"], config.lr_opacities),
                ("scales", self.params["scales"], config.lr_scales),
                ("quats", self.params["quats"], config.lr_quats))}
        self.strategy = None
        if config.densify:
            self.strategy = self._gsplat.strategy.DefaultStrategy()
            self.strategy.check_sanity(self.params, self.optimizers)
            self.strategy_state = self.strategy.initialize_state()
        self.step_count = 0

    def _initial_gaussians(self) -> nn.ParameterDict:
        per_frame = max(1, self.config.initial_points // len(self.keyframes))
        points, colors = [], []
        for keyframe in self.keyframes:
            valid = np.flatnonzero(keyframe.depth_m.reshape(-1) > 0)
            chosen = self.rng.choice(valid, min(per_frame, len(valid)), replace=False)
            points.append(keyframe.surface_points(chosen))
            colors.append(keyframe.rgb.reshape(-1, 3)[chosen] / 255.0)
        means = torch.tensor(np.concatenate(points), dtype=torch.float32)
        count = len(means)
        # Initial size: a typical spacing of the seed points (as 3DGS's kNN distance).
        spacing = float(np.cbrt(np.prod(np.ptp(means.numpy(), axis=0)) / max(count, 1)))
        return nn.ParameterDict({
            "means": nn.Parameter(means),
            "colors": nn.Parameter(torch.logit(torch.tensor(np.concatenate(colors),
                                                            dtype=torch.float32)
                                               .clamp(0.01, 0.99))),
            "opacities": nn.Parameter(torch.logit(torch.full((count,), 0.1))),
            "scales": nn.Parameter(torch.full((count, 3), float(np.log(max(spacing, 1e-3))))),
            "quats": nn.Parameter(torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(count, 1)),
        }).to(self.device)

    def render(self, T_world_cam: np.ndarray,  # noqa: N803
               intrinsics: CameraIntrinsics) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """([H, W, 3] colour in [0, 1], [H, W] expected depth in metres, gsplat meta)."""
        p = self.params
        viewmat = torch.tensor(np.linalg.inv(T_world_cam), dtype=torch.float32,
                               device=self.device)[None]
        K = torch.tensor(intrinsics.K, dtype=torch.float32, device=self.device)[None]  # noqa: N806
        colors, _, meta = self._gsplat.rasterization(
            p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]),
            torch.sigmoid(p["colors"]), viewmat, K, intrinsics.width, intrinsics.height,
            packed=False, render_mode="RGB+ED")
        return colors[0, ..., :3], colors[0, ..., 3], meta

    def train_steps(self, num_steps: int) -> float:
        """Run optimisation steps on random keyframes; returns the last loss."""
        cfg = self.config
        loss_value = float("nan")
        for _ in range(num_steps):
            keyframe = self.keyframes[int(self.rng.integers(len(self.keyframes)))]
            rgb, depth, meta = self.render(keyframe.T_world_cam, keyframe.intrinsics)
            target = torch.tensor(keyframe.rgb, dtype=torch.float32, device=self.device) / 255.0
            observed = torch.tensor(keyframe.depth_m, device=self.device)
            if self.strategy is not None:
                self.strategy.step_pre_backward(self.params, self.optimizers,
                                                self.strategy_state, self.step_count, meta)
            l1 = (rgb - target).abs().mean()
            structural = 1.0 - ssim(rgb.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])
            valid = observed > 0
            depth_l1 = (depth[valid] - observed[valid]).abs().mean() if bool(valid.any()) \
                else depth.sum() * 0.0
            loss = ((1 - cfg.lambda_dssim) * l1 + cfg.lambda_dssim * structural
                    + cfg.depth_weight * depth_l1)
            loss.backward()
            if self.strategy is not None:
                self.strategy.step_post_backward(self.params, self.optimizers,
                                                 self.strategy_state, self.step_count, meta,
                                                 packed=False)
            for optimizer in self.optimizers.values():
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            self.step_count += 1
            loss_value = float(loss.detach())
        return loss_value

    def state_dict(self) -> dict:
        """The Gaussians (CPU tensors) and the step count."""
        return {"step": self.step_count,
                "params": {name: value.detach().cpu() for name, value in self.params.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Replace the Gaussians by a :meth:`state_dict` (optimisers restart)."""
        self.step_count = int(state["step"])
        for name, value in state["params"].items():
            self.params[name] = nn.Parameter(value.to(self.device))
            self.optimizers[name] = torch.optim.Adam([self.params[name]],
                                                     lr=self.optimizers[name].defaults["lr"],
                                                     eps=1e-15)
        if self.strategy is not None:
            self.strategy_state = self.strategy.initialize_state()
