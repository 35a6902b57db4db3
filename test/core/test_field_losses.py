"""Loss terms and the schedule against hand-computed values."""
import math

import pytest
import torch

from panoptic_mapper.core.field.config import ScheduleConfig
from panoptic_mapper.core.field.losses import (IGNORE, eikonal, grouped_mask_losses,
                                               matched_mask_losses,
                                               probability_nll, query_separation, sdf_losses,
                                               token_class_loss)
from panoptic_mapper.core.field.schedule import lr_factor, phase_at


def test_sdf_losses_split_near_free_and_behind():
    # observed range 2 m; samples at 1.0 (free), 1.95 (near), 2.5 (behind: no loss)
    ranges = torch.tensor([[1.0, 1.95, 2.5]])
    sdf = torch.tensor([[0.5, 0.1, -0.2]])
    near, free = sdf_losses(sdf, ranges, torch.tensor([2.0]), truncation_m=0.15, beta=1.0)
    assert near.item() == pytest.approx(abs(0.1 - 0.05))
    # free: b = 1.0, s = 0.5: max(0, exp(-0.5) - 1, 0.5 - 1.0) = 0
    assert free.item() == pytest.approx(0.0)
    _, free_neg = sdf_losses(torch.tensor([[-0.3, 0.0, 0.0]]), ranges, torch.tensor([2.0]),
                             0.15, 1.0)
    assert free_neg.item() == pytest.approx(math.exp(0.3) - 1.0)


def test_eikonal_and_weighted_nll():
    assert eikonal(torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]])).item() == pytest.approx(8.0)
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    target = torch.tensor([0, IGNORE, 1])
    plain = probability_nll(probs, target, IGNORE)
    assert plain.item() == pytest.approx((-math.log(0.5) - math.log(0.8)) / 2, rel=1e-5)
    weighted = probability_nll(probs, target, IGNORE, torch.tensor([1.0, 5.0, 3.0]))
    assert weighted.item() == pytest.approx((-math.log(0.5) - 3 * math.log(0.8)) / 4, rel=1e-5)


def test_matched_mask_losses_and_class_loss_weights():
    pred = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.9, 0.1, 0.1, 0.1]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    dice, bce = matched_mask_losses(pred, target, [(0, 0)], dice_eps=1.0)
    assert dice.item() == pytest.approx(1 - 3 / 5)
    assert bce.item() == pytest.approx(math.log(2.0), rel=1e-5)
    dice_w, _ = matched_mask_losses(pred, target, [(0, 0), (1, 1)], 1.0,
                                    mask_weights=torch.tensor([1.0, 0.0]))
    assert dice_w.item() == pytest.approx(dice.item())  # the second pair weighs nothing
    logits = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    loss = token_class_loss(logits, torch.tensor([0, 1]), torch.tensor([1, 2]),
                            torch.tensor([1.0, 3.0]))
    ce0 = -math.log(math.exp(2) / (2 + math.exp(2)))
    assert loss.item() == pytest.approx((ce0 + 3 * math.log(3)) / 4, rel=1e-5)


def test_query_separation_hinge():
    queries = torch.tensor([[0.0, 0.0], [3.0, 4.0], [30.0, 0.0]])
    # pairs (0,1): 5 -> hinge 5; (0,2), (1,2): >= 10 -> 0; mean over 6 ordered pairs
    assert query_separation(queries, margin=10.0).item() == pytest.approx(10.0 / 6)


def test_schedule_phases_and_lr_decay():
    config = ScheduleConfig(segmentation_start=0.1, panoptic_start=0.3, drop_dice_start=0.5,
                            prior_distill_until=0.2, epochs=10, lr_decay_per_epoch=0.5)
    names = [phase_at(step, 100, config).name for step in (0, 9, 10, 29, 30, 99)]
    assert names == ["geometry", "geometry", "segmentation", "segmentation", "panoptic",
                     "panoptic"]
    assert phase_at(49, 100, config).dice and not phase_at(50, 100, config).dice
    assert phase_at(19, 100, config).prior_distill and not phase_at(20, 100, config).prior_distill
    no_head = phase_at(90, 100, config.replace(panoptic_head=False))
    assert not no_head.panoptic and no_head.semantic
    assert not phase_at(90, 100, config.replace(semantic_with_panoptic=False)).semantic
    assert lr_factor(0, 100, config) == 1.0
    assert lr_factor(10, 100, config) == pytest.approx(0.5)
    assert lr_factor(500, 100, config) == pytest.approx(0.5 ** 10)


def test_grouped_mask_losses_supervise_the_union_of_a_merged_mask():
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    halves = torch.tensor([[0.99, 0.99, 0.01, 0.01, 0.01, 0.01],
                           [0.01, 0.01, 0.99, 0.99, 0.01, 0.01]])
    # one token per mask: token 0 alone is half wrong
    single_dice, single_bce = matched_mask_losses(halves, target, [(0, 0)], 1.0)
    same_dice, same_bce = grouped_mask_losses(halves, target, [(0, (0,))], 1.0)
    assert same_dice.item() == single_dice.item() and same_bce.item() == single_bce.item()
    assert single_dice.item() > 0.25
    # the union 1 - (1 - m0)(1 - m1) of both tokens fits the merged mask
    dice, bce = grouped_mask_losses(halves, target, [(0, (0, 1))], 1.0)
    union = 1.0 - (1.0 - halves[0]) * (1.0 - halves[1])
    expected = 1 - (2 * union[:4].sum() + 1) / (union.sum() + 4 + 1)
    assert dice.item() == pytest.approx(expected.item(), rel=1e-5)
    assert dice.item() < 0.02 and bce.item() < 0.05
    # gradients reach both tokens
    pred = halves.clone().requires_grad_(True)
    sum(grouped_mask_losses(pred, target, [(0, (0, 1))], 1.0)).backward()
    assert pred.grad[0].abs().sum() > 0 and pred.grad[1].abs().sum() > 0


def test_nll_with_more_right_columns():
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = torch.tensor([0, IGNORE])
    also = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # the target's own column counts once
    loss = probability_nll(probs, target, IGNORE, also_target=also)
    assert loss.item() == pytest.approx(-math.log(0.7), rel=1e-5)
    assert probability_nll(probs, target, IGNORE).item() == pytest.approx(-math.log(0.2),
                                                                           rel=1e-5)
