"""Hungarian assignment of 2D masks to rendered token masks: costs, permutations, rejection,
split claims."""
import math

import numpy as np
import pytest
import torch

from panoptic_mapper.core.field.matching import (UNMATCHED, assign_masks, bce_cost,
                                                 covered_tokens, dice_cost)


def test_costs_hand_values():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    pred = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    # Dice: 1 - (2 * 1 + eps) / (2 + 2 + eps)
    assert dice_cost(pred, target, eps=1.0)[0, 0].item() == pytest.approx(1 - 3 / 5)
    assert dice_cost(pred, target, eps=0.0)[0, 0].item() == pytest.approx(0.5)
    assert bce_cost(pred, target)[0, 0].item() == pytest.approx(math.log(2.0), rel=1e-5)
    perfect = bce_cost(target.clone(), target)[0, 0].item()
    assert perfect == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("permutation", [[0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]])
def test_known_permutation_is_recovered(permutation):
    rng = np.random.default_rng(1)
    num_pixels = 200
    owner = rng.integers(0, 4, num_pixels)
    masks = torch.from_numpy(np.stack([owner == k for k in range(4)]).astype(np.float32))
    # token permutation[k] renders mask k (soft), one extra token renders noise
    pred = torch.full((5, num_pixels), 0.05)
    for k, token in enumerate(permutation):
        pred[token] = 0.05 + 0.9 * masks[k]
    pred[4] = torch.rand(num_pixels, generator=torch.Generator().manual_seed(0)) * 0.3
    result = assign_masks(dice_cost(pred, masks, 1.0).numpy(), bce_cost(pred, masks).numpy(),
                          reject_dice_cost=0.9)
    assert result.mask_to_token.tolist() == permutation
    assert not result.rejected.any()
    assert result.split_claims == []
    assert sorted(result.matched_pairs) == sorted(enumerate(permutation))


def test_poor_match_is_rejected_and_surplus_masks_stay_unmatched():
    masks = torch.zeros(3, 150)
    for k in range(3):
        masks[k, 50 * k:50 * (k + 1)] = 1.0
    pred = torch.full((2, 150), 0.01)
    pred[0, :50] = 0.99  # token 0 renders mask 0; token 1 renders nothing
    dice = dice_cost(pred, masks, 1.0).numpy()
    result = assign_masks(dice, bce_cost(pred, masks).numpy(), reject_dice_cost=0.9)
    assert result.mask_to_token[0] == 0
    # mask 1 or 2 gets token 1, but its Dice cost is ~0.96 > 0.9: rejected; the other mask finds
    # no token at all (L > N)
    assert dice[1, 1] > 0.9
    assert result.mask_to_token[1] == UNMATCHED and result.mask_to_token[2] == UNMATCHED
    assert result.rejected.sum() == 1
    assert result.matched_pairs == [(0, 0)]


def test_split_claim_when_two_masks_want_one_token():
    masks = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    # token 0 covers both masks (a merged token); token 1 covers a bit of mask 1
    pred = torch.tensor([[0.9, 0.9, 0.9, 0.9, 0.9, 0.05],
                         [0.05, 0.05, 0.05, 0.6, 0.05, 0.05]])
    dice = dice_cost(pred, masks, 1.0).numpy()
    result = assign_masks(dice, bce_cost(pred, masks).numpy(), reject_dice_cost=0.9)
    assert int(np.argmin(dice[0])) == 0 and int(np.argmin(dice[1])) == 0
    assert result.mask_to_token.tolist() == [0, 1]
    assert result.split_claims == [(0, 1)]  # token 0 is mask 1's best but belongs to mask 0


def test_class_cost_breaks_a_tie():
    masks = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    pred = torch.tensor([[0.7, 0.7, 0.1, 0.1], [0.7, 0.7, 0.1, 0.1]])
    dice, bce = dice_cost(pred, masks, 1.0).numpy(), bce_cost(pred, masks).numpy()
    class_cost = np.array([[0.5, 0.0]])  # token 1 predicts the mask's class
    assert assign_masks(dice, bce, 0.9, class_cost).mask_to_token.tolist() == [1]


def test_a_mask_of_another_class_raises_no_split_claim():
    # token 0 is a desk (8 pixels) matched to the desk mask; a mug mask of 2 pixels on it has
    # token 0 as its Dice-best token: a split signal for the desk, unless masks may claim only
    # tokens of their own class
    masks = torch.tensor([[1.0] * 8 + [0.0] * 2,
                          [0.0] * 6 + [1.0] * 2 + [0.0] * 2])
    pred = torch.tensor([[0.95] * 8 + [0.02] * 2,
                         [0.02] * 10])
    dice, bce = dice_cost(pred, masks, 0.0).numpy(), bce_cost(pred, masks).numpy()
    assert int(np.argmin(dice[1])) == 0 and dice[1, 0] < 0.9
    assert assign_masks(dice, bce, 0.99).split_claims == [(0, 1)]
    may_claim = np.array([[True, True], [False, True]])  # the mug mask, the desk token: no
    assert assign_masks(dice, bce, 0.99, may_claim=may_claim).split_claims == []


def _merged_frame():
    """Two boxes the segmenter merged into one mask (pixels 0-5), a third object (6-9)."""
    masks = torch.tensor([[1.0] * 6 + [0.0] * 4,
                          [0.0] * 6 + [1.0] * 4])
    pred = torch.tensor([[0.9] * 3 + [0.05] * 7,          # token 0: left box
                         [0.05] * 3 + [0.9] * 3 + [0.05] * 4,  # token 1: right box
                         [0.05] * 6 + [0.9] * 4,          # token 2: the third object
                         [0.3] * 10])                     # token 3: everywhere (not inside)
    return masks, pred


def test_covered_tokens_find_tokens_inside_a_merged_mask():
    masks, pred = _merged_frame()
    dice, bce = dice_cost(pred, masks, 1.0).numpy(), bce_cost(pred, masks).numpy()
    assignment = assign_masks(dice, bce, 0.9)
    matched = dict(assignment.matched_pairs)
    assert matched[1] == 2 and matched[0] in (0, 1)
    other = 1 - matched[0]
    inside, mass = (masks @ pred.T).numpy(), pred.sum(dim=1).numpy()
    covered = covered_tokens(inside, mass, assignment, np.arange(4), 0.8, 1.0)
    # the other box's token lies inside the merged mask; the diffuse token 3 does not (60 %)
    assert covered == [(other, 0)]
    assignment.covered = covered
    assert dict(assignment.mask_groups) == {0: (matched[0], other), 1: (2,)}
    # candidates limit the search; the mass inside must reach min_inside_mass (2.7 here)
    assert covered_tokens(inside, mass, assignment, np.array([2, 3]), 0.8, 1.0) == []
    assert covered_tokens(inside, mass, assignment, np.arange(4), 0.8, 3.0) == []
    assert covered_tokens(inside, mass, assignment, np.arange(4), 0.5, 1.0) == [(other, 0),
                                                                                  (3, 0)]
    # a token of another class does not stand for part of the mask
    compatible = np.ones((2, 4), bool)
    compatible[0, other] = False
    assert covered_tokens(inside, mass, assignment, np.arange(4), 0.8, 1.0, compatible) == []
