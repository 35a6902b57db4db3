"""Dynamic number of instance tokens (PR++ section 1.9): a policy dataclass plus explicit state.

The trainer calls :meth:`TokenManager.record` after every frame's Hungarian assignment and
:meth:`TokenManager.maintain` when :meth:`TokenManager.is_due`. Maintenance, in order:

1. prune "useless" tokens: in view in at least ``min_visible_frames`` sampled frames of the
   window but assigned fewer than ``min_assignments`` times;
2. prune duplicates: 3D masks ``m_i(p) > mask_threshold`` on surface points; if
   ``|M_i & M_j| / min(|M_i|, |M_j|) = max(IoM_ij, IoM_ji)`` exceeds ``iom_threshold`` the token
   with the smaller mask goes;
3. split: a token that masks of one image kept claiming (``split_min_signals`` times, and at
   least ``split_min_claim_ratio`` of its matches plus claims) is cloned, Adam moments
   included, and the clone moves to the median 3D centroid of the claiming masks;
4. spawn (not in the paper, for keyframes that keep arriving): unmatched masks whose centroids
   gather in one voxel away from every token get a new token there.

Between 2 and 3 (``merge``, not in the paper): two tokens that one mask kept standing for
together (matched and covered, see ``matching.covered_tokens``) in at least ``merge_ratio`` of
the window's frames that showed both with a mask standing for at least one of them (and at
least ``merge_min_frames`` times) are one object: the one matched less often goes. This undoes a split that an over-segmenting frame
caused, and joins a fragment to its object; two touching objects that the segmenter merges in
some frames only are shown apart in the others and stay two.

Split and spawn stop at ``grow_until`` of the budget (the caller says so with
``allow_growth``); pruning goes on.

Tokens are identified by stable integer ids throughout; row order is an implementation detail.

Owns: :class:`TokenManager`, :class:`TokenManagerState`, :class:`TokenChange`.
Does not own: the tokens' parameters (``gaussian_tokens.py``) or how masks are computed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from panoptic_mapper.core.field.config import TokenManagerConfig
from panoptic_mapper.core.field.gaussian_tokens import InstanceTokens
from panoptic_mapper.core.field.matching import UNMATCHED, MaskAssignment


@dataclass
class TokenManagerState:
    """Everything the policy remembers between calls (owned by the caller, serialisable)."""

    next_id: int
    """Id given to the next new token."""
    window_start_step: int = 0
    """Step at which the current counting window began."""
    assignments: dict[int, int] = field(default_factory=dict)
    """Token id -> accepted matches in the window."""
    visible: dict[int, int] = field(default_factory=dict)
    """Token id -> sampled frames of the window in which it was in view."""
    split_claims: dict[int, list[list[float]]] = field(default_factory=dict)
    """Token id -> 3D centroids of the masks that claimed it while matched elsewhere."""
    unmatched_centroids: list[list[float]] = field(default_factory=list)
    """3D centroids of masks that got no token (or a rejected one) in the window."""
    cosegmented: dict[str, list[int]] = field(default_factory=dict)
    """``"a,b"`` (token ids, a < b) -> [frames in which one mask stood for both, frames in
    which a mask stood for one of them and the other was in view but not in that mask]
    within the window."""
    maintenance_count: int = 0
    """Maintenances done so far."""

    def to_dict(self) -> dict:
        """Plain-Python form (for checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenManagerState":
        """Inverse of :meth:`to_dict`."""
        state = cls(**data)
        state.assignments = {int(k): int(v) for k, v in state.assignments.items()}
        state.visible = {int(k): int(v) for k, v in state.visible.items()}
        state.split_claims = {int(k): v for k, v in state.split_claims.items()}
        state.cosegmented = {str(k): [int(c) for c in v] for k, v in state.cosegmented.items()}
        return state


@dataclass
class TokenChange:
    """What one maintenance did (ids are stable token ids)."""

    step: int
    pruned_unused: list[int] = field(default_factory=list)
    pruned_duplicate: list[int] = field(default_factory=list)
    split: dict[int, int] = field(default_factory=dict)
    """New token id -> id of the token it was cloned from."""
    merged: dict[int, int] = field(default_factory=dict)
    """Removed token id -> id of the token it was one object with."""
    spawned: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.pruned_unused or self.pruned_duplicate or self.split or self.spawned
                    or self.merged)


@dataclass
class TokenManager:
    """The prune / split / spawn policy."""

    config: TokenManagerConfig

    def initialize_state(self, tokens: InstanceTokens) -> TokenManagerState:
        """Fresh state for a token set."""
        next_id = max(tokens.ids_list(), default=0) + 1
        return TokenManagerState(next_id=next_id)

    def record(self, state: TokenManagerState, tokens: InstanceTokens,
               assignment: MaskAssignment, mask_centroids_m: np.ndarray,
               visible_rows: np.ndarray | None = None) -> None:
        """Count one frame's matches, split claims, unmatched masks and tokens in view.

        Args:
            state: updated in place.
            tokens: the tokens the assignment's rows refer to.
            assignment: the frame's assignment.
            mask_centroids_m: [L, 3] 3D centroid of each mask (NaN when unknown).
            visible_rows: rows of the tokens in view in this frame (None: all of them).
        """
        ids = tokens.ids_list()
        rows = range(len(ids)) if visible_rows is None else visible_rows
        for row in rows:
            state.visible[ids[int(row)]] = state.visible.get(ids[int(row)], 0) + 1
        # A token covered by a merged mask is in use as much as a matched one.
        for row in [r for _, r in assignment.matched_pairs] + [r for r, _ in assignment.covered]:
            state.assignments[ids[row]] = state.assignments.get(ids[row], 0) + 1
        for row, mask in assignment.split_claims:
            centroid = mask_centroids_m[mask]
            if np.all(np.isfinite(centroid)):
                state.split_claims.setdefault(ids[row], []).append(centroid.tolist())
        for mask, row in enumerate(assignment.mask_to_token):
            centroid = mask_centroids_m[mask]
            if row == UNMATCHED and np.all(np.isfinite(centroid)):
                state.unmatched_centroids.append(centroid.tolist())
        # Pairs with at least one token that a mask stood for, the other one too or in view:
        # together when one mask stood for both, else apart (a token in view that no mask
        # stood for is apart from the one that a mask did).
        group_of = {ids[row]: group for group, (_, rows) in enumerate(assignment.mask_groups)
                    for row in rows}
        seen = sorted(set(group_of) | {ids[int(row)] for row in rows})
        for index, a in enumerate(seen):
            for b in seen[index + 1:]:
                if a not in group_of and b not in group_of:
                    continue
                together = a in group_of and group_of[a] == group_of.get(b)
                counts = state.cosegmented.setdefault(f"{a},{b}", [0, 0])
                counts[0 if together else 1] += 1

    def is_due(self, state: TokenManagerState, step: int, total_steps: int) -> bool:
        """Whether :meth:`maintain` should run at ``step`` (0-based, after the step)."""
        if not self.config.enabled:
            return False
        start = int(math.ceil(self.config.start_fraction * total_steps))
        period = max(1, int(round(self.config.every_fraction * total_steps)))
        return step + 1 >= start and step + 1 - state.window_start_step >= period

    def maintain(self, state: TokenManagerState, tokens: InstanceTokens,
                 optimizer: torch.optim.Optimizer | None, masks_on_points: torch.Tensor | None,
                 step: int, allow_growth: bool = True) -> TokenChange:
        """Prune, split and spawn; then start a new counting window.

        Args:
            state: updated in place.
            tokens: modified in place (rows, ids, and ``optimizer``'s state).
            optimizer: the optimizer holding the token parameters, or None.
            masks_on_points: [P, N] bool 3D masks of the current tokens on surface points
                (None skips the duplicate test).
            step: the current step, for the record.
            allow_growth: split and spawn (False: prune only).
        """
        change = TokenChange(step=step)
        ids = tokens.ids_list()
        keep = np.ones(len(ids), bool)
        for row, token_id in enumerate(ids):
            seen = state.visible.get(token_id, 0) >= self.config.min_visible_frames
            if seen and state.assignments.get(token_id, 0) < self.config.min_assignments:
                keep[row] = False
                change.pruned_unused.append(token_id)
        if masks_on_points is not None and len(ids):
            for row in self._duplicates(masks_on_points, keep):
                keep[row] = False
                change.pruned_duplicate.append(ids[row])
        if self.config.merge:
            self._merge_cosegmented(state, ids, keep, change)
        rows = [r for r in range(len(ids)) if keep[r]]
        new_ids = [ids[r] for r in rows]
        split_targets: list[tuple[int, np.ndarray]] = []
        if self.config.split and allow_growth:
            for row in list(rows):
                claims = state.split_claims.get(ids[row], [])
                matches = state.assignments.get(ids[row], 0)
                persistent = (len(claims) >= self.config.split_min_signals
                              and len(claims) >= self.config.split_min_claim_ratio
                              * (len(claims) + matches))
                if persistent and len(rows) < self.config.max_tokens:
                    rows.append(row)
                    new_ids.append(state.next_id)
                    change.split[state.next_id] = ids[row]
                    split_targets.append((len(rows) - 1, np.median(np.asarray(claims), axis=0)))
                    state.next_id += 1
        if rows != list(range(len(ids))):
            tokens.take_rows(torch.tensor(rows, dtype=torch.long),
                             torch.tensor(new_ids, dtype=torch.long), optimizer)
        if split_targets:
            target_rows = torch.tensor([r for r, _ in split_targets], dtype=torch.long)
            means = torch.tensor(np.stack([c for _, c in split_targets]), dtype=torch.float32)
            tokens.reset_rows(target_rows, means, tokens.scales()[target_rows].detach(),
                              optimizer)
        if self.config.spawn_unmatched and allow_growth:
            self._spawn(state, tokens, optimizer, change)
        state.window_start_step = step + 1
        state.assignments = {}
        state.visible = {}
        state.split_claims = {}
        state.unmatched_centroids = []
        state.cosegmented = {}
        state.maintenance_count += 1
        return change

    def _merge_cosegmented(self, state: TokenManagerState, ids: list[int], keep: np.ndarray,
                           change: TokenChange) -> None:
        """Drop (``keep[row] = False``) the less matched token of each pair that one mask kept
        standing for; records ``change.merged``."""
        row_of = {token_id: row for row, token_id in enumerate(ids)}
        survivor: dict[int, int] = {}
        for key, (together, apart) in sorted(state.cosegmented.items()):
            if (together < self.config.merge_min_frames
                    or together < self.config.merge_ratio * (together + apart)):
                continue
            a, b = (int(v) for v in key.split(","))
            while a in survivor:
                a = survivor[a]
            while b in survivor:
                b = survivor[b]
            if a == b or a not in row_of or b not in row_of:
                continue
            if not (keep[row_of[a]] and keep[row_of[b]]):
                continue
            kept, dropped = sorted((a, b), key=lambda t: (-state.assignments.get(t, 0), t))
            keep[row_of[dropped]] = False
            survivor[dropped] = kept
            change.merged[dropped] = kept

    def _duplicates(self, masks_on_points: torch.Tensor, keep: np.ndarray) -> list[int]:
        """Rows to drop as duplicates (smaller mask of a pair with high IoM), among ``keep``."""
        masks = masks_on_points.float()
        sizes = masks.sum(dim=0)  # [N]
        intersection = masks.T @ masks  # [N, N]
        order = torch.argsort(sizes, descending=True).tolist()
        kept: list[int] = []
        dropped: list[int] = []
        for row in order:
            if not keep[row] or float(sizes[row]) == 0.0:
                continue
            duplicate = any(
                float(intersection[row, other]) / float(torch.minimum(sizes[row], sizes[other]))
                > self.config.iom_threshold for other in kept)
            (dropped if duplicate else kept).append(row)
        return dropped

    def _spawn(self, state: TokenManagerState, tokens: InstanceTokens,
               optimizer: torch.optim.Optimizer | None, change: TokenChange) -> None:
        """New tokens where unmatched masks gather, away from existing token centres."""
        if not state.unmatched_centroids:
            return
        centroids = np.asarray(state.unmatched_centroids, np.float64)
        voxel = self.config.spawn_voxel_size_m
        keys, inverse, counts = np.unique(np.floor(centroids / voxel).astype(np.int64), axis=0,
                                          return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        means = tokens.means.detach().cpu().numpy().astype(np.float64)
        new_means = []
        for group in np.flatnonzero(counts >= self.config.spawn_min_count):
            centre = centroids[inverse == group].mean(axis=0)
            known = np.concatenate([means, np.asarray(new_means).reshape(-1, 3)])
            if len(known) and np.linalg.norm(known - centre, axis=1).min() < voxel:
                continue
            if tokens.num_tokens + len(new_means) >= self.config.max_tokens:
                break
            new_means.append(centre)
        if not new_means:
            return
        new_ids = list(range(state.next_id, state.next_id + len(new_means)))
        state.next_id += len(new_means)
        sigma = np.full((len(new_means), 3), self.config.spawn_sigma_m)
        tokens.append_rows(np.asarray(new_means), sigma, np.asarray(new_ids), optimizer)
        change.spawned.extend(new_ids)
