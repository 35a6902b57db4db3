"""The Bayes panoptic head sums to one; the inference rules read labels as the paper says."""
import pytest
import torch

from panoptic_mapper.core.field.panoptic_head import (NO_TOKEN, bayes_panoptic_probabilities,
                                                      decode_panoptic)

# 1 stuff class: semantic classes [unlabelled, stuff, thing A, thing B]
NUM_STUFF = 1


def test_bayes_head_hand_values():
    semantic = torch.tensor([[0.1, 0.3, 0.4, 0.2]])
    masks = torch.tensor([[0.9, 0.3]])
    out = bayes_panoptic_probabilities(semantic, masks, NUM_STUFF)[0]
    # [p_unlabelled, p_stuff, P_thing * m_i / sum m] with P_thing = 0.6
    torch.testing.assert_close(out, torch.tensor([0.1, 0.3, 0.6 * 0.75, 0.6 * 0.25]))


@pytest.mark.parametrize("num_tokens", [0, 1, 7])
def test_bayes_head_sums_to_one(num_tokens):
    gen = torch.Generator().manual_seed(num_tokens)
    semantic = torch.softmax(torch.randn(100, 6, generator=gen) * 3, dim=-1)
    masks = torch.rand(100, num_tokens, generator=gen) ** 4  # many near-zero masks
    out = bayes_panoptic_probabilities(semantic, masks, num_stuff=2)
    assert out.shape == (100, 3 + num_tokens)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(dim=-1), torch.ones(100))


def test_decode_stuff_and_thing_winners():
    semantic = torch.tensor([[0.05, 0.8, 0.1, 0.05],   # stuff wins
                             [0.05, 0.1, 0.45, 0.4]])  # thing mass 0.85 -> token
    masks = torch.tensor([[0.2, 0.1], [0.1, 0.8]])
    token_class = torch.tensor([[0.1, 0.8, 0.1],    # token 0 -> thing class 1 (semantic 2)
                                [0.5, 0.1, 0.4]])   # token 1 -> thing class 2 (no-object ignored)
    out = decode_panoptic(semantic, masks, token_class, NUM_STUFF, use_panoptic_head=True,
                          thing_label_from_token=True)
    assert out.semantic_class.tolist() == [1, 3]
    assert out.token_index.tolist() == [NO_TOKEN, 1]
    from_semantic = decode_panoptic(semantic, masks, token_class, NUM_STUFF, True, False)
    assert from_semantic.semantic_class.tolist() == [1, 2]


def test_decode_without_panoptic_head_and_ambiguity_band():
    semantic = torch.tensor([[0.05, 0.5, 0.4, 0.05], [0.1, 0.1, 0.2, 0.6]])
    masks = torch.tensor([[0.9, 0.1], [0.3, 0.4]])
    token_class = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = decode_panoptic(semantic, masks, token_class, NUM_STUFF, use_panoptic_head=False,
                          thing_label_from_token=False)
    assert out.semantic_class.tolist() == [1, 3]
    assert out.token_index.tolist() == [NO_TOKEN, 1]
    banded = decode_panoptic(semantic, masks, token_class, NUM_STUFF, False, False,
                             stuff_ambiguity=(0.2, 0.8))
    # stuff mass 0.55 (ambiguous) -> unlabelled; 0.2 is not strictly inside -> kept
    assert banded.semantic_class.tolist() == [0, 3]
    assert banded.token_index.tolist() == [NO_TOKEN, 1]
