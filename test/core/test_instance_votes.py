"""The per-voxel instance slot (weighted majority) of ``core/tracking/instance_votes.py``."""
import numpy as np
import pytest

from panoptic_mapper.core.tracking.instance_votes import fuse_instance_votes


def _slots(n):
    return np.zeros(n, np.int32), np.zeros(n, np.float32)


def test_votes_of_one_frame_are_reduced_to_the_winner_margin():
    ids, weights = _slots(3)
    identity = np.arange(10, dtype=np.int32)
    touched = fuse_instance_votes(ids, weights, np.array([0, 0, 1, 2]), np.array([5, 6, 0, 7]),
                                  np.array([1.0, 0.4, 2.0, 0.0], np.float32), identity, 20.0)
    assert sorted(touched.tolist()) == [0, 1]
    assert ids.tolist() == [5, 0, 0]
    np.testing.assert_allclose(weights, [0.6, 2.0, 0.0], rtol=1e-6)


def test_disagreeing_vote_subtracts_then_flips_and_cap_applies():
    ids, weights = _slots(2)
    ids[:] = [5, 0]
    weights[:] = [0.6, 2.0]
    identity = np.arange(10, dtype=np.int32)
    fuse_instance_votes(ids, weights, np.array([0, 1]), np.array([6, 0]),
                        np.array([1.0, 30.0], np.float32), identity, 20.0)
    assert ids.tolist() == [6, 0]
    np.testing.assert_allclose(weights, [0.4, 20.0], rtol=1e-6)


def test_negative_ids_cast_no_vote_and_merged_ids_resolve():
    ids, weights = _slots(2)
    ids[:] = [6, 3]
    weights[:] = [0.4, 1.0]
    resolve = np.arange(10, dtype=np.int32)
    resolve[6] = 5  # instance 6 was merged into 5
    fuse_instance_votes(ids, weights, np.array([0, 1]), np.array([5, -1]),
                        np.array([0.1, 5.0], np.float32), resolve, 20.0)
    assert ids.tolist() == [5, 3]
    assert weights[0] == pytest.approx(0.5)
    assert weights[1] == pytest.approx(1.0)
