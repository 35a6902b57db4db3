"""Voting math of ``core/labels/voting.py`` against hand-computed values."""
import math

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.labels.voting import (LabelChannels, PixelVotes, VotingConfig,
                                                boundary_distance_px, fuse_label_votes,
                                                labels_from_evidence, vote_weights)


def test_channels_follow_the_registry(label_registry):
    channels = LabelChannels(label_registry)
    assert channels.count == len(label_registry) + 1
    assert channels.label_ids[0] == 0
    chair = label_registry.by_name("chair").id
    assert channels.label_ids[channels.channel_of[chair]] == chair
    assert channels.is_thing[channels.channel_of[chair]]
    assert not channels.is_thing[channels.channel_of[label_registry.by_name("wall").id]]


def test_vote_weight_hand_value():
    cfg = VotingConfig()  # decay 0.2/m, min cos 0.25, boundary 8 px ramp from 0.2, score^1
    w = vote_weights(np.array([1.0]), np.array([0.5]), np.array([4.0]), np.array([0.8]), cfg)
    expected = math.exp(-0.2) * 0.5 * (0.2 + 0.8 * 0.5) * 0.8
    assert w[0] == pytest.approx(expected, rel=1e-6)
    # Grazing angle is floored, far from the boundary is full weight, score exponent 0 ignores
    # the score.
    cfg0 = VotingConfig(score_exponent=0.0)
    w = vote_weights(np.array([0.0]), np.array([0.01]), np.array([50.0]), np.array([0.3]), cfg0)
    assert w[0] == pytest.approx(0.25)


def test_fuse_votes_adds_probabilities_and_caps_the_count():
    evidence = np.zeros((3, 3), np.float32)
    mass = np.zeros(3, np.float32)
    votes = PixelVotes(channel=np.array([1, 2, 0]), p_label=np.array([0.8, 0.5, 1.0], np.float32),
                       weight=np.array([1.0, 2.0, 0.5], np.float32))
    touched = fuse_label_votes(evidence, mass, np.array([0, 0, 1]), votes, count_cap=2.0)
    assert sorted(touched.tolist()) == [0, 1]
    # voxel 0: ch1 += 0.8, ch0 += 0.2; ch2 += 1.0, ch0 += 1.0 -> [1.2, 0.8, 1.0], total 3 -> x 2/3
    np.testing.assert_allclose(evidence[0], [0.8, 0.8 * 2 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(evidence[1], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(mass, [2.0, 0.5, 0.0], rtol=1e-6)
    assert not evidence[2].any()


def test_capped_map_can_still_change():
    evidence = np.zeros((1, 3), np.float32)
    mass = np.zeros(1, np.float32)
    one = np.zeros(1, np.int64)
    full = np.array([1.0], np.float32)
    for _ in range(50):
        fuse_label_votes(evidence, mass, one, PixelVotes(np.array([1]), full, full), 10.0)
    for _ in range(15):
        fuse_label_votes(evidence, mass, one, PixelVotes(np.array([2]), full, full), 10.0)
    # Each vote adds 1 to a capped mass of 10, then rescales by 10/11: after 15 votes the old
    # label keeps (10/11)^15 of the evidence.
    assert evidence[0, 2] / evidence[0].sum() == pytest.approx(1 - (10 / 11) ** 15, rel=1e-4)
    channels_like = type("C", (), {"count": 3, "label_ids": np.array([0, 7, 9], np.int32)})
    labels = labels_from_evidence(evidence, channels_like, 0.3)
    assert labels.label_ids[0] == 9


def test_labels_from_evidence_threshold_and_void():
    channels_like = type("C", (), {"count": 3, "label_ids": np.array([0, 7, 9], np.int32)})
    evidence = np.array([[0.8, 0.5333, 0.6667], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    labels = labels_from_evidence(evidence, channels_like, 0.3)
    assert labels.label_ids.tolist() == [9, 0, 0]
    assert labels.confidence[0] == pytest.approx(0.6667 / 2.0, rel=1e-3)
    assert labels_from_evidence(evidence, channels_like, 0.4).label_ids.tolist() == [0, 0, 0]


def test_boundary_distance_on_strided_grid():
    ids = np.array([[1, 1, 1, 2, 2]])
    dist = boundary_distance_px(ids, stride_px=4, cap_px=100.0)
    np.testing.assert_allclose(dist[0], [10.0, 6.0, 2.0, 2.0, 6.0])
    assert np.all(boundary_distance_px(np.ones((3, 3), int), 4, 7.0) == 7.0)


def test_voting_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="count_cap"):
        VotingConfig(count_cap=0.0)
    with pytest.raises(ConfigError, match="voting.min_label_fraction"):
        VotingConfig.from_dict({"min_label_fraction": 2.0}, "voting")
