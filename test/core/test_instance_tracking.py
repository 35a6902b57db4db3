"""Frame-to-map association of ``core/tracking/tracker.py`` on hand-built sample sets.

Samples stand for pixels: ``seg`` says which thing segment (row) covers each sample, ``mapped``
which map instance its voxel currently holds (-1 = none yet). The map side is simulated by
feeding the ids the tracker assigned back in as ``mapped``.
"""
import numpy as np
import pytest

from panoptic_mapper.core.labels.voting import LabelChannels
from panoptic_mapper.core.tracking.instances import InstanceStatus, InstanceTable
from panoptic_mapper.core.tracking.tracker import (NO_VOTE, UNMAPPED, InstanceTracker,
                                                   ThingSegment, TrackingConfig)

N = 60  # samples per object


@pytest.fixture
def tracker(label_registry):
    channels = LabelChannels(label_registry)
    return InstanceTracker(TrackingConfig(), label_registry, channels)


def _channel(label_registry, name):
    return int(LabelChannels(label_registry).channel_of[label_registry.by_name(name).id])


def _points(n_objects):
    """Object k fills the cube [0.5 k, 0.5 (k + 1)]^3: neighbours touch."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.uniform(0.5 * k, 0.5 * (k + 1), (N, 3)) for k in range(n_objects)])


def _frame(tracker, index, segments, seg_rows, mapped, n_objects):
    return tracker.associate(index, segments, np.asarray(seg_rows), np.asarray(mapped),
                             _points(n_objects))


def test_ids_stay_stable_under_permuted_frame_ids(tracker, label_registry):
    chair, box = _channel(label_registry, "chair"), _channel(label_registry, "box")
    rows = np.repeat([0, 1], N)
    first = _frame(tracker, 0, [ThingSegment(1, chair, 0.9), ThingSegment(2, box, 0.9)], rows,
                   np.full(2 * N, UNMAPPED), 2)
    assert first.num_new == 2
    chair_id, box_id = first.segment_to_instance[1], first.segment_to_instance[2]
    mapped = first.sample_instance.copy()
    rng = np.random.default_rng(3)
    for index in range(1, 6):
        perm = rng.permutation([1, 2]) if index % 2 else np.array([2, 1])
        segs = [ThingSegment(int(perm[0]) * 10 + index, chair, 0.8),
                ThingSegment(int(perm[1]) * 10 + index, box, 0.8)]
        # The same objects, listed in another order with other per-frame ids.
        result = _frame(tracker, index, segs[::-1], 1 - rows, mapped, 2)
        assert result.num_new == 0 and result.num_matched == 2
        assert result.segment_to_instance[segs[0].segment_id] == chair_id
        assert result.segment_to_instance[segs[1].segment_id] == box_id
        np.testing.assert_array_equal(result.sample_instance, mapped)
    assert tracker.table.get(chair_id).status == InstanceStatus.CONFIRMED
    assert tracker.table.get(chair_id).num_observations == 6


def test_new_object_gets_a_new_id_and_incompatible_class_is_not_matched(tracker,
                                                                        label_registry):
    chair, mug = _channel(label_registry, "chair"), _channel(label_registry, "mug")
    first = _frame(tracker, 0, [ThingSegment(1, chair, 0.9)], np.repeat([0, -1], N),
                   np.full(2 * N, UNMAPPED), 2)
    chair_id = first.segment_to_instance[1]
    mapped = np.concatenate([np.full(N, chair_id), np.full(N, UNMAPPED)])
    second = _frame(tracker, 1, [ThingSegment(4, chair, 0.9), ThingSegment(5, chair, 0.9)],
                    np.repeat([0, 1], N), mapped, 2)
    assert second.segment_to_instance[4] == chair_id
    assert second.segment_to_instance[5] not in (chair_id, 0)
    # A mug segment over the chair's voxels is not the chair (no class compatibility).
    third = _frame(tracker, 2, [ThingSegment(7, mug, 0.9)], np.repeat([0, -1], N), mapped, 2)
    assert third.num_matched == 0
    assert third.segment_to_instance[7] not in (chair_id, second.segment_to_instance[5])


def test_confusable_class_still_matches(tracker, label_registry):
    chair, sofa = _channel(label_registry, "chair"), _channel(label_registry, "sofa")
    first = _frame(tracker, 0, [ThingSegment(1, chair, 0.9)], np.zeros(N, int),
                   np.full(N, UNMAPPED), 1)
    chair_id = first.segment_to_instance[1]
    second = _frame(tracker, 1, [ThingSegment(3, sofa, 0.9)], np.zeros(N, int),
                    np.full(N, chair_id), 1)
    assert second.segment_to_instance[3] == chair_id  # chair is confusable_with sofa


def test_duplicates_merge_after_repeated_co_segmentation(tracker, label_registry):
    box = _channel(label_registry, "box")
    seg = [ThingSegment(1, box, 0.9)]
    only_first = np.r_[np.zeros(N, int), np.full(N, -1)]
    only_second = only_first[::-1].copy()
    # One object seen from two sides that share no voxels: two instances, each confirmed.
    first = _frame(tracker, 0, seg, only_first, np.full(2 * N, UNMAPPED), 2)
    a = first.segment_to_instance[1]
    second = _frame(tracker, 1, seg, only_second, np.r_[np.full(N, a), np.full(N, UNMAPPED)], 2)
    b = second.segment_to_instance[1]
    assert a != b
    mapped = np.repeat([a, b], N)
    for index in range(2, 6):
        _frame(tracker, index, seg, only_first if index % 2 else only_second, mapped, 2)
    assert tracker.table.get(b).status == InstanceStatus.CONFIRMED
    for index in range(6, 9):  # then one segment keeps covering both: they are one object
        result = _frame(tracker, index, [ThingSegment(9, box, 0.9)], np.zeros(2 * N, int),
                        mapped, 2)
        assert result.segment_to_instance[9] in (a, b)
    resolve = tracker.table.resolve_table()
    assert resolve[a] == resolve[b] == min(a, b)
    assert tracker.table.get(max(a, b)).status == InstanceStatus.MERGED


def test_unprotected_candidate_fragment_is_not_split_off(tracker, label_registry):
    box = _channel(label_registry, "box")
    rows = np.repeat([0, 1], N)
    first = _frame(tracker, 0, [ThingSegment(1, box, 0.9), ThingSegment(2, box, 0.9)], rows,
                   np.full(2 * N, UNMAPPED), 2)
    mapped = first.sample_instance.copy()
    whole = _frame(tracker, 1, [ThingSegment(5, box, 0.9)], np.zeros(2 * N, int), mapped, 2)
    assert whole.num_splits == 0  # candidates are not protected
    assert np.all(whole.sample_instance == whole.segment_to_instance[5])


def test_under_segmentation_keeps_separately_seen_objects_apart(tracker, label_registry):
    box = _channel(label_registry, "box")
    rows = np.repeat([0, 1], N)
    segs = [ThingSegment(1, box, 0.9), ThingSegment(2, box, 0.9)]
    first = _frame(tracker, 0, segs, rows, np.full(2 * N, UNMAPPED), 2)
    a, b = first.segment_to_instance[1], first.segment_to_instance[2]
    mapped = first.sample_instance.copy()
    for index in range(1, 4):  # seen as two objects three times
        _frame(tracker, index, segs, rows, mapped, 2)
    for index in range(4, 8):  # then a merged mask covers both, four times
        result = _frame(tracker, index, [ThingSegment(5, box, 0.9)], np.zeros(2 * N, int),
                        mapped, 2)
        assert result.num_splits == 1
        np.testing.assert_array_equal(result.sample_instance, mapped)  # the map's split stays
    resolve = tracker.table.resolve_table()
    assert resolve[a] == a and resolve[b] == b


def test_unconfirmed_candidate_is_retired_to_its_parent(tracker, label_registry):
    table = [_channel(label_registry, "table")]
    segs = [ThingSegment(1, table[0], 0.9)]
    first = _frame(tracker, 0, segs, np.zeros(N, int), np.full(N, UNMAPPED), 1)
    parent = first.segment_to_instance[1]
    mapped = np.full(N, parent)
    for index in range(1, 3):
        _frame(tracker, index, segs, np.zeros(N, int), mapped, 1)
    assert tracker.table.get(parent).status == InstanceStatus.CONFIRMED
    # An over-segmented frame: a second segment inside the table starts a candidate.
    split = _frame(tracker, 3, [ThingSegment(1, table[0], 0.9), ThingSegment(2, table[0], 0.9)],
                   np.repeat([0, 1], N // 2), mapped, 1)
    child = split.segment_to_instance[2]
    assert child != parent and tracker.table.get(child).parent_id == parent
    for index in range(4, 4 + TrackingConfig().retire_after_frames + 1):
        _frame(tracker, index, [], np.full(N, -1), mapped, 1)
    assert tracker.table.get(child).status == InstanceStatus.RETIRED
    assert tracker.table.resolve_table()[child] == parent


def test_small_segments_start_nothing_and_finalize_retires_candidates(tracker, label_registry):
    mug = _channel(label_registry, "mug")
    small = _frame(tracker, 0, [ThingSegment(1, mug, 0.9)], np.r_[np.zeros(5, int),
                                                                np.full(N - 5, -1)],
                   np.full(N, UNMAPPED), 1)
    assert small.num_new == 0 and np.all(small.sample_instance == NO_VOTE)
    once = _frame(tracker, 1, [ThingSegment(1, mug, 0.9)], np.zeros(N, int),
                  np.full(N, UNMAPPED), 1)
    candidate = once.segment_to_instance[1]
    tracker.finalize()
    assert tracker.table.get(candidate).status == InstanceStatus.RETIRED
    assert tracker.table.resolve_table()[candidate] == 0


def test_state_round_trip(tracker, label_registry):
    box = _channel(label_registry, "box")
    _frame(tracker, 0, [ThingSegment(1, box, 0.9)], np.zeros(N, int), np.full(N, UNMAPPED), 1)
    tracker.stuff_region(1, 0)
    data = tracker.to_dict()
    other = InstanceTracker(TrackingConfig(), label_registry, LabelChannels(label_registry))
    other.load_dict(data)
    assert other.to_dict() == data


def test_resolution_follows_chains_of_merges_and_retirements():
    table = InstanceTable(num_channels=3)
    a, b, c = (table.create(True, 0).id for _ in range(3))
    d = table.create(True, 1, parent_id=b).id
    table.merge(a, b)  # b -> a
    table.set_status(d, InstanceStatus.RETIRED)  # d -> its parent b -> a
    table.merge(a, c)  # c -> a
    e = table.create(True, 2).id
    table.set_status(e, InstanceStatus.RETIRED)  # no parent -> none
    resolve = table.resolve_table()
    assert resolve.tolist() == [0, a, a, a, a, 0]
    again = InstanceTable(num_channels=3)
    again.load_dict(table.to_dict())
    assert again.resolve_table().tolist() == resolve.tolist()
    assert [r.id for r in again.alive()] == [a]
