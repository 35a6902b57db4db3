"""``core/tracking/pair_stats.py``: co-segmented / separate counts per instance pair."""
import numpy as np

from panoptic_mapper.core.tracking.pair_stats import PairStats


def test_counts_accumulate_in_either_order():
    stats = PairStats()
    assert stats.add_co_segmented(5, 2) == (2, 5)
    stats.add_co_segmented(2, 5)
    stats.add_separate(np.array([2, 7, 3]), np.array([5, 3, 9]))
    stats.add_separate(np.array([5, 9]), np.array([2, 3]))
    assert stats.counts(5, 2) == (2, 2)
    assert stats.counts(3, 7) == (0, 1)
    assert stats.counts(3, 9) == (0, 2)
    assert stats.counts(1, 2) == (0, 0)


def test_replace_id_moves_counts_onto_the_survivor_and_round_trips():
    stats = PairStats()
    stats.add_co_segmented(2, 4)
    stats.add_co_segmented(4, 6)
    stats.add_separate(np.array([4, 2, 1]), np.array([6, 6, 4]))
    stats.replace_id(4, 2)  # 4 merged into 2
    assert stats.counts(2, 6) == (1, 2)
    assert stats.counts(1, 2) == (0, 1)
    assert stats.counts(2, 4) == (0, 0) and stats.counts(4, 6) == (0, 0)
    again = PairStats()
    again.load_dict(stats.to_dict())
    assert again.to_dict() == stats.to_dict()
