"""Training of the neural panoptic field, resumable in chunks of steps.

One step (``FieldTrainer.step``):

1. geometry: rays with depth from random keyframes; SDF at band (+ free-space) samples, or at
   the paper's volume samples; depth L1, near-surface and free-space SDF losses, finite-difference
   eikonal;
2. prior distillation (with a prior map, until ``prior_distill_until``): semantic NLL, per-token
   Dice + BCE and token class CE at the prior's mesh vertices against its labels and instances;
3. segmentation (after the geometry warm-up): rays from a few keyframes; detached NeuS weights
   (or the observed surface point) composite semantic probabilities and token masks; per frame,
   Hungarian assignment of its thing masks to tokens, matched-pair Dice + BCE, token class CE;
   the Bayes panoptic head's rendered distribution against stuff classes and assigned tokens
   (unmatched masks ignored); all weighted by the segments' detection scores;
4. Adam step with the decayed learning rates; token maintenance when due.

Thread safety: every step and every read of the field (:meth:`FieldTrainer.predict`) holds
``FieldTrainer.lock``, so a ROS worker thread can train while service threads query.

Device (``TrainerConfig.device``, resolved once in the constructor by ``device.py``): the field,
tokens and optimiser state live on :attr:`FieldTrainer.device`, and so does every per-step
tensor (rays, samples, targets, prior targets), made there by :meth:`FieldTrainer._on_device`
and :meth:`FieldTrainer._rand`. The random generator stays on the CPU (its state is portable
and a seed draws the same samples on every device). What goes to numpy or scipy (Hungarian
costs, mask centroids, token maintenance) comes back to the CPU; :meth:`FieldTrainer.predict`
returns CPU tensors and :meth:`FieldTrainer.state_dict` holds CPU tensors only, so a checkpoint
loads on any device.

Owns: :class:`FieldTrainer`, :class:`TrainingProgress`, :class:`FieldPrediction`.
Does not own: keyframe selection or the prior map (``core/mapping/refined_map.py``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import FieldTrainingConfig
from panoptic_mapper.core.field.device import resolve_training_device, seeded_init
from panoptic_mapper.core.field.gaussian_tokens import InstanceTokens
from panoptic_mapper.core.field.keyframes import (NO_MASK, Keyframe, KeyframeStore, RayBatch,
                                                  concat_ray_batches, make_ray_batch,
                                                  sample_geometry_rays,
                                                  sample_segmentation_pixels)
from panoptic_mapper.core.field.losses import (IGNORE, LossName, depth_l1, eikonal,
                                               grouped_mask_losses, matched_mask_losses,
                                               probability_nll,
                                               query_separation, sdf_losses, token_class_loss)
from panoptic_mapper.core.field.matching import (UNMATCHED, MaskAssignment, assign_masks,
                                                 bce_cost, covered_tokens, dice_cost)
from panoptic_mapper.core.field.panoptic_field import PanopticField, SceneBox
from panoptic_mapper.core.field.panoptic_head import bayes_panoptic_probabilities
from panoptic_mapper.core.field.rendering import (RayBundle, band_ranges, interval_midpoints,
                                                  neus_alpha, normalized_weights,
                                                  volume_ranges, weights_from_alpha)
from panoptic_mapper.core.field.schedule import TrainingPhase, lr_factor, phase_at
from panoptic_mapper.core.field.token_init import (TokenSeeds, seeds_from_keyframes,
                                                   voxel_downsample_mean)
from panoptic_mapper.core.field.token_manager import (TokenChange, TokenManager,
                                                      TokenManagerState)

PIXELS_PER_KEYFRAME_FOR_POINTS = 2000
"""Valid pixels per keyframe back-projected when the trainer needs a scene point cloud."""
PREDICT_CHUNK = 65536
"""Points per forward pass in :meth:`FieldTrainer.predict`."""
MIN_RAYS_IN_VIEW = 3
"""A token is in view in a sampled frame when at least this many of its rays hit its core."""


@dataclass
class TrainingProgress:
    """Where training stands (returned by :meth:`FieldTrainer.train_steps`)."""

    step: int
    """Steps done so far."""
    total_steps: int
    """The step budget of the schedule."""
    phase: str
    """Phase of the last step."""
    losses: dict[str, float]
    """Loss values of the last step, by :class:`LossName` value."""
    num_tokens: int
    num_keyframes: int
    steps_per_s: float
    """Rate over the chunk just trained."""
    elapsed_s: float
    """Wall time of the chunk."""
    token_changes: list[TokenChange] = field(default_factory=list)
    """Maintenance results within the chunk."""
    box: SceneBox | None = None
    """The scene box of the field in training (None before setup)."""
    field_restarts: int = 0
    """Times the field was restarted on a grown box (set by the refined map)."""
    box_growth_due: bool = False
    """A keyframe sees beyond the box: the next training call restarts the field on a grown
    box (set by the refined map)."""

    @property
    def done(self) -> bool:
        """The schedule's budget is used up and the box need not grow."""
        return self.step >= self.total_steps and not self.box_growth_due


@dataclass
class PriorTargets:
    """Labels of a prior map at its mesh vertices, for the prior-distillation loss."""

    points_m: np.ndarray
    """[M, 3] float32 vertex positions."""
    semantic_class: np.ndarray
    """[M] int64 semantic class index of the prior's label (0 = unlabelled, ignored)."""
    instance_ids: np.ndarray
    """[M] int64 the prior's instance id (0 = none)."""


@dataclass
class FieldPrediction:
    """The field at query points (no gradients; CPU tensors whatever the trainer's device)."""

    sdf_m: torch.Tensor
    """[P] signed distance ([0] when not requested)."""
    semantic_probs: torch.Tensor
    """[P, C]."""
    token_masks: torch.Tensor
    """[P, N]."""
    token_class_probs: torch.Tensor
    """[N, T + 1]."""
    token_ids: list[int]
    """Stable id of each token column."""


class FieldTrainer:
    """Owns the field, its optimiser, the schedule state and the token manager state.

    Args:
        config: field and training settings.
        classes: class spaces from the label registry.
        store: the keyframes to train on (may keep growing while training).

    Raises:
        ConfigError: ``trainer.device`` names a CUDA device this machine lacks, or a grid's
            ``implementation: tcnn`` cannot run on the resolved device.
    """

    def __init__(self, config: FieldTrainingConfig, classes: ClassSpace, store: KeyframeStore):
        self.device = resolve_training_device(config)
        """Where the field, its optimiser state and the per-step tensors live."""
        self.config = config
        self.classes = classes
        self.store = store
        self.lock = threading.RLock()
        self.manager = TokenManager(config.token_manager)
        self.field: PanopticField | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.manager_state: TokenManagerState | None = None
        self.step_count = 0
        self.total_steps = config.trainer.total_steps
        self.rng = np.random.default_rng(config.trainer.seed)
        self.generator = torch.Generator().manual_seed(config.trainer.seed)
        self.last_losses: dict[str, float] = {}
        self._base_lrs: list[float] = []
        self._points_cache: tuple[int, np.ndarray] | None = None
        self.prior_targets: PriorTargets | None = None
        self._distill_token_ids: np.ndarray | None = None
        self._distill_token_classes: dict[int, int] = {}

    # ---- setup ---------------------------------------------------------------------------
    @property
    def is_setup(self) -> bool:
        return self.field is not None

    def setup(self, seeds: TokenSeeds | None = None,
              extra_points_m: np.ndarray | None = None,
              prior_targets: PriorTargets | None = None, box: SceneBox | None = None) -> None:
        """Fix the scene box and create the field, tokens and optimiser.

        Args:
            seeds: initial tokens; by default from back-projected mask pixels of the keyframes.
            extra_points_m: [M, 3] more points the box must cover (e.g. a prior map's mesh).
            prior_targets: a prior map's labels for the prior-distillation loss; its instance
                ids are tied to the tokens seeded from them (``seeds.prior_ids``).
            box: the scene box; by default the cube around the keyframes' back-projected
                pixels and ``extra_points_m``, plus ``field.scene_margin_m``.
        """
        keyframes = self.store.snapshot()
        if not keyframes:
            raise InvalidInputError("keyframes", 0, "training needs at least one keyframe",
                                    kind="field")
        if box is None:
            points = [self.scene_points(keyframes)]
            if extra_points_m is not None and len(extra_points_m):
                points.append(np.asarray(extra_points_m, np.float64).reshape(-1, 3))
            box = SceneBox.from_points(np.concatenate(points), self.config.field.scene_margin_m)
        if seeds is None:
            seeds = seeds_from_keyframes(keyframes, self.config.tokens,
                                         self.config.sampler.near_m, self.rng)
        key_dim = self.config.field.instance_grid.output_dim
        tokens = InstanceTokens.create(seeds.means_m, seeds.sigmas_m,
                                       np.arange(1, seeds.count + 1), key_dim, key_dim,
                                       self.generator, rotations=seeds.rotations)
        with self.lock:
            self._build(box, tokens)
            self.manager_state = self.manager.initialize_state(tokens)
            self._set_prior_targets(prior_targets, seeds)

    def _set_prior_targets(self, targets: PriorTargets | None, seeds: TokenSeeds) -> None:
        """Keep the targets, with each vertex's prior instance turned into its token's id."""
        self.prior_targets = targets
        self._distill_token_ids = None
        self._distill_token_classes = {}
        if targets is None:
            return
        token_of_prior = {int(p): i + 1 for i, p in enumerate(seeds.prior_ids) if p > 0}
        self._distill_token_ids = np.array(
            [token_of_prior.get(int(p), 0) for p in targets.instance_ids], np.int64)
        if seeds.label_ids is not None:
            token_class = self.classes.semantic_to_token_class(
                self.classes.label_to_semantic_class(seeds.label_ids))
            self._distill_token_classes = {i + 1: int(c) for i, c in enumerate(token_class)
                                           if c > 0 and seeds.prior_ids[i] > 0}

    def _build(self, box: SceneBox, tokens: InstanceTokens) -> None:
        # Decoders and hash tables draw from torch's global generator: seed it, so that a run
        # repeats (tokens already draw from self.generator).
        with seeded_init(self.config.trainer.seed, self.device):
            self.field = PanopticField(self.config.field, self.config.tokens, self.classes, box,
                                       tokens, self.config.sampler.init_inv_s_per_m,
                                       self.device)
        lr = self.config.optimizer
        f = self.field
        # The encodings' own leaf parameters: tiny-cuda-nn's table() is a view, which Adam
        # rejects.
        grids = [p for e in (f.sdf_encoding, f.semantic_encoding, f.instance_encoding)
                 for p in e.parameters()]
        groups = [
            {"params": grids, "lr": lr.grids, "eps": 1e-15},
            {"params": list(f.sdf_decoder.parameters()) + list(f.semantic_decoder.parameters()),
             "lr": lr.decoders},
            {"params": [f.log_inv_s], "lr": lr.inv_s},
            {"params": list(f.instance_module.parameters()), "lr": lr.instance_module},
            {"params": [f.tokens.means], "lr": lr.token_means},
            {"params": [f.tokens.quats], "lr": lr.token_quats},
            {"params": [f.tokens.log_scales], "lr": lr.token_log_scales},
            {"params": [f.tokens.features], "lr": lr.token_features},
            {"params": [f.tokens.class_features], "lr": lr.token_class_features},
        ]
        self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), foreach=True)
        self._base_lrs = [g["lr"] for g in groups]

    def add_tokens(self, seeds: TokenSeeds) -> list[int]:
        """Append tokens (e.g. for instances a prior map confirmed after setup); returns their
        new stable ids. Their class features learn from scratch."""
        with self.lock:
            if self.field is None or seeds.count == 0:
                return []
            ids = list(range(self.manager_state.next_id,
                             self.manager_state.next_id + seeds.count))
            self.manager_state.next_id += seeds.count
            self.field.tokens.append_rows(seeds.means_m, seeds.sigmas_m, np.asarray(ids),
                                          self.optimizer, self.generator, seeds.rotations)
            return ids

    def set_total_steps(self, total_steps: int) -> None:
        """Rescale the schedule to a new budget (phases are fractions of it)."""
        if total_steps < 1:
            raise InvalidInputError("total_steps", total_steps, "must be >= 1", kind="field")
        with self.lock:
            self.total_steps = int(total_steps)

    def scene_points(self, keyframes: list[Keyframe] | None = None) -> np.ndarray:
        """[M, 3] back-projected points of (a subset of the pixels of) all keyframes, cached per
        keyframe-store version."""
        version = self.store.version
        if keyframes is None and self._points_cache and self._points_cache[0] == version:
            return self._points_cache[1]
        keyframes = self.store.snapshot() if keyframes is None else keyframes
        near = self.config.sampler.near_m
        rng = np.random.default_rng(version)
        points = []
        for keyframe in keyframes:
            valid = keyframe.valid_pixels(near)
            if len(valid):
                count = min(PIXELS_PER_KEYFRAME_FOR_POINTS, len(valid))
                points.append(keyframe.surface_points(rng.choice(valid, count, replace=False)))
        result = np.concatenate(points) if points else np.zeros((0, 3))
        self._points_cache = (version, result)
        return result

    # ---- training --------------------------------------------------------------------------
    def phase(self) -> TrainingPhase:
        """The phase of the next step."""
        return phase_at(self.step_count, self.total_steps, self.config.schedule)

    def train_steps(self, num_steps: int, deadline_s: float | None = None,
                    should_stop: Callable[[], bool] | None = None) -> TrainingProgress:
        """Run up to ``num_steps`` steps (stops early at ``deadline_s``, a ``time.monotonic``
        value, or when ``should_stop()`` is true). Sets torch's thread count when configured."""
        if not self.is_setup:
            raise InvalidInputError("trainer", "not set up", "call setup() first", kind="field")
        threads = self.config.trainer.torch_threads
        previous_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        changes: list[TokenChange] = []
        start = time.monotonic()
        done = 0
        try:
            for _ in range(num_steps):
                if deadline_s is not None and time.monotonic() >= deadline_s:
                    break
                if should_stop is not None and should_stop():
                    break
                change = self.step()
                if change is not None and change.changed:
                    changes.append(change)
                done += 1
        finally:
            if threads:
                torch.set_num_threads(previous_threads)
        elapsed = time.monotonic() - start
        return self.progress(done / elapsed if elapsed > 0 else 0.0, elapsed, changes)

    def progress(self, steps_per_s: float = 0.0, elapsed_s: float = 0.0,
                 changes: list[TokenChange] | None = None) -> TrainingProgress:
        """A progress record of the current state."""
        with self.lock:
            num_tokens = self.field.tokens.num_tokens if self.field is not None else 0
            return TrainingProgress(self.step_count, self.total_steps,
                                    phase_at(max(self.step_count - 1, 0), self.total_steps,
                                             self.config.schedule).name,
                                    dict(self.last_losses), num_tokens, len(self.store),
                                    steps_per_s, elapsed_s, list(changes or []),
                                    self.field.box if self.field is not None else None)

    def step(self) -> TokenChange | None:
        """One optimisation step; returns the token maintenance result when one ran."""
        with self.lock:
            keyframes = self.store.snapshot()
            phase = self.phase()
            losses: dict[LossName, torch.Tensor] = {}
            self._geometry_losses(keyframes, losses)
            if phase.prior_distill and self.prior_targets is not None:
                self._prior_distill_loss(losses)
            if phase.segmentation:
                self._segmentation_losses(keyframes, phase, losses)
            weights = self._loss_weights()
            total = sum(weights[name] * value for name, value in losses.items())
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            factor = lr_factor(self.step_count, self.total_steps, self.config.schedule)
            for group, base in zip(self.optimizer.param_groups, self._base_lrs):
                group["lr"] = base * factor
            self.optimizer.step()
            losses[LossName.TOTAL] = total
            self.last_losses = {name.value: float(value.detach()) for name, value in
                                losses.items()}
            change = None
            if self.manager.is_due(self.manager_state, self.step_count, self.total_steps):
                change = self._maintain_tokens()
            self.step_count += 1
            return change

    def _on_device(self, data, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``data`` (numpy array, list or tensor) as a tensor on the trainer's device."""
        return torch.as_tensor(data, dtype=dtype, device=self.device)

    def _rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) draws of ``shape`` from the (CPU) generator, on the device."""
        return torch.rand(*shape, generator=self.generator).to(self.device)

    def _loss_weights(self) -> dict[LossName, float]:
        w = self.config.loss
        return {LossName.DEPTH: w.depth, LossName.SDF_NEAR: w.sdf_near,
                LossName.SDF_FREE: w.sdf_free, LossName.EIKONAL: w.eikonal,
                LossName.SEMANTIC: w.semantic, LossName.INSTANCE_DICE: w.instance,
                LossName.INSTANCE_BCE: w.instance, LossName.TOKEN_CLASS: w.token_class,
                LossName.PANOPTIC: w.panoptic, LossName.QUERY_SEPARATION: w.query_separation,
                LossName.PRIOR_DISTILL: w.prior_distill}

    def _geometry_losses(self, keyframes: list[Keyframe],
                         losses: dict[LossName, torch.Tensor]) -> None:
        cfg = self.config
        sampler = cfg.sampler
        rays = sample_geometry_rays(keyframes, cfg.trainer.geometry_rays_per_step,
                                    sampler.near_m, self.rng).to(self.device)
        bundle = RayBundle(rays.origins_m, rays.directions, rays.observed_range_m)
        if sampler.mode == "volume":
            ranges = volume_ranges(self.field, bundle, sampler, self.generator)
        else:
            band = band_ranges(rays.observed_range_m, sampler.band_m,
                               sampler.geometry_band_samples, sampler.near_m, self.generator)
            parts = [band]
            if sampler.free_space_samples:
                near = torch.full_like(rays.observed_range_m, sampler.near_m)
                far = torch.maximum(band[:, 0], near)
                from_near = self._rand(rays.num_rays, sampler.free_space_samples)
                parts.insert(0, near[:, None] + (far - near)[:, None] * from_near.sort(1).values)
            ranges = torch.cat(parts, dim=1)
        points = bundle.points(ranges)  # [R, S, 3]
        sdf = self.field.sdf(points.reshape(-1, 3)).view(ranges.shape)
        weights = weights_from_alpha(neus_alpha(sdf, self.field.inv_s()))
        depth = (normalized_weights(weights) * interval_midpoints(ranges)).sum(dim=1)
        losses[LossName.DEPTH] = depth_l1(depth, rays.observed_range_m)
        near_loss, free_loss = sdf_losses(sdf, ranges, rays.observed_range_m,
                                          cfg.loss.truncation_m, cfg.loss.free_space_beta)
        losses[LossName.SDF_NEAR] = near_loss
        losses[LossName.SDF_FREE] = free_loss
        count = cfg.trainer.eikonal_points_per_step
        if count:
            flat = points.reshape(-1, 3).detach()
            chosen = flat[self._on_device(torch.randint(0, flat.shape[0], (count,),
                                                        generator=self.generator))]
            h = cfg.trainer.eikonal_step_m
            offsets = self._on_device(torch.cat([torch.eye(3), -torch.eye(3)]) * h)  # [6, 3]
            probe = (chosen[:, None, :] + offsets[None]).reshape(-1, 3)
            values = self.field.sdf(probe).view(count, 6)
            gradient = (values[:, :3] - values[:, 3:]) / (2.0 * h)
            losses[LossName.EIKONAL] = eikonal(gradient)

    def _prior_distill_loss(self, losses: dict[LossName, torch.Tensor]) -> None:
        """Semantic NLL and per-token Dice + BCE at prior mesh vertices against the prior."""
        targets = self.prior_targets
        count = min(self.config.loss.prior_distill_points, len(targets.points_m))
        chosen = self.rng.integers(0, len(targets.points_m), count)
        points = self._on_device(np.asarray(targets.points_m[chosen], np.float32))
        semantic = torch.softmax(self.field.semantic_logits(points), dim=-1)
        loss = probability_nll(semantic, self._on_device(targets.semantic_class[chosen]),
                               ignore_index=0)
        tokens = self.field.tokens
        if tokens.num_tokens:
            row_of_id = {token_id: row for row, token_id in enumerate(tokens.ids_list())}
            rows = np.array([row_of_id.get(int(t), -1) for t in
                             self._distill_token_ids[chosen]])
            target = torch.zeros(tokens.num_tokens, count, device=self.device)
            has_row = rows >= 0
            target[self._on_device(rows[has_row]), self._on_device(np.flatnonzero(has_row))] = 1
            pairs = [(int(r), int(r)) for r in np.unique(rows[has_row])]
            masks = self.field.token_masks(points).T  # [N, count]
            dice, bce = matched_mask_losses(masks, target, pairs, self.config.loss.dice_eps)
            loss = loss + dice + bce
            classed = [(row_of_id[t], c) for t, c in self._distill_token_classes.items()
                       if t in row_of_id]
            if classed:
                loss = loss + token_class_loss(self.field.token_class_logits(),
                                               self._on_device([r for r, _ in classed]),
                                               self._on_device([c for _, c in classed]))
        losses[LossName.PRIOR_DISTILL] = loss

    def _segmentation_losses(self, keyframes: list[Keyframe], phase: TrainingPhase,
                             losses: dict[LossName, torch.Tensor]) -> None:
        cfg = self.config
        sampler = cfg.sampler
        labelled = [k for k in keyframes
                    if k.has_segmentation and len(k.segment_pixels(sampler.near_m))]
        if not labelled:
            return
        chosen = self.rng.choice(len(labelled),
                                 min(cfg.trainer.segmentation_frames_per_step, len(labelled)),
                                 replace=False)
        frames = [labelled[i] for i in chosen]
        batches = [make_ray_batch(k, sample_segmentation_pixels(
            k, cfg.trainer.segmentation_rays_per_frame, cfg.trainer.segment_balanced_fraction,
            sampler.near_m, self.rng)).to(self.device) for k in frames]
        rays = concat_ray_batches(batches)
        bundle = RayBundle(rays.origins_m, rays.directions, rays.observed_range_m)
        if sampler.mode == "volume":
            ranges = volume_ranges(self.field, bundle, sampler, self.generator)
        elif sampler.segmentation_band_samples == 1:
            ranges = rays.observed_range_m[:, None]
        else:
            ranges = band_ranges(rays.observed_range_m, sampler.segmentation_band_m,
                                 sampler.segmentation_band_samples, sampler.near_m,
                                 self.generator)
        num_rays, num_samples = ranges.shape
        points = bundle.points(ranges)
        if num_samples == 1:
            weights = torch.ones(num_rays, 1, device=self.device)
            label_points = points[:, 0]
        else:
            with torch.no_grad():
                sdf = self.field.sdf(points.reshape(-1, 3)).view(num_rays, num_samples)
                weights = normalized_weights(weights_from_alpha(neus_alpha(sdf,
                                                                           self.field.inv_s())))
                weights = weights[:, :-1] / weights[:, :-1].sum(dim=1, keepdim=True)
            label_points = points[:, :-1].reshape(-1, 3)
        per_sample = weights.shape[1]
        semantic = torch.softmax(self.field.semantic_logits(label_points), dim=-1)
        masks = self.field.token_masks(label_points)  # [R * per_sample, N]

        def composite(values: torch.Tensor) -> torch.Tensor:
            return (weights[..., None] * values.view(num_rays, per_sample, -1)).sum(dim=1)

        rendered_semantic = composite(semantic)
        rendered_masks = composite(masks)  # [R, N]
        ray_weights = rays.score if cfg.loss.score_weighting else None
        if phase.semantic:
            losses[LossName.SEMANTIC] = probability_nll(rendered_semantic, rays.semantic_class,
                                                        0, ray_weights)
        panoptic_target, covered_by_ray = self._match_frames(frames, batches, rays,
                                                             rendered_masks, phase, losses)
        if phase.panoptic:
            panoptic = composite(bayes_panoptic_probabilities(semantic, masks,
                                                              self.classes.num_stuff))
            also = None
            if covered_by_ray is not None:
                # A covered token is as right as the matched one on its mask's rays.
                also = torch.zeros_like(panoptic)
                also[:, 1 + self.classes.num_stuff:] = covered_by_ray
            losses[LossName.PANOPTIC] = probability_nll(panoptic, panoptic_target, IGNORE,
                                                        ray_weights, also)
        if cfg.loss.query_separation > 0 and self.field.tokens.num_tokens > 1:
            queries = self.field.instance_module.queries(self.field.tokens.features)
            losses[LossName.QUERY_SEPARATION] = query_separation(
                queries, cfg.loss.query_separation_margin)

    def _match_frames(self, frames: list[Keyframe], batches: list[RayBatch], rays: RayBatch,
                      rendered_masks: torch.Tensor, phase: TrainingPhase,
                      losses: dict[LossName, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hungarian matching per frame, instance and class losses; returns the [R] panoptic
        target (stuff class, 1 + S + matched token row, or IGNORE) and, when some mask covers
        more tokens than its matched one, the [R, N] 0/1 covered tokens of each ray's mask
        (else None)."""
        cfg = self.config
        num_stuff = self.classes.num_stuff
        semantic = rays.semantic_class
        target = torch.where((semantic >= 1) & (semantic <= num_stuff) & (rays.thing_mask < 0),
                             semantic, torch.full_like(semantic, IGNORE))
        num_tokens = self.field.tokens.num_tokens
        class_logits = self.field.token_class_logits() if num_tokens else None
        dice_terms, bce_terms, class_rows, class_targets, class_weights = [], [], [], [], []
        covered_by_ray: torch.Tensor | None = None
        surface_points = rays.surface_points()
        surface = surface_points.cpu().numpy()
        in_view = self._tokens_in_view(surface_points, rendered_masks).cpu()
        start = 0
        for batch, keyframe in zip(batches, frames):
            stop = start + batch.num_rays
            visible = np.flatnonzero((in_view[start:stop].sum(dim=0) >= MIN_RAYS_IN_VIEW)
                                     .numpy()) if num_tokens else None
            local_masks = batch.thing_mask
            present = torch.unique(local_masks[local_masks != NO_MASK])
            if len(present) == 0:
                start = stop
                continue
            gt = (local_masks[None, :] == present[:, None]).float()  # [L, X]
            mask_of_ray = local_masks.cpu().numpy()
            present_masks = present.cpu().numpy()
            centroids = np.stack([np.median(surface[start:stop][mask_of_ray == m], axis=0)
                                  for m in present_masks])
            if num_tokens == 0:
                none = np.zeros((len(present), 0))
                unmatched = MaskAssignment(np.full(len(present), UNMATCHED, np.int64),
                                           np.zeros(len(present), bool), none, none)
                self.manager.record(self.manager_state, self.field.tokens, unmatched, centroids,
                                    visible)
                start = stop
                continue
            pred = rendered_masks[start:stop].T  # [N, X]
            with torch.no_grad():
                dice = dice_cost(pred, gt, cfg.loss.dice_eps).cpu().numpy()
                bce = bce_cost(pred, gt).cpu().numpy()
                class_cost = None
                if cfg.loss.match_class_cost > 0:
                    probs = torch.softmax(class_logits, dim=-1).cpu()
                    mask_classes = torch.as_tensor(keyframe.thing_classes[present_masks])
                    cost = -probs[:, mask_classes].T.numpy()  # [L, N]
                    class_cost = cfg.loss.match_class_cost * (cost - cost.min())
            with torch.no_grad():
                token_class = class_logits[:, 1:].argmax(dim=1).cpu().numpy() + 1
            same_class = keyframe.thing_classes[present_masks][:, None] == token_class[None, :]
            assignment = assign_masks(dice, bce, cfg.token_manager.reject_dice_cost, class_cost,
                                      same_class if cfg.token_manager.split_same_class
                                      else None)
            if cfg.token_manager.union_containment > 0:
                with torch.no_grad():
                    inside = (gt @ pred.T).cpu().numpy()  # [L, N]
                    mass = pred.sum(dim=1).cpu().numpy()  # [N]
                # Only a token of the mask's class may stand for part of it.
                assignment.covered = covered_tokens(inside, mass, assignment, visible,
                                                    cfg.token_manager.union_containment,
                                                    cfg.token_manager.union_min_rays,
                                                    same_class)
            self.manager.record(self.manager_state, self.field.tokens, assignment, centroids,
                                visible)
            pairs = assignment.matched_pairs
            if pairs:
                mask_scores = None
                if cfg.loss.score_weighting:
                    scores = batch.score[None, :] * gt
                    mask_scores = scores.sum(dim=1) / gt.sum(dim=1).clamp_min(1.0)
                dice_loss, bce_loss = grouped_mask_losses(pred, gt, assignment.mask_groups,
                                                          cfg.loss.dice_eps, mask_scores)
                dice_terms.append(dice_loss)
                bce_terms.append(bce_loss)
                for mask, row in pairs:
                    class_rows.append(row)
                    class_targets.append(int(keyframe.thing_classes[present_masks[mask]]))
                    class_weights.append(1.0 if mask_scores is None
                                         else float(mask_scores[mask]))
                    target[start:stop][local_masks == present[mask]] = 1 + num_stuff + row
                for row, mask in assignment.covered:
                    if covered_by_ray is None:
                        covered_by_ray = torch.zeros(rays.num_rays, num_tokens,
                                                     device=self.device)
                    covered_by_ray[start:stop, row] = (local_masks == present[mask]).float()
            start = stop
        if bce_terms:
            if phase.dice:
                losses[LossName.INSTANCE_DICE] = torch.stack(dice_terms).mean()
            losses[LossName.INSTANCE_BCE] = torch.stack(bce_terms).mean()
            losses[LossName.TOKEN_CLASS] = token_class_loss(
                class_logits, self._on_device(class_rows), self._on_device(class_targets),
                self._on_device(class_weights))
        return target, covered_by_ray

    @torch.no_grad()
    def _tokens_in_view(self, surface_points: torch.Tensor,
                        rendered_masks: torch.Tensor) -> torch.Tensor:
        """[R, N] bool: the ray's surface point lies in the token's core (Gaussian > 0.5, or
        the mask > 0.5 when the Gaussian prior is off)."""
        if self.field.tokens.num_tokens == 0:
            return torch.zeros(surface_points.shape[0], 0, dtype=torch.bool, device=self.device)
        if self.config.tokens.gaussian_prior:
            return self.field.tokens.gaussian(surface_points) > 0.5
        return rendered_masks.detach() > 0.5

    def _maintain_tokens(self) -> TokenChange:
        masks = None
        tokens = self.field.tokens
        if tokens.num_tokens:
            points = self.iom_points()
            if len(points):
                with torch.no_grad():
                    masks = self.field.token_masks(self._on_device(points, torch.float32))
                # The manager's bookkeeping runs on the CPU (one decision per token pair).
                masks = (masks > self.config.token_manager.mask_threshold).cpu()
        growth = self.step_count < self.config.token_manager.grow_until * self.total_steps
        change = self.manager.maintain(self.manager_state, tokens, self.optimizer, masks,
                                       self.step_count, allow_growth=growth)
        if self._distill_token_ids is not None:
            # A merged token's prior vertices belong to the token it was one object with.
            for dropped, kept in change.merged.items():
                self._distill_token_ids[self._distill_token_ids == dropped] = kept
            if change.split and self.config.token_manager.split_releases_prior:
                # The masks show two objects where the prior has one instance: stop copying it.
                released = np.isin(self._distill_token_ids, list(change.split.values()))
                self._distill_token_ids = np.where(released, 0, self._distill_token_ids)
        return change

    def iom_points(self) -> np.ndarray:
        """[P, 3] surface points on which 3D token masks are compared (voxel-downsampled)."""
        cfg = self.config.token_manager
        points = voxel_downsample_mean(self.scene_points(), cfg.iom_voxel_size_m)
        if len(points) > cfg.max_iom_points:
            points = points[self.rng.choice(len(points), cfg.max_iom_points, replace=False)]
        return points

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: field, tokens, optimiser, schedule and manager state,
        random state. Plain CPU tensors and Python values (loadable with ``weights_only=True``
        on a machine with or without CUDA)."""
        with self.lock:
            state = {"step": self.step_count, "total_steps": self.total_steps,
                     "rng": self.rng.bit_generator.state, "generator": self.generator.get_state(),
                     "last_losses": dict(self.last_losses), "setup": self.field is not None}
            if self.field is not None:
                state.update({
                    "box_center_m": list(self.field.box.center_m),
                    "box_half_size_m": self.field.box.half_size_m,
                    "num_tokens": self.field.tokens.num_tokens,
                    "field": _cpu_copy(self.field.state_dict()),
                    "optimizer": _cpu_copy(self.optimizer.state_dict()),
                    "manager": self.manager_state.to_dict()})
            if self.prior_targets is not None:
                state["prior_targets"] = {
                    "points_m": torch.from_numpy(self.prior_targets.points_m),
                    "semantic_class": torch.from_numpy(self.prior_targets.semantic_class),
                    "instance_ids": torch.from_numpy(self.prior_targets.instance_ids),
                    "token_ids": torch.from_numpy(self._distill_token_ids),
                    "token_classes": torch.tensor(sorted(self._distill_token_classes.items()),
                                                  dtype=torch.long).view(-1, 2)}
            return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (same configuration and label registry; saved on any
        device and with either hash-grid implementation)."""
        with self.lock:
            self.step_count = int(state["step"])
            self.total_steps = int(state["total_steps"])
            self.rng.bit_generator.state = state["rng"]
            self.generator.set_state(state["generator"])
            self.last_losses = dict(state["last_losses"])
            if not state["setup"]:
                self.field = self.optimizer = self.manager_state = None
                return
            count = int(state["num_tokens"])
            key_dim = self.config.field.instance_grid.output_dim
            tokens = InstanceTokens.create(np.zeros((count, 3)), np.ones((count, 3)),
                                           np.arange(1, count + 1), key_dim, key_dim,
                                           torch.Generator())
            box = SceneBox(tuple(state["box_center_m"]), float(state["box_half_size_m"]))
            self._build(box, tokens)
            self.field.load_state_dict(state["field"])
            self.optimizer.load_state_dict(state["optimizer"])
            _match_state_shapes(self.optimizer)
            self.manager_state = TokenManagerState.from_dict(state["manager"])
            self.prior_targets = self._distill_token_ids = None
            if "prior_targets" in state:
                saved = state["prior_targets"]
                self.prior_targets = PriorTargets(saved["points_m"].numpy(),
                                                  saved["semantic_class"].numpy(),
                                                  saved["instance_ids"].numpy())
                self._distill_token_ids = saved["token_ids"].numpy()
                self._distill_token_classes = {int(t): int(c) for t, c in
                                               saved["token_classes"].tolist()}

    # ---- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, points_m: np.ndarray, with_sdf: bool = True) -> FieldPrediction:
        """The field at [P, 3] world points (chunked, under the lock)."""
        with self.lock:
            if self.field is None:
                raise InvalidInputError("trainer", "not set up", "no field yet", kind="field")
            points = self._on_device(np.asarray(points_m, np.float32).reshape(-1, 3))
            num_tokens = self.field.tokens.num_tokens
            sdf = [torch.zeros(0)]
            semantic = [torch.zeros(0, self.classes.num_semantic_classes)]
            masks = [torch.zeros(0, num_tokens)]
            for chunk in torch.split(points, PREDICT_CHUNK):
                if with_sdf:
                    sdf.append(self.field.sdf(chunk).cpu())
                semantic.append(torch.softmax(self.field.semantic_logits(chunk), dim=-1).cpu())
                masks.append(self.field.token_masks(chunk).cpu())
            class_probs = (torch.softmax(self.field.token_class_logits(), dim=-1).cpu()
                           if num_tokens else torch.zeros(0, self.classes.num_token_classes))
            return FieldPrediction(torch.cat(sdf), torch.cat(semantic), torch.cat(masks),
                                   class_probs, self.field.tokens.ids_list())


def _cpu_copy(value):
    """A state dict (nested dicts and lists) with every tensor on the CPU, in new containers:
    the live state is not touched (an optimiser's state dict shares its per-parameter dicts).
    Tensors already on the CPU are shared, not cloned."""
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        copy = type(value)((key, _cpu_copy(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):  # module versions, read by load_state_dict
            copy._metadata = value._metadata
        return copy
    if isinstance(value, list):
        return [_cpu_copy(item) for item in value]
    return value


def _match_state_shapes(optimizer: torch.optim.Optimizer) -> None:
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
