"""``core/field/prior_distill.py``: a newer prior mesh keeps the ties of prior instances to
tokens (merges and splits included) and ties the instances seeded since."""
import numpy as np

from panoptic_mapper.core.field.prior_distill import PriorDistillation, PriorTargets
from panoptic_mapper.core.field.token_manager import TokenChange


def targets(instance_ids) -> PriorTargets:
    ids = np.asarray(instance_ids, np.int64)
    return PriorTargets(np.zeros((len(ids), 3), np.float32), np.ones(len(ids), np.int64), ids)


def test_retargeting_keeps_ties_and_adds_the_new_ones():
    # prior instances 11, 12, 13 seeded tokens 1, 2, 3; 0 = no instance
    old = PriorDistillation.from_token_map(targets([11, 11, 12, 13, 0]),
                                           {11: 1, 12: 2, 13: 3}, {1: 4, 2: 5, 3: 6})
    assert old.token_ids.tolist() == [1, 1, 2, 3, 0]
    old.follow(TokenChange(step=5, merged={2: 1}, split={9: 3}), split_releases_prior=True)
    assert old.token_ids.tolist() == [1, 1, 1, 0, 0]  # 12 joined token 1, 13 was released
    assert old.token_of_prior() == {11: 1, 12: 1}
    # the newer mesh: more vertices, and instance 14 confirmed since (token 7 seeded for it)
    new = old.retargeted(targets([14, 11, 12, 12, 13, 15, 0]), {14: 7}, {7: 8})
    assert new.token_ids.tolist() == [7, 1, 1, 1, 0, 0, 0]
    assert new.token_classes == {1: 4, 2: 5, 3: 6, 7: 8}


def test_a_distillation_can_start_from_ties_alone():
    made = PriorDistillation.from_token_map(targets([5, 6, 5]), {5: 2}, {2: 1})
    assert made.token_ids.tolist() == [2, 0, 2] and made.token_classes == {2: 1}
    assert PriorDistillation.from_token_map(targets([]), {}, {}).token_ids.tolist() == []
