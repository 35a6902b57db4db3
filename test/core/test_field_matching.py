"""Hungarian assignment of 2D masks to rendered token masks: costs, permutations, rejection,
split claims."""
import math

import numpy as np
import pytest
import torch

from panoptic_mapper.core.field.matching import UNMATCHED, assign_masks, bce_cost, dice_cost


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
