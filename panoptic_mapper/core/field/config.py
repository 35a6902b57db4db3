"""Configuration dataclasses of the neural panoptic field (PanopticRecon++), one per component.

Defaults follow ``method-panopticrecon-pp.md`` sections 1.3-1.13 (the released code's values) where
they fit a CPU; where a CPU forces a smaller choice (hash-table sizes, rays per step, step budget)
the docstring says so. Fractions of the step budget replace the paper's "epochs" so the same
schedule scales from a 200-step unit test to a multi-thousand-step GPU run.

Owns: the field, token, token-manager, sampler, loss, schedule and trainer configs.
Does not own: the refined map's keyframe and prior settings (``core/mapping/refined_map.py``).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from panoptic_mapper.core.config import ConfigBase, require

GRID_NAMES = ("sdf_grid", "semantic_grid", "instance_grid")
"""The hash-grid fields of :class:`PanopticFieldConfig`."""
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
"""Accepted forms of ``TrainerConfig.device``."""


@dataclass
class HashGridConfig(ConfigBase):
    """A multiresolution hash-grid encoding (Instant-NGP / tiny-cuda-nn ``HashGrid``)."""

    num_levels: int = 16
    """Number of resolution levels L."""
    features_per_level: int = 2
    """Feature channels F per level; the encoding outputs L * F values."""
    log2_hashmap_size: int = 17
    """log2 of the entries per level T (the code uses 22 on a GPU; 15-17 is what a CPU affords)."""
    base_resolution: int = 16
    """Grid cells along each axis of the scene box at the coarsest level (each box axis is
    mapped to the unit interval on its own, so cells are finer along a shorter axis)."""
    max_resolution: int = 1024
    """Grid cells along each axis of the scene box at the finest level (a 6 m axis -> about
    6 mm cells)."""
    interpolation: Literal["linear", "smoothstep"] = "linear"
    """Corner weights: trilinear, or tiny-cuda-nn's Smoothstep (the released code's choice)."""
    implementation: Literal["auto", "torch", "tcnn"] = "auto"
    """``torch``: the pure-PyTorch reference (runs everywhere); ``tcnn``: tiny-cuda-nn, only
    for an encoding placed on a CUDA device with ``tinycudann`` installed; ``auto``: tcnn for
    an encoding on a CUDA device where tinycudann imports, torch otherwise. The refined map's
    grids live on ``trainer.device``: on the CPU ``auto`` means torch and ``tcnn`` is a
    ``ConfigError``."""

    @property
    def output_dim(self) -> int:
        """Channels of the encoding, L * F."""
        return self.num_levels * self.features_per_level

    def validate(self) -> None:
        require(1 <= self.num_levels <= 32, "num_levels", self.num_levels, "must be in 1..32")
        require(self.features_per_level in (1, 2, 4, 8), "features_per_level",
                self.features_per_level, "must be 1, 2, 4 or 8 (tiny-cuda-nn's choices)")
        require(8 <= self.log2_hashmap_size <= 24, "log2_hashmap_size", self.log2_hashmap_size,
                "must be in 8..24")
        require(self.base_resolution >= 2, "base_resolution", self.base_resolution, "must be >= 2")
        require(self.max_resolution >= self.base_resolution, "max_resolution",
                self.max_resolution, "must be >= base_resolution")


def _sdf_grid() -> HashGridConfig:
    return HashGridConfig(num_levels=12, features_per_level=2, log2_hashmap_size=16,
                          base_resolution=16, max_resolution=512)


def _label_grid() -> HashGridConfig:
    return HashGridConfig(num_levels=8, features_per_level=4, log2_hashmap_size=16,
                          base_resolution=16, max_resolution=512)


@dataclass
class PanopticFieldConfig(ConfigBase):
    """The three hash-grid volumes and their decoders (PR++ section 1.3-1.6).

    The field lives on ``TrainerConfig.device``; a grid may select ``implementation: tcnn``
    only where that is a CUDA device (tiny-cuda-nn computes on CUDA tensors only), which is
    checked when the trainer is built (``core/field/device.py``).
    """

    sdf_grid: HashGridConfig = dataclasses.field(default_factory=_sdf_grid)
    """Geometry volume Psi_G (code: 16 x 2, 16 -> 2048, T = 2^22; the CPU default 12 x 2,
    16 -> 512, T = 2^16 gives about 1.5 cm cells in a 7 m box: the map's mesh comes from the
    prior, the SDF only has to place the rendering weights)."""
    semantic_grid: HashGridConfig = dataclasses.field(default_factory=_label_grid)
    """Semantic volume Psi_S (code: 8 x 4, 16 -> 1024, T = 2^22)."""
    instance_grid: HashGridConfig = dataclasses.field(default_factory=_label_grid)
    """Instance-key volume Psi_I; its raw output is the key feature f_k (no MLP)."""
    decoder_hidden_dim: int = 128
    """Width of the single hidden layer of the SDF and semantic decoders."""
    softplus_beta: float = 100.0
    """Beta of the decoders' Softplus activation."""
    class_head_hidden_dim: int = 128
    """Hidden width of the token class head h_SI (Linear -> ReLU -> Linear)."""
    scene_margin_m: float = 0.5
    """Margin added around the observed points on every side when fixing the scene box (an
    axis-aligned box, sized per axis), metres. Points outside the box are clamped to its
    faces."""

    def validate(self) -> None:
        require(self.decoder_hidden_dim >= 8, "decoder_hidden_dim", self.decoder_hidden_dim,
                "must be >= 8")
        require(self.softplus_beta > 0, "softplus_beta", self.softplus_beta, "must be > 0")
        require(self.class_head_hidden_dim >= 8, "class_head_hidden_dim",
                self.class_head_hidden_dim, "must be >= 8")
        require(self.scene_margin_m >= 0, "scene_margin_m", self.scene_margin_m, "must be >= 0")


@dataclass
class TokenConfig(ConfigBase):
    """Instance tokens: Gaussian-modulated queries (PR++ section 1.5-1.6)."""

    gaussian_prior: bool = True
    """Multiply the attention by the token's Gaussian G (the paper's spatial "Prior");
    False gives the plain ``sigmoid(f_q . f_k)`` attention (ablation)."""
    max_initial_tokens: int = 150
    """Upper bound on tokens created from back-projected mask pixels."""
    init_pixels_per_mask: int = 3
    """Random pixels (with depth) back-projected per 2D thing mask per keyframe."""
    init_voxel_size_m: float = 0.8
    """Voxel size of the downsampling of the back-projected pixels (one token per voxel)."""
    init_sigma_m: float = 1.0
    """Isotropic standard deviation of a token created from pixels, metres (code: 1 m)."""
    prior_sigma_scale: float = 1.0
    """A token created from a prior instance gets sigma = scale * half its box size per axis."""
    prior_min_sigma_m: float = 0.1
    """Smallest sigma of a token created from a prior instance, metres."""
    gaussian_eps: float = 1e-5
    """Added to G before the product (code), so far tokens keep a gradient."""

    def validate(self) -> None:
        require(self.max_initial_tokens >= 1, "max_initial_tokens", self.max_initial_tokens,
                "must be >= 1")
        require(self.init_pixels_per_mask >= 1, "init_pixels_per_mask",
                self.init_pixels_per_mask, "must be >= 1")
        for name in ("init_voxel_size_m", "init_sigma_m", "prior_sigma_scale",
                     "prior_min_sigma_m"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")
        require(0 <= self.gaussian_eps < 0.1, "gaussian_eps", self.gaussian_eps,
                "must be in [0, 0.1)")


@dataclass
class TokenManagerConfig(ConfigBase):
    """Dynamic number of tokens: prune, split and spawn (PR++ section 1.9)."""

    enabled: bool = True
    """Prune and split tokens (the paper's "Adj."); False keeps the initial set (ablation)."""
    start_fraction: float = 0.1
    """First maintenance at this fraction of the step budget (code: epoch 2 of 20)."""
    every_fraction: float = 0.1
    """Maintenance period as a fraction of the step budget; also the window over which
    assignments are counted for the "useless" test."""
    min_assignments: int = 1
    """Tokens assigned fewer times than this within a window are pruned ("useless")..."""
    min_visible_frames: int = 3
    """... if they were in view (Gaussian > 0.5 on at least 3 sampled rays) in at least this
    many sampled frames of the window; a token that was not looked at is not judged."""
    mask_threshold: float = 0.8
    """A point belongs to a token's 3D mask when ``m_i(p)`` exceeds this (code: 0.8)."""
    iom_threshold: float = 0.7
    """Duplicates: ``max(IoM_ij, IoM_ji)`` above this drops the token with the smaller mask."""
    iom_voxel_size_m: float = 0.03
    """Voxel size of the surface points on which 3D masks are evaluated (code: 3 cm)."""
    max_iom_points: int = 20000
    """Cap on those points (random subset), to bound the cost on a CPU."""
    split: bool = True
    """Clone a token that two masks of one image keep claiming (disabled in the released code,
    described in the paper)."""
    split_min_signals: int = 3
    """Split signals within a window needed to clone a token ("if the signal keeps")..."""
    split_min_claim_ratio: float = 0.25
    """... and they must be at least this share of the token's matches plus claims, so that a
    mask split in two by the segmenter now and then does not clone a token."""
    merge: bool = True
    """Remove one of two tokens that a single mask kept standing for (matched and covered):
    undoes splits caused by over-segmenting frames, joins fragments (not in the paper)."""
    merge_ratio: float = 0.8
    """... when one mask stood for both in at least this share of the window's frames that
    showed both with a mask standing for at least one of them ..."""
    merge_min_frames: int = 3
    """... and in at least this many frames."""
    split_same_class: bool = True
    """A mask raises a split signal only for a token of its own class (argmax of ``h_SI``): one
    of two boxes that a box token covers does, a mug lying on the desk's token does not (False:
    any mask, as the paper)."""
    split_releases_prior: bool = True
    """With a prior map: a token that splits stops being distilled from its prior instance
    (the 2D masks show two objects where the prior has one; copying the prior would pull the
    two tokens back together). Its class is still distilled."""
    grow_until: float = 0.7
    """Split and spawn only before this fraction of the step budget; later maintenances only
    prune, so that the final tokens have had time to converge."""
    spawn_unmatched: bool = False
    """Create tokens where thing masks keep finding no token (not in the paper: for keyframes
    that keep arriving after initialisation without a prior map; with a prior, the refined
    map seeds tokens from the prior's new instances instead)."""
    spawn_min_count: int = 3
    """Unmatched masks whose 3D centroids fall into one spawn voxel needed to spawn a token."""
    spawn_voxel_size_m: float = 0.3
    """Voxel size for grouping centroids of unmatched masks, metres."""
    spawn_sigma_m: float = 0.3
    """Isotropic standard deviation of a spawned token, metres."""
    max_tokens: int = 300
    """Hard cap on the number of tokens (split and spawn stop there)."""
    reject_dice_cost: float = 0.9
    """A mask-token match whose Dice cost exceeds this is rejected (code: 0.9); also the bound on
    the best Dice cost of a mask that may raise a split signal."""
    union_containment: float = 0.8
    """Under-segmentation (not in the paper): an unmatched token in view whose rendered mass on
    a frame's rays lies at least this share inside one matched mask is trained with it: the
    mask supervises the union of its tokens (instance and panoptic losses), so touching
    objects that the segmenter often merges keep their own tokens. 0 = off (one token per
    mask, as the paper)."""
    union_min_rays: float = 3.0
    """... and at least this much of its mass (in rays) must lie inside the mask."""

    def validate(self) -> None:
        require(0 <= self.start_fraction <= 1, "start_fraction", self.start_fraction,
                "must be in [0, 1]")
        require(0 < self.every_fraction <= 1, "every_fraction", self.every_fraction,
                "must be in (0, 1]")
        require(self.min_assignments >= 0, "min_assignments", self.min_assignments,
                "must be >= 0")
        for name in ("mask_threshold", "iom_threshold", "reject_dice_cost"):
            value = getattr(self, name)
            require(0 < value <= 1, name, value, "must be in (0, 1]")
        require(self.iom_voxel_size_m > 0, "iom_voxel_size_m", self.iom_voxel_size_m,
                "must be > 0")
        require(self.max_iom_points >= 10, "max_iom_points", self.max_iom_points, "must be >= 10")
        require(self.split_min_signals >= 1, "split_min_signals", self.split_min_signals,
                "must be >= 1")
        require(self.min_visible_frames >= 0, "min_visible_frames", self.min_visible_frames,
                "must be >= 0")
        for name in ("split_min_claim_ratio", "grow_until", "union_containment"):
            value = getattr(self, name)
            require(0 <= value <= 1, name, value, "must be in [0, 1]")
        require(self.union_min_rays >= 0, "union_min_rays", self.union_min_rays, "must be >= 0")
        require(0 < self.merge_ratio <= 1, "merge_ratio", self.merge_ratio, "must be in (0, 1]")
        require(self.merge_min_frames >= 1, "merge_min_frames", self.merge_min_frames,
                "must be >= 1")
        require(self.spawn_min_count >= 1, "spawn_min_count", self.spawn_min_count,
                "must be >= 1")
        require(self.spawn_voxel_size_m > 0, "spawn_voxel_size_m", self.spawn_voxel_size_m,
                "must be > 0")
        require(self.spawn_sigma_m > 0, "spawn_sigma_m", self.spawn_sigma_m, "must be > 0")
        require(self.max_tokens >= 1, "max_tokens", self.max_tokens, "must be >= 1")


@dataclass
class SamplerConfig(ConfigBase):
    """Where rendered quantities are evaluated along a ray (PR++ section 1.11)."""

    mode: Literal["depth_guided", "volume"] = "depth_guided"
    """``volume``: the paper's full volume rendering (band + uniform + importance samples);
    ``depth_guided``: samples in a band around the observed depth only (CPU-feasible)."""
    band_m: float = 0.1
    """Half width of the band around the observed depth, metres (code: 0.1 m)."""
    geometry_band_samples: int = 6
    """Stratified samples in the band on a geometry ray (depth-guided mode)."""
    free_space_samples: int = 2
    """Stratified samples between ``near_m`` and the band on a geometry ray (depth-guided)."""
    segmentation_band_samples: int = 1
    """Stratified samples in the band on a segmentation ray (depth-guided). 1 evaluates the
    labels at the observed surface point only (weight 1): the cheapest depth-guided form, and
    the CPU default."""
    segmentation_band_m: float = 0.05
    """Half width of the band on segmentation rays, metres."""
    volume_band_samples: int = 10
    """Volume mode: stratified samples in the band (code: 10)."""
    volume_uniform_samples: int = 15
    """Volume mode: stratified samples over [near_m, far_m] (code: 15)."""
    volume_importance_samples: int = 10
    """Volume mode: NeuS importance samples from a coarse pass (code: 10)."""
    importance_inv_s_per_m: float = 64.0
    """Fixed S-density sharpness of the coarse pass used for importance sampling, 1/m."""
    near_m: float = 0.3
    """Closest range sampled, metres; pixels with smaller depth are not used (code: 0.3-0.5)."""
    far_m: float = 8.0
    """Farthest range sampled in volume mode, metres."""
    init_inv_s_per_m: float = 20.0
    """Initial S-density sharpness xi (learned as ``exp(log_inv_s)``), 1/m."""

    def validate(self) -> None:
        for name in ("band_m", "segmentation_band_m", "near_m", "importance_inv_s_per_m",
                     "init_inv_s_per_m"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")
        require(self.far_m > self.near_m, "far_m", self.far_m, "must be > near_m")
        for name in ("geometry_band_samples", "volume_band_samples", "volume_uniform_samples"):
            require(getattr(self, name) >= 2, name, getattr(self, name), "must be >= 2")
        require(self.segmentation_band_samples >= 1, "segmentation_band_samples",
                self.segmentation_band_samples, "must be >= 1")
        for name in ("free_space_samples", "volume_importance_samples"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")


@dataclass
class LossConfig(ConfigBase):
    """Loss weights (code values, PR++ section 1.13) and loss constants."""

    depth: float = 2.5
    """Weight of the rendered-depth L1 (E26)."""
    sdf_near: float = 30.0
    """Weight of the truncated near-surface SDF L1 (E24, |b| <= tau)."""
    sdf_free: float = 10.0
    """Weight of the free-space SDF loss (E24, in front of the band)."""
    eikonal: float = 1.0
    """Weight of the eikonal loss (E25)."""
    semantic: float = 80.0
    """Weight of the semantic NLL (E32)."""
    instance: float = 30.0
    """Weight of the matched-pair Dice + BCE instance loss (E30)."""
    token_class: float = 30.0
    """Weight of the token class loss (E31)."""
    panoptic: float = 300.0
    """Weight of the panoptic NLL (E33) (code: 30 x 10)."""
    prior_distill: float = 30.0
    """Weight of the prior-distillation loss (semantic NLL and token-mask BCE at the prior
    map's mesh vertices against its labels and instances; not in the paper: it starts the field
    from the instant map so a CPU budget goes into correcting it)."""
    prior_distill_points: int = 2048
    """Prior mesh vertices drawn per step for the distillation loss."""
    query_separation: float = 0.0
    """Weight of the code's token-feature hinge (not in the paper; 0 = off)."""
    query_separation_margin: float = 10.0
    """Margin of that hinge in feature units."""
    truncation_m: float = 0.15
    """tau: half width of the near-surface SDF band, metres."""
    free_space_beta: float = 1.0
    """beta of the free-space term ``max(0, exp(-beta s) - 1, s - b)``."""
    dice_eps: float = 1.0
    """Dice smoothing (paper: 1; it stabilises small masks over few sampled rays)."""
    match_class_cost: float = 0.5
    """Weight of the class term ``-p_class`` in the matching cost (paper: none, code: 0.5);
    it keeps a token on masks of its own class when a segmenter confuses neighbours."""
    score_weighting: bool = True
    """Weight the 2D-supervised losses (semantic, instance, class, panoptic) by the detection
    score of the pixel's segment (not in the paper: Grounded SAM's confidence; confused and
    hallucinated segments score lower)."""

    def validate(self) -> None:
        for name in ("depth", "sdf_near", "sdf_free", "eikonal", "semantic", "instance",
                     "token_class", "panoptic", "query_separation", "query_separation_margin",
                     "dice_eps", "match_class_cost", "prior_distill"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        require(self.truncation_m > 0, "truncation_m", self.truncation_m, "must be > 0")
        require(self.prior_distill_points >= 1, "prior_distill_points",
                self.prior_distill_points, "must be >= 1")
        require(self.free_space_beta > 0, "free_space_beta", self.free_space_beta, "must be > 0")


@dataclass
class ScheduleConfig(ConfigBase):
    """When each loss is active, as fractions of the step budget (PR++ section 1.12)."""

    segmentation_start: float = 0.05
    """Semantic, instance and class losses start here (code: epoch 1 of 20)."""
    panoptic_start: float = 0.2
    """The panoptic loss starts here (code: epoch 4 of 20; paper: "after two epochs")."""
    drop_dice_start: float = 0.2
    """Dice leaves the instance loss here, BCE stays (code: with the panoptic loss)."""
    prior_distill_until: float = 1.0
    """The prior-distillation loss (when a prior is given) runs until this fraction: to the
    end by default, which keeps the field anchored to the prior where the 2D masks disagree
    among themselves (measured better than stopping it at 0.2 on the hard synthetic scene)."""
    semantic_with_panoptic: bool = True
    """Keep the semantic loss once the panoptic loss is on (paper: yes; code: no)."""
    panoptic_head: bool = True
    """Train with the Bayes panoptic loss and read labels through the panoptic head; False
    reads them from the semantic branch and token masks (ablation)."""
    epochs: int = 20
    """The budget is cut into this many "epochs" for the learning-rate decay."""
    lr_decay_per_epoch: float = 0.95
    """Multiplicative learning-rate decay per epoch (code: ExponentialLR 0.95)."""

    def validate(self) -> None:
        for name in ("segmentation_start", "panoptic_start", "drop_dice_start",
                     "prior_distill_until"):
            value = getattr(self, name)
            require(0 <= value <= 1, name, value, "must be in [0, 1]")
        require(self.panoptic_start >= self.segmentation_start, "panoptic_start",
                self.panoptic_start, "must be >= segmentation_start")
        require(self.epochs >= 1, "epochs", self.epochs, "must be >= 1")
        require(0 < self.lr_decay_per_epoch <= 1, "lr_decay_per_epoch", self.lr_decay_per_epoch,
                "must be in (0, 1]")


@dataclass
class OptimizerConfig(ConfigBase):
    """Adam learning rates per parameter group (code values, PR++ section 1.12)."""

    grids: float = 1e-2
    """Hash-grid tables."""
    decoders: float = 1e-3
    """SDF and semantic decoders (code: 2e-4 over 6000+ steps; higher for CPU budgets)."""
    inv_s: float = 1e-3
    """S-density sharpness (its log)."""
    instance_module: float = 1e-3
    """Query projection, LayerNorm and class head h_SI."""
    token_means: float = 5e-3
    """Token centres (metres; code 5e-3 in normalised units)."""
    token_log_scales: float = 1e-2
    """Token log standard deviations."""
    token_quats: float = 2e-3
    """Token rotations (quaternions)."""
    token_features: float = 5e-3
    """Token features f_q."""
    token_class_features: float = 1e-2
    """Token class features F_i."""

    def validate(self) -> None:
        for name in ("grids", "decoders", "inv_s", "instance_module", "token_means",
                     "token_log_scales", "token_quats", "token_features", "token_class_features"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")


@dataclass
class TrainerConfig(ConfigBase):
    """What one training step draws and how long training runs.

    The trainer uses torch's thread count as the process set it (the mapper node:
    ``torch_threads``; a CLI or benchmark: its own option): a library setting that
    changed the process-wide count while training raced with every other torch user.
    """

    REMOVED_SETTINGS = {"torch_threads": "torch's thread count is the process's (the mapper "
                                         "node: torch_threads)"}

    total_steps: int = 1200
    """Step budget the schedule is scaled to (code: 6000-7500 on a GPU)."""
    geometry_rays_per_step: int = 128
    """Rays with observed depth drawn from random keyframes for the geometry losses."""
    segmentation_frames_per_step: int = 4
    """Keyframes whose rays carry the segmentation losses in one step (code: 10)."""
    segmentation_rays_per_frame: int = 256
    """Rays per segmentation keyframe (the Hungarian cost is computed on them)."""
    segment_balanced_fraction: float = 0.5
    """Share of segmentation rays drawn equally per 2D segment instead of uniformly, so small
    masks get enough rays for the matching."""
    eikonal_points_per_step: int = 64
    """Sample points given a finite-difference eikonal term per step."""
    eikonal_step_m: float = 0.01
    """Central-difference step of the eikonal gradient, metres."""
    seed: int = 0
    """Seed of the ray sampling and of the token and weight initialisation: offline, on the CPU
    with the same thread count, training on the same keyframes and prior repeats bit for bit."""
    device: str = "auto"
    """Torch device of the field, tokens, optimiser state and every per-step tensor: ``auto``
    (CUDA where torch sees a CUDA device, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    Resolved when the trainer is built, so one file serves CPU and GPU machines; ``cuda`` on a
    machine without CUDA is a ConfigError then. Results and checkpoints are CPU tensors."""

    def validate(self) -> None:
        for name in ("total_steps", "geometry_rays_per_step", "segmentation_frames_per_step",
                     "segmentation_rays_per_frame"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        require(0 <= self.segment_balanced_fraction <= 1, "segment_balanced_fraction",
                self.segment_balanced_fraction, "must be in [0, 1]")
        require(self.eikonal_points_per_step >= 0, "eikonal_points_per_step",
                self.eikonal_points_per_step, "must be >= 0")
        require(self.eikonal_step_m > 0, "eikonal_step_m", self.eikonal_step_m, "must be > 0")
        require(DEVICE_PATTERN.fullmatch(self.device) is not None, "device", self.device,
                "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class KeyframeConfig(ConfigBase):
    """Which frames are kept for training and at what resolution."""

    min_translation_m: float = 0.05
    """A frame becomes a keyframe when the camera moved this far since the last keyframe..."""
    min_rotation_deg: float = 5.0
    """... or turned this much, degrees ..."""
    max_interval_s: float = 1.0
    """... or this much time passed, seconds."""
    image_scale: float = 0.5
    """Keyframes are stored downsampled by this factor (nearest neighbour), to bound memory:
    300 keyframes at 320x240 take about 160 MB."""
    max_keyframes: int = 400
    """Keyframes kept at most (paper: 200-400). When full, the keyframe whose camera centre
    is nearest to another keyframe's camera centre is evicted: position only, viewing direction
    and time are not compared."""
    keep_rgb: bool = False
    """Keep the colour images (only the appearance branch needs them)."""

    def validate(self) -> None:
        for name in ("min_translation_m", "min_rotation_deg", "max_interval_s"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        require(0 < self.image_scale <= 1, "image_scale", self.image_scale, "must be in (0, 1]")
        require(self.max_keyframes >= 2, "max_keyframes", self.max_keyframes, "must be >= 2")


@dataclass
class FieldTrainingConfig(ConfigBase):
    """Everything the neural panoptic field and its trainer need."""

    field: PanopticFieldConfig = dataclasses.field(default_factory=PanopticFieldConfig)
    """Encodings and decoders."""
    tokens: TokenConfig = dataclasses.field(default_factory=TokenConfig)
    """Instance tokens."""
    token_manager: TokenManagerConfig = dataclasses.field(default_factory=TokenManagerConfig)
    """Prune / split / spawn policy."""
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    """Ray sampling and rendering mode."""
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    """Loss weights."""
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    """Loss schedule and learning-rate decay."""
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    """Learning rates."""
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    """Batch sizes, budget and device."""

    def validate(self) -> None:
        if self.trainer.device != "cpu":
            return  # auto and cuda: checked against the machine when the trainer is built
        for name in GRID_NAMES:
            require(getattr(self.field, name).implementation != "tcnn",
                    f"field.{name}.implementation", "tcnn",
                    "tiny-cuda-nn computes on CUDA tensors only and trainer.device is 'cpu'; "
                    "use 'auto' or 'torch', or a CUDA trainer.device")
