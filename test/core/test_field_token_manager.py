"""Token prune / split / spawn: stable ids, Adam state that follows its rows."""
import numpy as np
import torch

from panoptic_mapper.core.field.config import TokenManagerConfig
from panoptic_mapper.core.field.gaussian_tokens import TOKEN_PARAMETERS, InstanceTokens
from panoptic_mapper.core.field.matching import MaskAssignment
from panoptic_mapper.core.field.token_manager import TokenManager, TokenManagerState

MEANS = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.2, 0.0, 0.0], [2.0, 2.0, 0.0]])


def _tokens_and_optimizer():
    tokens = InstanceTokens.create(MEANS, np.full((4, 3), 0.5), np.array([10, 11, 12, 13]),
                                   8, 8, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam([{"params": [getattr(tokens, n)]} for n in TOKEN_PARAMETERS])
    # one step with row-specific gradients, so each row has its own Adam moments
    loss = sum((getattr(tokens, n) * torch.arange(1.0, 5.0).view(4, *[1] * (getattr(
        tokens, n).dim() - 1))).sum() for n in TOKEN_PARAMETERS)
    loss.backward()
    optimizer.step()
    return tokens, optimizer


def _assignment(mask_to_token, claims=()):
    n = len(mask_to_token)
    return MaskAssignment(np.array(mask_to_token), np.zeros(n, bool), np.zeros((n, 4)),
                          np.zeros((n, 4)), list(claims))


def _exp_avg(optimizer, param):
    return optimizer.state[param]["exp_avg"].clone()


def test_prune_unused_and_duplicate_keeps_ids_and_moments():
    tokens, optimizer = _tokens_and_optimizer()
    means_before = tokens.means.data.clone()
    moments_before = _exp_avg(optimizer, tokens.means)
    manager = TokenManager(TokenManagerConfig(split=False, spawn_unmatched=False))
    state = manager.initialize_state(tokens)
    assert state.next_id == 14
    # rows 0, 2, 3 are matched, row 1 (id 11) never although in view in 3 frames
    for _ in range(3):
        manager.record(state, tokens, _assignment([0, 2, 3]), np.full((3, 3), np.nan))
    # 3D masks: id 12's mask lies inside id 10's (IoM 1) and is smaller
    masks = torch.zeros(10, 4, dtype=torch.bool)
    masks[:6, 0] = True
    masks[2:5, 2] = True
    masks[7:9, 3] = True
    change = manager.maintain(state, tokens, optimizer, masks, step=99)
    assert change.pruned_unused == [11]
    assert change.pruned_duplicate == [12]
    assert tokens.ids_list() == [10, 13]
    torch.testing.assert_close(tokens.means.data, means_before[[0, 3]])
    torch.testing.assert_close(_exp_avg(optimizer, tokens.means), moments_before[[0, 3]])
    in_optimizer = {id(q) for g in optimizer.param_groups for q in g["params"]}
    assert all(id(p) in in_optimizer for p in tokens.parameters())
    assert state.assignments == {} and state.window_start_step == 100


def test_tokens_out_of_view_are_not_judged():
    tokens, optimizer = _tokens_and_optimizer()
    manager = TokenManager(TokenManagerConfig(min_visible_frames=2, split=False,
                                              spawn_unmatched=False))
    state = manager.initialize_state(tokens)
    for _ in range(2):  # rows 0 and 1 in view, only row 0 matched; rows 2, 3 out of view
        manager.record(state, tokens, _assignment([0]), np.full((1, 3), np.nan),
                       visible_rows=np.array([0, 1]))
    change = manager.maintain(state, tokens, optimizer, None, step=3)
    assert change.pruned_unused == [11]
    assert tokens.ids_list() == [10, 12, 13]


def test_a_token_covered_by_merged_masks_is_in_use():
    tokens, optimizer = _tokens_and_optimizer()
    manager = TokenManager(TokenManagerConfig(min_visible_frames=2, split=False,
                                              spawn_unmatched=False))
    state = manager.initialize_state(tokens)
    for _ in range(2):  # row 1 is never matched but lies inside mask 0 (merged with row 0)
        assignment = _assignment([0])
        assignment.covered = [(1, 0)]
        manager.record(state, tokens, assignment, np.full((1, 3), np.nan),
                       visible_rows=np.array([0, 1]))
    change = manager.maintain(state, tokens, optimizer, None, step=3)
    assert change.pruned_unused == []
    assert tokens.ids_list() == [10, 11, 12, 13]


def _frame_with_groups(groups):
    """An assignment whose mask k stands for the token rows ``groups[k]`` (first: matched)."""
    assignment = _assignment([rows[0] for rows in groups])
    assignment.covered = [(row, mask) for mask, rows in enumerate(groups) for row in rows[1:]]
    return assignment


def test_tokens_one_mask_keeps_standing_for_are_merged():
    tokens, optimizer = _tokens_and_optimizer()
    manager = TokenManager(TokenManagerConfig(split=False, spawn_unmatched=False,
                                              merge_ratio=0.8, merge_min_frames=3))
    state = manager.initialize_state(tokens)
    nowhere = np.full((2, 3), np.nan)
    # rows 0 and 2 (ids 10, 12): one mask covers both in 4 of 5 frames (a fragment, or a
    # split undone); rows 1 and 3 (ids 11, 13): together in 3 of 5 (touching objects that the
    # segmenter merges now and then)
    for frame in range(5):
        together_a = frame < 4
        together_b = frame < 3
        groups = [[0, 2] if together_a else [0], [1, 3] if together_b else [1]]
        if not together_a:
            groups.append([2])
        if not together_b:
            groups.append([3])
        manager.record(state, tokens, _frame_with_groups(groups), np.full((4, 3), np.nan))
    # id 10 matched once more, alone in view
    manager.record(state, tokens, _assignment([0]), nowhere[:1], visible_rows=np.array([0]))
    assert state.cosegmented["10,12"] == [4, 1] and state.cosegmented["11,13"] == [3, 2]
    change = manager.maintain(state, tokens, optimizer, None, step=9)
    assert change.merged == {12: 10}  # the one matched less often goes
    assert tokens.ids_list() == [10, 11, 13]
    assert state.cosegmented == {}
    restored = TokenManagerState.from_dict(state.to_dict())
    assert restored == state


def test_a_token_in_view_outside_the_mask_is_apart():
    # the segmenter misses object B (id 11) in view while A's mask (id 10) is matched: that is
    # evidence that they are two, not one
    tokens, optimizer = _tokens_and_optimizer()
    manager = TokenManager(TokenManagerConfig(split=False, spawn_unmatched=False))
    state = manager.initialize_state(tokens)
    manager.record(state, tokens, _assignment([0]), np.full((1, 3), np.nan),
                   visible_rows=np.array([0, 1]))
    assert state.cosegmented == {"10,11": [0, 1]}


def test_occasional_claims_do_not_split():
    tokens, optimizer = _tokens_and_optimizer()
    manager = TokenManager(TokenManagerConfig(split_min_signals=2, split_min_claim_ratio=0.25,
                                              spawn_unmatched=False, min_assignments=0))
    state = manager.initialize_state(tokens)
    centroids = np.array([MEANS[3], [3.0, 2.0, 0.5]])
    for _ in range(2):  # claimed twice ...
        manager.record(state, tokens, _assignment([3, 1], claims=[(3, 1)]), centroids)
    for _ in range(8):  # ... but matched 10 times: 2 / 12 < 0.25
        manager.record(state, tokens, _assignment([3]), centroids[:1])
    assert manager.maintain(state, tokens, optimizer, None, step=10).split == {}
    state = manager.initialize_state(tokens)
    for _ in range(2):
        manager.record(state, tokens, _assignment([3, 1], claims=[(3, 1)]), centroids)
    change = manager.maintain(state, tokens, optimizer, None, step=20, allow_growth=False)
    assert change.split == {}  # persistent, but growth is over


def test_split_clones_with_new_id_and_moves_the_clone():
    tokens, optimizer = _tokens_and_optimizer()
    means_before = tokens.means.data.clone()
    features_before = tokens.features.data.clone()
    feature_moments = _exp_avg(optimizer, tokens.features)
    manager = TokenManager(TokenManagerConfig(split_min_signals=2, spawn_unmatched=False,
                                              min_assignments=0))
    state = manager.initialize_state(tokens)
    centroid = np.array([[3.0, 2.0, 0.5]])
    for _ in range(2):  # token row 3 (id 13) is claimed twice by a mask matched elsewhere
        manager.record(state, tokens, _assignment([3, 1], claims=[(3, 1)]),
                       np.concatenate([MEANS[3:4], centroid]))
    change = manager.maintain(state, tokens, optimizer, None, step=10)
    assert change.split == {14: 13}
    assert tokens.ids_list() == [10, 11, 12, 13, 14]
    assert state.next_id == 15
    torch.testing.assert_close(tokens.means.data[4], torch.tensor([3.0, 2.0, 0.5]))
    torch.testing.assert_close(tokens.means.data[3], means_before[3])
    torch.testing.assert_close(tokens.features.data[4], features_before[3])  # exact copy
    torch.testing.assert_close(_exp_avg(optimizer, tokens.features)[4], feature_moments[3])
    assert _exp_avg(optimizer, tokens.means)[4].abs().sum() == 0  # moved: fresh moments


def test_spawn_where_unmatched_masks_gather():
    tokens, optimizer = _tokens_and_optimizer()
    manager = TokenManager(TokenManagerConfig(min_assignments=0, spawn_min_count=3,
                                              spawn_unmatched=True,
                                              spawn_voxel_size_m=0.3))
    state = manager.initialize_state(tokens)
    spot = np.array([[8.05, 8.05, 1.05]])
    for i in range(3):
        manager.record(state, tokens, _assignment([-1]), spot + 0.01 * i)
    manager.record(state, tokens, _assignment([-1]), np.array([[0.05, 0.05, 0.05]]))  # near id 10
    change = manager.maintain(state, tokens, optimizer, None, step=5)
    assert change.spawned == [14]
    assert tokens.ids_list() == [10, 11, 12, 13, 14]
    torch.testing.assert_close(tokens.means.data[4], torch.tensor([8.06, 8.06, 1.06]))
    assert optimizer.state[tokens.means]["exp_avg"].shape == (5, 3)


def test_disabled_manager_never_runs_and_state_round_trips():
    tokens, _ = _tokens_and_optimizer()
    off = TokenManager(TokenManagerConfig(enabled=False))
    on = TokenManager(TokenManagerConfig(start_fraction=0.1, every_fraction=0.25))
    state = on.initialize_state(tokens)
    assert not any(off.is_due(state, s, 100) for s in range(200))
    assert [s for s in range(100) if on.is_due(state, s, 100)][0] == 24
    state.assignments = {10: 3}
    state.split_claims = {13: [[1.0, 2.0, 3.0]]}
    assert TokenManagerState.from_dict(state.to_dict()) == state
