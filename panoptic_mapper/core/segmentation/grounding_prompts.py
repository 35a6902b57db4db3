"""Grounding DINO text prompts built from label-registry phrases, and phrase scores per box.

Grounding DINO reads one ``". "``-separated caption ("chair. office chair. table.") of at most
``max_text_len`` tokens (256 for the published checkpoints, ``[CLS]`` and ``[SEP]`` included) and
scores every box against every token. This module splits the registry phrases into captions that
fit, records which tokens belong to which phrase (from the tokenizer's character offsets, so it
holds for any WordPiece split), and turns token probabilities into one score per phrase.

Owns: :class:`PromptPhrase`, :class:`PromptChunk`, :func:`build_prompt_chunks`,
:func:`phrase_scores`.
Does not own: running the detector or thresholds (``grounded_sam``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from panoptic_mapper.core.errors import ConfigError

PHRASE_SEPARATOR = ". "
"""Between phrases of a caption; Grounding DINO treats '.' as a sub-sentence boundary."""
SPECIAL_TOKENS_PER_CAPTION = 2
"""``[CLS]`` and ``[SEP]``."""


@dataclass(frozen=True)
class PromptPhrase:
    """One phrase of a caption and the tokens it occupies."""

    phrase: str
    """Normalised prompt phrase, e.g. ``"office chair"``."""
    label_id: int
    """Registry label the phrase maps to."""
    token_start: int
    """Index of its first token in the caption's ``input_ids``."""
    token_end: int
    """One past its last token."""


@dataclass(frozen=True)
class PromptChunk:
    """One caption sent to the detector, with its phrases in order."""

    text: str
    """The caption, e.g. ``"chair. office chair. table."``."""
    phrases: tuple[PromptPhrase, ...]
    num_tokens: int
    """Tokens of the caption including ``[CLS]`` and ``[SEP]``."""


Tokenizer = Callable[..., Any]
"""A Hugging Face (fast) tokenizer: ``tok(text, return_offsets_mapping=True)``."""


def build_prompt_chunks(phrases: Sequence[tuple[str, int]], tokenizer: Tokenizer,
                        max_text_tokens: int) -> list[PromptChunk]:
    """Pack ``(phrase, label_id)`` pairs, in order, into captions of at most ``max_text_tokens``.

    Args:
        phrases: prompt phrases and their label ids; duplicates are kept once.
        tokenizer: the detector's tokenizer (must return character offsets).
        max_text_tokens: token budget per caption, special tokens included.

    Returns:
        Captions in phrase order; each phrase appears in exactly one.

    Raises:
        ConfigError: no phrases, or one phrase alone does not fit the budget.
    """
    unique = list(dict.fromkeys((p.strip().lower().rstrip("."), int(i)) for p, i in phrases))
    unique = [(p, i) for p, i in unique if p]
    if not unique:
        raise ConfigError("grounded_sam.prompt_phrases", [], "no prompt phrases to detect")
    chunks: list[PromptChunk] = []
    current: list[tuple[str, int]] = []
    for phrase, label_id in unique:
        candidate = current + [(phrase, label_id)]
        if _tokenize_chunk(candidate, tokenizer).num_tokens <= max_text_tokens:
            current = candidate
            continue
        if current:
            chunks.append(_tokenize_chunk(current, tokenizer))
        current = [(phrase, label_id)]
        needed = _tokenize_chunk(current, tokenizer).num_tokens
        if needed > max_text_tokens:
            raise ConfigError("grounded_sam.prompt_phrases", phrase,
                              f"phrase needs {needed} tokens, more than the detector's limit "
                              f"of {max_text_tokens}")
    chunks.append(_tokenize_chunk(current, tokenizer))
    return chunks


def _tokenize_chunk(phrases: Sequence[tuple[str, int]], tokenizer: Tokenizer) -> PromptChunk:
    """Build the caption text and find each phrase's token span from character offsets."""
    text = PHRASE_SEPARATOR.join(p for p, _ in phrases) + "."
    char_spans = []
    start = 0
    for phrase, _ in phrases:
        char_spans.append((start, start + len(phrase)))
        start += len(phrase) + len(PHRASE_SEPARATOR)
    encoding = tokenizer(text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoding["offset_mapping"]]
    prompt_phrases = []
    for (phrase, label_id), (c0, c1) in zip(phrases, char_spans):
        tokens = [t for t, (o0, o1) in enumerate(offsets) if o1 > o0 and o0 >= c0 and o1 <= c1]
        if not tokens:
            raise ConfigError("grounded_sam.prompt_phrases", phrase,
                              "phrase produced no tokens with this tokenizer")
        prompt_phrases.append(PromptPhrase(phrase, label_id, tokens[0], tokens[-1] + 1))
    return PromptChunk(text=text, phrases=tuple(prompt_phrases),
                       num_tokens=len(encoding["input_ids"]))


def phrase_scores(token_probs: np.ndarray, chunk: PromptChunk) -> np.ndarray:
    """Score of each phrase for each box: the highest probability among the phrase's tokens.

    Args:
        token_probs: [Q, T] sigmoid of the detector's box-token logits for this caption.
        chunk: the caption the logits belong to.

    Returns:
        [Q, P] float32, P = number of phrases of ``chunk``.
    """
    token_probs = np.asarray(token_probs, np.float32)
    out = np.zeros((token_probs.shape[0], len(chunk.phrases)), np.float32)
    for k, phrase in enumerate(chunk.phrases):
        out[:, k] = token_probs[:, phrase.token_start:phrase.token_end].max(axis=1)
    return out
