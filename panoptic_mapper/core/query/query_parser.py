"""Split a free-text object query into what to match and the attributes the map can check.

``"small red mug on the table"`` becomes: noun phrase ``"mug"`` (matched against labels), colour
``red``, size ``small``, relation ``on`` with the anchor query ``"table"``. Only attributes the
map can verify are extracted: colour (fused surface colour), size relative to the same class, and
the gravity-based relations on / under / in / near. Viewpoint words (left, right, front, behind)
need a viewer and are cut out and reported as unsupported. Everything else stays in the noun
phrase for the text matcher (``"something to sit on"`` is one noun phrase: "on" with nothing
after it is no relation).

Owns: :class:`ParsedQuery`, :class:`SizeWord`, :class:`Relation`, :func:`parse_query`.
Does not own: scoring (``engine``), colour names (``colors``), geometry (``spatial``).
"""
from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from typing import Callable

from panoptic_mapper.core.errors import InvalidInputError


class SizeWord(enum.Enum):
    """Size attribute, relative to other instances of the same class."""

    BIG = "big"
    SMALL = "small"
    BIGGEST = "biggest"
    SMALLEST = "smallest"


class Relation(enum.Enum):
    """Spatial relation between the target and an anchor object."""

    ON = "on"
    """Resting on top of the anchor."""
    UNDER = "under"
    """Below the anchor's top, within its footprint."""
    IN = "in"
    """Centre inside the anchor's box."""
    NEAR = "near"
    """Within a distance of the anchor's box."""


SIZE_WORDS: dict[str, SizeWord] = {
    "big": SizeWord.BIG, "large": SizeWord.BIG, "huge": SizeWord.BIG, "bigger": SizeWord.BIG,
    "larger": SizeWord.BIG, "small": SizeWord.SMALL, "little": SizeWord.SMALL,
    "tiny": SizeWord.SMALL, "smaller": SizeWord.SMALL, "biggest": SizeWord.BIGGEST,
    "largest": SizeWord.BIGGEST, "smallest": SizeWord.SMALLEST, "tiniest": SizeWord.SMALLEST,
}
RELATION_PHRASES: tuple[tuple[tuple[str, ...], Relation], ...] = (
    (("on", "top", "of"), Relation.ON), (("on",), Relation.ON), (("atop",), Relation.ON),
    (("underneath",), Relation.UNDER), (("under",), Relation.UNDER),
    (("below",), Relation.UNDER), (("beneath",), Relation.UNDER),
    (("inside", "of"), Relation.IN), (("inside",), Relation.IN), (("in",), Relation.IN),
    (("within",), Relation.IN),
    (("next", "to"), Relation.NEAR), (("close", "to"), Relation.NEAR),
    (("beside",), Relation.NEAR), (("near",), Relation.NEAR),
)
"""Word sequences that introduce a relation, longest first where they share a start."""
VIEWPOINT_WORDS = frozenset({"left", "right", "leftmost", "rightmost", "front", "behind",
                             "back"})
"""Relations that depend on where the viewer stands: not answerable from the map alone."""
FILLER_WORDS = frozenset({"a", "an", "the", "some", "any", "my", "that", "this", "those",
                          "these", "of", "to", "at", "side", "on", "in"})
"""Words that may link a viewpoint word to the rest ("to the left of")."""
ARTICLES = frozenset({"a", "an", "the", "some", "any", "my", "that", "this", "those", "these"})
GENERIC_NOUNS = frozenset({"thing", "things", "object", "objects", "something", "item", "items",
                           "one", "stuff"})
"""A noun phrase made only of these asks for no particular class."""
SHADE_WORDS = frozenset({"light", "dark", "pale", "bright", "deep"})
"""Dropped when directly before a colour word ("dark red" is red)."""

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


@dataclass(frozen=True)
class ParsedQuery:
    """A query split into a noun phrase and checkable attributes."""

    text: str
    """The query as given."""
    noun_phrase: str
    """Words to match against labels; empty = any class."""
    colors: tuple[str, ...] = ()
    """Canonical colour names asked for."""
    size: SizeWord | None = None
    relation: Relation | None = None
    anchor: "ParsedQuery | None" = None
    """The reference object of ``relation`` (itself without a relation)."""
    unsupported_terms: tuple[str, ...] = field(default=())
    """Parts of the query that were ignored because the map cannot answer them."""


def parse_query(text: str, color_word: Callable[[str], str | None]) -> ParsedQuery:
    """Parse a query.

    Args:
        text: the free-text query.
        color_word: maps a word to its canonical colour name, or None if it is no colour word.

    Raises:
        InvalidInputError: the query holds no words.
    """
    words = _WORD.findall(text.lower())
    if not words:
        raise InvalidInputError("query", text, "query has no words", kind="query")
    words, unsupported = _cut_viewpoint(words)
    relation, target_words, anchor_words = _split_relation(words)
    target = _parse_simple(text, target_words, color_word)
    if relation is None:
        return dataclasses.replace(target, unsupported_terms=unsupported)
    anchor = _parse_simple(" ".join(anchor_words), anchor_words, color_word)
    return dataclasses.replace(target, relation=relation, anchor=anchor,
                               unsupported_terms=unsupported)


def _cut_viewpoint(words: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """Drop a viewpoint phrase ("on the left of the table") and everything after it."""
    for i, word in enumerate(words):
        if word in VIEWPOINT_WORDS:
            start = i
            while start > 0 and words[start - 1] in FILLER_WORDS:
                start -= 1
            if start == 0:
                # Nothing before it: "left chair" -> keep the noun after it.
                return [w for w in words if w not in VIEWPOINT_WORDS], (word,)
            return words[:start], (" ".join(words[start:]),)
    return words, ()


def _split_relation(words: list[str]) -> tuple[Relation | None, list[str], list[str]]:
    """First relation phrase with words on both sides: (relation, target words, anchor words)."""
    for i in range(1, len(words)):
        for phrase, relation in RELATION_PHRASES:
            end = i + len(phrase)
            if tuple(words[i:end]) == phrase and end < len(words):
                anchor = [w for w in words[end:] if w not in ARTICLES]
                if anchor:
                    return relation, words[:i], words[end:]
    return None, words, []


def _parse_simple(text: str, words: list[str],
                  color_word: Callable[[str], str | None]) -> ParsedQuery:
    """Colours, size and noun phrase of a query without relation."""
    colors: list[str] = []
    size: SizeWord | None = None
    rest: list[str] = []
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word in SHADE_WORDS and color_word(nxt) is not None:
            continue
        color = color_word(word)
        if color is not None:
            if color not in colors:
                colors.append(color)
            continue
        if word in SIZE_WORDS and size is None:
            size = SIZE_WORDS[word]
            continue
        if word in ARTICLES:
            continue
        rest.append(word)
    if all(w in GENERIC_NOUNS for w in rest):
        rest = []
    return ParsedQuery(text=text, noun_phrase=" ".join(rest), colors=tuple(colors), size=size)
