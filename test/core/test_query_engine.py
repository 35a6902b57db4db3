"""Query engine logic (scoring, attributes, thresholds, validation) with the registry matcher.

The registry matcher needs no model, so these tests are fast and exact; the sentence-embedding
matcher is tested in ``test_query_text_model.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.query import (QueryConfig, RegistryQueryEngine,
                                        create_query_engine)
from panoptic_mapper.core.query.text_matching import RegistryLabelMatcher
from panoptic_mapper.core.types import MapInstance, OrientedBox

RED, BLUE, WHITE, BROWN = (200, 30, 30), (40, 80, 200), (240, 240, 240), (120, 80, 40)


def instance(registry, id_, label, center, size, color=None, distribution=None):
    lab = registry.by_name(label)
    return MapInstance(id=id_, label=lab.name, label_id=lab.id, is_thing=lab.is_thing,
                       confidence=1.0, centroid_m=center,
                       bbox=OrientedBox(center, np.eye(3), size), num_observations=3,
                       label_distribution=distribution or {}, mean_color_rgb=color)


@pytest.fixture
def scene(label_registry):
    """A table with two mugs on it, a desk with a box on it, a chair and sofa, the floor."""
    r = label_registry
    return [
        instance(r, 1, "table", [0, 0, 0.375], [1.2, 0.8, 0.75], BROWN),
        instance(r, 2, "mug", [0.3, 0.1, 0.80], [0.08, 0.08, 0.10], RED),
        instance(r, 3, "mug", [-0.3, 0.0, 0.80], [0.08, 0.08, 0.10], WHITE),
        instance(r, 4, "desk", [3, 0, 0.375], [1.4, 0.7, 0.75], WHITE),
        instance(r, 5, "box", [3.2, 0, 0.90], [0.4, 0.3, 0.3], RED),
        instance(r, 6, "chair", [0.0, 0.8, 0.45], [0.5, 0.5, 0.9], BLUE),
        instance(r, 7, "chair", [0.0, -0.8, 0.45], [0.6, 0.6, 1.1], BLUE),
        instance(r, 8, "sofa", [6, 0, 0.4], [2.0, 0.9, 0.8], BLUE,
                 distribution={13: 0.7, 10: 0.3}),
        instance(r, 9, "floor", [3, 0, -0.01], [10, 5, 0.02], BROWN),
        instance(r, 10, "box", [6, 2, 0.2], [0.4, 0.4, 0.4]),  # colour unknown
    ]


@pytest.fixture
def engine(label_registry, scene):
    eng = RegistryQueryEngine(QueryConfig(use_text_embeddings=False), label_registry)
    eng.update_instances(scene)
    return eng


def ids(result):
    return [m.instance.id for m in result.matches]


def test_exact_synonym_plural_and_head_noun(engine):
    assert ids(engine.query_objects("mug")) == [2, 3]
    assert ids(engine.query_objects("coffee mug")) == [2, 3]  # registry phrase
    assert ids(engine.query_objects("cup")) == [2, 3]         # registry synonym
    assert ids(engine.query_objects("mugs")) == [2, 3]        # plural
    assert ids(engine.query_objects("ceramic mug")) == [2, 3]  # head noun
    assert ids(engine.query_objects("shelves")) == []          # shelf exists in no instance
    assert ids(engine.query_objects("floor")) == [9]


def test_absent_objects_return_nothing(engine):
    for text in ("bed", "airplane", "giraffe", "red giraffe"):
        result = engine.query_objects(text)
        assert result.matches == [], text


def test_label_distribution_weights_the_text_score(engine):
    # The sofa is 70% sofa / 30% chair: "couch" scores 0.7, "chair" 0.3 (below 0.5).
    couch = engine.query_objects("couch").matches
    assert [m.instance.id for m in couch] == [8]
    assert couch[0].score == pytest.approx(0.7) and couch[0].matched_label == "sofa"
    assert 8 not in ids(engine.query_objects("chair"))
    low = engine.query_objects("chair", min_score=0.2)
    assert ids(low) == [6, 7, 8]
    assert low.matches[-1].score == pytest.approx(0.3)
    assert low.min_score == 0.2


def test_colour_words(engine):
    assert ids(engine.query_objects("red mug")) == [2]
    assert ids(engine.query_objects("white mug")) == [3]
    assert ids(engine.query_objects("blue mug")) == []
    # Colour only: every red instance; the box with no known colour never confirms a colour.
    assert ids(engine.query_objects("something red")) == [2, 5]
    assert 10 not in ids(engine.query_objects("brown box", min_score=0.01))
    match = engine.query_objects("red box").matches[0]
    assert match.color_score == pytest.approx(1.0) and match.text_score == pytest.approx(1.0)


def test_size_words_compare_within_the_class(engine):
    assert ids(engine.query_objects("big chair")) == [7]
    assert ids(engine.query_objects("small chair")) == [6]
    # One table only: the size word cannot discriminate, it is ignored and said so.
    result = engine.query_objects("large table")
    assert ids(result) == [1]
    assert any("size word 'big' ignored" in note for note in result.notes)


def test_relations(engine):
    result = engine.query_objects("mug on the table")
    assert ids(result) == [2, 3]
    assert {m.anchor_id for m in result.matches} == {1}
    assert ids(engine.query_objects("box on the desk")) == [5]
    assert ids(engine.query_objects("mug on the desk")) == []
    assert ids(engine.query_objects("red thing on the table")) == [2]
    assert ids(engine.query_objects("chair next to the table")) == [6, 7]
    assert ids(engine.query_objects("table on the floor")) == [1]
    empty = engine.query_objects("mug on the bed")
    assert empty.matches == [] and any("bed" in note for note in empty.notes)


def test_viewpoint_words_are_reported(engine):
    result = engine.query_objects("the chair on the left")
    assert ids(result) == [6, 7]
    assert any("on the left" in note for note in result.notes)


def test_ranking_limits_and_scores(engine):
    result = engine.query_objects("chair", max_results=1)
    assert ids(result) == [6]  # equal scores: lower id first
    assert result.matches[0].instance.score == pytest.approx(1.0)
    assert result.instances[0].id == 6
    assert result.elapsed_ms > 0
    with pytest.raises(InvalidInputError, match="max_results"):
        engine.query_objects("chair", max_results=-1)
    with pytest.raises(InvalidInputError, match="min_score"):
        engine.query_objects("chair", min_score=0.0)
    with pytest.raises(InvalidInputError, match="query"):
        engine.query_objects("   ")


def test_stuff_can_be_excluded(label_registry, scene):
    eng = RegistryQueryEngine(QueryConfig(use_text_embeddings=False, include_stuff=False),
                              label_registry)
    eng.update_instances(scene)
    assert ids(eng.query_objects("floor")) == []


def test_update_instances_reports_changes_and_rejects_bad_input(engine, scene, label_registry):
    update = engine.update_instances(scene[:3] + [scene[4]])
    assert update.num_instances == 4
    assert update.removed_ids == (4, 6, 7, 8, 9, 10) and update.added_ids == ()
    bad_label = instance(label_registry, 11, "mug", [0, 0, 0], [1, 1, 1],
                         distribution={999: 1.0})
    with pytest.raises(InvalidInputError, match="label_distribution"):
        engine.update_instances(scene + [bad_label])
    duplicate = instance(label_registry, 1, "mug", [0, 0, 0], [1, 1, 1])
    with pytest.raises(InvalidInputError, match="duplicate"):
        engine.update_instances(scene + [duplicate])
    bad_color = instance(label_registry, 12, "mug", [0, 0, 0], [1, 1, 1], color=(300, 0, 0))
    with pytest.raises(InvalidInputError, match="mean_color_rgb"):
        engine.update_instances([bad_color])
    # Rejected updates leave the previous table in place.
    assert engine.num_instances == 4
    assert ids(engine.query_objects("mug")) == [2, 3]


def test_empty_map_answers_nothing(label_registry):
    eng = RegistryQueryEngine(registry=label_registry)
    assert eng.query_objects("mug").matches == []
    assert eng.query_objects("mug on the table").matches == []


def test_visual_scores_are_fused_with_the_text_score(label_registry, scene):
    class FakeVisual:
        """Knows only instance 10 (an uncoloured box), which looks like a parcel."""

        def relevancy(self, phrase, instance_ids):
            return np.where(np.asarray(instance_ids) == 10, 0.9 if phrase == "parcel" else 0.1,
                            np.nan)

    eng = RegistryQueryEngine(registry=label_registry, visual=FakeVisual())
    eng.update_instances(scene)
    # "parcel" is no registry phrase: only the visual path can answer it.
    result = eng.query_objects("parcel")
    assert ids(result) == [10] and result.matches[0].score == pytest.approx(0.9)
    # The fused score is the better of text and visual.
    assert ids(eng.query_objects("mug")) == [2, 3]
    box = eng.query_objects("box").matches
    assert [m.instance.id for m in box] == [5, 10] and box[1].score == pytest.approx(1.0)


def test_registry_matcher_singulars(label_registry):
    matcher = RegistryLabelMatcher(label_registry)
    for phrase, label in [("boxes", "box"), ("shelves", "shelf"), ("office chairs", "chair"),
                          ("trash cans", "bin"), ("wooden writing desk", "desk")]:
        match = matcher.match(phrase)
        assert match.probability[label_registry.by_name(label).id] == 1.0, phrase
        assert match.probability.sum() == 1.0
    assert matcher.match("glass").probability.sum() == 0.0


def test_create_query_engine_without_embeddings(label_registry):
    eng = create_query_engine({"use_text_embeddings": False, "min_score": 0.4}, label_registry)
    assert isinstance(eng, RegistryQueryEngine) and eng.config.min_score == 0.4
    with pytest.raises(ConfigError, match="query.min_score"):
        create_query_engine({"min_score": 2.0}, label_registry)
    with pytest.raises(ConfigError, match="query.text.no_such_key"):
        create_query_engine({"text": {"no_such_key": 1}}, label_registry)


def test_a_removed_setting_is_ignored_with_a_warning(label_registry, caplog):
    # Files written before text.encode_threads was removed (torch's threads are the process's)
    # still load.
    with caplog.at_level("WARNING"):
        eng = create_query_engine({"use_text_embeddings": False,
                                   "text": {"encode_threads": 1}}, label_registry)
    assert isinstance(eng, RegistryQueryEngine)
    assert "query.text.encode_threads" in caplog.text and "removed" in caplog.text
