"""Published ids: tokens inherit the prior's ids by overlap, bindings never change."""
import numpy as np

from panoptic_mapper.core.field.instance_ids import (IdBindingState, bind_ids, passthrough_ids,
                                                     published_instance_ids)


def test_tokens_inherit_prior_ids_and_others_get_fresh_ones():
    # 10 vertices: token 1 covers prior 7, token 2 covers most of prior 8, token 3 is new
    tokens = np.array([1, 1, 1, 2, 2, 2, 3, 3, 0, 0])
    prior = np.array([7, 7, 7, 8, 8, 0, 0, 0, 50, 50])
    stuff_labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    state = IdBindingState()
    bind_ids(state, tokens, prior, {7, 8}, {1: 50}, np.array([1, 2]), min_iou=0.2)
    assert state.token_to_map[1] == 7 and state.token_to_map[2] == 8
    assert state.token_to_map[3] == 51  # fresh: above every id seen
    assert state.stuff_to_map == {1: 50, 2: 52}
    ids = published_instance_ids(state, tokens, stuff_labels)
    assert ids.tolist() == [7, 7, 7, 8, 8, 8, 51, 51, 50, 50]


def test_bindings_are_stable_and_ids_are_not_reused():
    state = IdBindingState()
    bind_ids(state, np.array([1, 1, 2, 2]), np.array([7, 7, 8, 8]), {7, 8}, {}, np.array([]),
             0.2)
    # later the tokens drift: token 2 now overlaps prior 7, token 4 appears on prior 8
    bind_ids(state, np.array([2, 2, 4, 4]), np.array([7, 7, 8, 8]), {7, 8}, {}, np.array([]),
             0.2)
    assert state.token_to_map == {1: 7, 2: 8, 4: 9}
    assert len(set(state.token_to_map.values())) == 3
    assert IdBindingState.from_dict(state.to_dict()) == state


def test_low_overlap_does_not_inherit():
    state = IdBindingState()
    tokens = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    prior = np.array([7, 7, 7, 7, 7, 7, 7, 7, 7, 7])  # IoU 0.1
    bind_ids(state, tokens, prior, {7}, {}, np.array([]), min_iou=0.2)
    assert state.token_to_map == {1: 8}


def test_passthrough_keeps_prior_ids_but_not_our_fresh_ones():
    state = IdBindingState(token_to_map={1: 7, 3: 9}, stuff_to_map={1: 60}, next_id=10,
                           fresh_ids=[9, 60])
    is_stuff = np.zeros(12, bool)
    is_stuff[1] = True
    prior_ids = np.array([7, 8, 9, 50, 0])
    prior_labels = np.array([10, 11, 10, 1, 0])
    out = passthrough_ids(state, prior_ids, prior_labels, is_stuff)
    # 7 and 8 pass; 9 collides with our fresh id 9 -> 0; the stuff label 1 -> our region 60
    assert out.tolist() == [7, 8, 0, 60, 0]
    assert IdBindingState.from_dict(state.to_dict()) == state
