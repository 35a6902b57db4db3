"""Training of the neural panoptic field, resumable in chunks of steps.

One step (``FieldTrainer.step``), each part in its own module:

1. geometry (``geometry_losses``): rays with depth from random keyframes rendered at band
   (+ free-space) samples or the paper's volume samples; depth L1, near-surface and free-space
   SDF losses, finite-difference eikonal;
2. prior distillation (``prior_distill``; with a prior map, until ``prior_distill_until``):
   semantic NLL, per-token Dice + BCE and token class CE at the prior's mesh vertices;
3. segmentation (``segmentation_losses``, ``frame_matching``; after the geometry warm-up): rays
   from a few keyframes; detached NeuS weights (or the observed surface point) composite
   semantic probabilities and token masks; per frame, Hungarian assignment of its thing masks to
   tokens, matched-pair Dice + BCE, token class CE; the Bayes panoptic head's rendered
   distribution against stuff classes and assigned tokens (unmatched masks ignored); all
   weighted by the segments' detection scores;
4. Adam step with the decayed learning rates (``optimizer``, ``schedule``); token maintenance
   when due (``token_maintenance``).

Every composite along rays goes through ``rendering.render_rays``. Checkpoints:
``checkpoint.py``.

Thread safety: every step and every read of the field (:meth:`FieldTrainer.predict`) holds
``FieldTrainer.lock``, so a ROS worker thread can train while service threads query. The trainer
never changes torch's process-wide thread count: the process owner (node, CLI, benchmark) sets
it once.

Device (``TrainerConfig.device``, resolved once in the constructor by ``device.py``): the field,
tokens and optimiser state live on :attr:`FieldTrainer.device`, and so does every per-step
tensor (rays, samples, targets, prior targets). The random generator stays on the CPU (its state
is portable and a seed draws the same samples on every device). What goes to numpy or scipy
(Hungarian costs, mask centroids, token maintenance) comes back to the CPU;
:meth:`FieldTrainer.predict` returns CPU tensors and :meth:`FieldTrainer.state_dict` holds CPU
tensors only, so a checkpoint loads on any device.

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
from panoptic_mapper.core.field.checkpoint import decode_state, encode_state
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import FieldTrainingConfig
from panoptic_mapper.core.field.device import resolve_training_device, seeded_init
from panoptic_mapper.core.field.gaussian_tokens import InstanceTokens
from panoptic_mapper.core.field.geometry_losses import add_geometry_losses
from panoptic_mapper.core.field.keyframes import Keyframe, KeyframeStore
from panoptic_mapper.core.field.losses import LossName
from panoptic_mapper.core.field.optimizer import build_optimizer, match_state_shapes
from panoptic_mapper.core.field.panoptic_field import PanopticField, SceneBox
from panoptic_mapper.core.field.prior_distill import PriorDistillation, PriorTargets
from panoptic_mapper.core.field.schedule import TrainingPhase, lr_factor, phase_at
from panoptic_mapper.core.field.segmentation_losses import add_segmentation_losses
from panoptic_mapper.core.field.step_context import StepContext
from panoptic_mapper.core.field.token_init import TokenSeeds, seeds_from_keyframes
from panoptic_mapper.core.field.token_maintenance import iom_points, maintain_tokens
from panoptic_mapper.core.field.token_manager import (TokenChange, TokenManager,
                                                      TokenManagerState)

__all__ = ["FieldPrediction", "FieldTrainer", "PriorTargets", "TrainingProgress"]

PIXELS_PER_KEYFRAME_FOR_POINTS = 2000
"""Valid pixels per keyframe back-projected when the trainer needs a scene point cloud."""
PREDICT_CHUNK = 65536
"""Points per forward pass in :meth:`FieldTrainer.predict`."""


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
        self.distillation: PriorDistillation | None = None
        """The prior's targets and their ties to tokens (None without a prior)."""
        self._base_lrs: list[float] = []
        self._points_cache: tuple[int, np.ndarray] | None = None

    # ---- setup ---------------------------------------------------------------------------
    @property
    def is_setup(self) -> bool:
        return self.field is not None

    @property
    def prior_targets(self) -> PriorTargets | None:
        """The prior map's labels distilled into the field (None without a prior)."""
        return self.distillation.targets if self.distillation is not None else None

    def setup(self, seeds: TokenSeeds | None = None,
              extra_points_m: np.ndarray | None = None,
              prior_targets: PriorTargets | None = None, box: SceneBox | None = None) -> None:
        """Fix the scene box and create the field, tokens and optimiser.

        Args:
            seeds: initial tokens; by default from back-projected mask pixels of the keyframes.
            extra_points_m: [M, 3] more points the box must cover (e.g. a prior map's mesh).
            prior_targets: a prior map's labels for the prior-distillation loss; its instance
                ids are tied to the tokens seeded from them (``seeds.prior_ids``).
            box: the scene box; by default the box around the keyframes' back-projected
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
            self.distillation = (None if prior_targets is None else
                                 PriorDistillation.from_seeds(prior_targets, seeds, self.classes))

    def _build(self, box: SceneBox, tokens: InstanceTokens) -> None:
        # Decoders and hash tables draw from torch's global generator: seed it, so that a run
        # repeats (tokens already draw from self.generator).
        with seeded_init(self.config.trainer.seed, self.device):
            self.field = PanopticField(self.config.field, self.config.tokens, self.classes, box,
                                       tokens, self.config.sampler.init_inv_s_per_m,
                                       self.device)
        self.optimizer, self._base_lrs = build_optimizer(self.field, self.config.optimizer)

    def update_prior_targets(self, targets: PriorTargets,
                             new_token_of_prior: dict[int, int],
                             new_token_classes: dict[int, int]) -> None:
        """Distil a newer prior mesh (the prior keeps integrating while the field trains): the
        ties of prior instances to tokens are kept (merges and splits included), and prior
        instances seeded since (``new_token_of_prior``: prior id -> token id, with their token
        classes) are tied to their tokens."""
        with self.lock:
            if self.distillation is None:
                self.distillation = PriorDistillation.from_token_map(
                    targets, new_token_of_prior, new_token_classes)
            else:
                self.distillation = self.distillation.retargeted(targets, new_token_of_prior,
                                                                 new_token_classes)

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
        value, or when ``should_stop()`` is true), with torch's thread count as the process
        set it."""
        if not self.is_setup:
            raise InvalidInputError("trainer", "not set up", "call setup() first", kind="field")
        changes: list[TokenChange] = []
        start = time.monotonic()
        done = 0
        for _ in range(num_steps):
            if deadline_s is not None and time.monotonic() >= deadline_s:
                break
            if should_stop is not None and should_stop():
                break
            change = self.step()
            if change is not None and change.changed:
                changes.append(change)
            done += 1
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
            ctx = StepContext(self.field, self.config, self.classes, self.rng, self.generator,
                              self.device)
            losses: dict[LossName, torch.Tensor] = {}
            add_geometry_losses(ctx, keyframes, losses)
            if phase.prior_distill and self.distillation is not None:
                losses[LossName.PRIOR_DISTILL] = self.distillation.loss(ctx)
            if phase.segmentation:
                add_segmentation_losses(ctx, self.manager, self.manager_state, keyframes,
                                        phase, losses)
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

    def _loss_weights(self) -> dict[LossName, float]:
        w = self.config.loss
        return {LossName.DEPTH: w.depth, LossName.SDF_NEAR: w.sdf_near,
                LossName.SDF_FREE: w.sdf_free, LossName.EIKONAL: w.eikonal,
                LossName.SEMANTIC: w.semantic, LossName.INSTANCE_DICE: w.instance,
                LossName.INSTANCE_BCE: w.instance, LossName.TOKEN_CLASS: w.token_class,
                LossName.PANOPTIC: w.panoptic, LossName.QUERY_SEPARATION: w.query_separation,
                LossName.PRIOR_DISTILL: w.prior_distill}

    def _maintain_tokens(self) -> TokenChange:
        """One token maintenance; the prior's vertex-token ties follow it."""
        points = self.iom_points() if self.field.tokens.num_tokens else None
        change = maintain_tokens(self.field, self.manager, self.manager_state, self.optimizer,
                                 points, self.step_count, self.total_steps)
        if self.distillation is not None:
            self.distillation.follow(change, self.config.token_manager.split_releases_prior)
        return change

    def iom_points(self) -> np.ndarray:
        """[P, 3] surface points on which 3D token masks are compared (voxel-downsampled)."""
        return iom_points(self.scene_points(), self.config.token_manager, self.rng)

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: field, tokens, optimiser, schedule and manager state,
        random state (``checkpoint.py``). Plain CPU tensors and Python values (loadable with
        ``weights_only=True`` on a machine with or without CUDA)."""
        with self.lock:
            return encode_state(self.step_count, self.total_steps, self.rng, self.generator,
                                self.last_losses, self.field, self.optimizer,
                                self.manager_state, self.distillation)

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (same configuration and label registry; saved on any
        device and with either hash-grid implementation)."""
        decoded = decode_state(state, self.config.field.instance_grid.output_dim)
        with self.lock:
            self.step_count, self.total_steps = decoded.step, decoded.total_steps
            self.rng.bit_generator.state = decoded.rng_state
            self.generator.set_state(decoded.generator_state)
            self.last_losses = decoded.last_losses
            self.distillation = decoded.distillation
            if decoded.box is None:
                self.field = self.optimizer = self.manager_state = None
                return
            self._build(decoded.box, decoded.tokens)
            self.field.load_state_dict(decoded.field_state)
            self.optimizer.load_state_dict(decoded.optimizer_state)
            match_state_shapes(self.optimizer)
            self.manager_state = decoded.manager_state

    # ---- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, points_m: np.ndarray, with_sdf: bool = True) -> FieldPrediction:
        """The field at [P, 3] world points (chunked, under the lock)."""
        with self.lock:
            if self.field is None:
                raise InvalidInputError("trainer", "not set up", "no field yet", kind="field")
            points = torch.as_tensor(np.asarray(points_m, np.float32).reshape(-1, 3),
                                     device=self.device)
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
