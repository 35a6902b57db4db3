"""Parsing free-text object queries into a noun phrase and checkable attributes."""
from __future__ import annotations

import pytest

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.query.colors import ColorNamingModel
from panoptic_mapper.core.query.query_parser import Relation, SizeWord, parse_query

COLOR = ColorNamingModel().canonical


def parse(text):
    return parse_query(text, COLOR)


def test_plain_and_descriptive_phrases_stay_whole():
    assert parse("Mug").noun_phrase == "mug"
    q = parse("something to sit on")
    assert q.noun_phrase == "something to sit on"
    assert q.relation is None and q.colors == () and q.size is None
    assert parse("a cup of tea").noun_phrase == "cup of tea"


def test_colour_and_size_attributes():
    q = parse("the small dark red mug")
    assert q.noun_phrase == "mug" and q.colors == ("red",) and q.size is SizeWord.SMALL
    q = parse("largest grey box")
    assert q.colors == ("gray",) and q.size is SizeWord.BIGGEST and q.noun_phrase == "box"
    # "light" is a noun unless a colour follows it.
    assert parse("light").noun_phrase == "light"
    assert parse("light blue lamp").colors == ("blue",)


def test_generic_nouns_ask_for_any_class():
    q = parse("something red")
    assert q.noun_phrase == "" and q.colors == ("red",)
    assert parse("the red one").noun_phrase == ""


def test_relations_need_words_on_both_sides():
    q = parse("mug on the table")
    assert (q.noun_phrase, q.relation, q.anchor.noun_phrase) == ("mug", Relation.ON, "table")
    q = parse("red box on top of the white shelf")
    assert q.colors == ("red",) and q.relation is Relation.ON
    assert q.anchor.noun_phrase == "shelf" and q.anchor.colors == ("white",)
    assert parse("chair next to the sofa").relation is Relation.NEAR
    assert parse("box under the desk").relation is Relation.UNDER
    assert parse("plant inside the cabinet").relation is Relation.IN
    assert parse("stuff to put on").relation is None


def test_viewpoint_words_are_cut_and_reported():
    q = parse("the chair on the left")
    assert q.noun_phrase == "chair" and q.unsupported_terms == ("on the left",)
    q = parse("lamp to the right of the sofa")
    assert q.noun_phrase == "lamp" and q.relation is None
    assert q.unsupported_terms == ("to the right of the sofa",)
    q = parse("left chair")
    assert q.noun_phrase == "chair" and q.unsupported_terms == ("left",)


def test_empty_query_is_rejected():
    with pytest.raises(InvalidInputError, match="query"):
        parse("  ?! ")
