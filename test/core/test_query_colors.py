"""Named-colour model of the query engine."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.query.colors import (COLOR_PROTOTYPES_SRGB, ColorConfig,
                                               ColorNamingModel, srgb_to_lab)


def test_srgb_to_lab_reference_values():
    # Reference values of the sRGB primaries and white in CIE L*a*b* (D65).
    lab = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]]))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(lab[1], [53.24, 80.09, 67.20], atol=0.02)
    np.testing.assert_allclose(lab[2], [32.30, 79.19, -107.86], atol=0.02)
    np.testing.assert_allclose(lab[3], [0.0, 0.0, 0.0], atol=1e-9)


def test_every_prototype_is_named_after_itself():
    model = ColorNamingModel()
    for name, prototypes in COLOR_PROTOTYPES_SRGB.items():
        assert model.name_of(np.array(prototypes)) == [name] * len(prototypes)


def test_probabilities_and_match_scores():
    model = ColorNamingModel()
    colors = np.array([[200, 30, 30], [40, 90, 200], [120, 80, 40]])
    p = model.probabilities(colors)
    assert p.shape == (3, len(model.names))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert model.name_of(colors) == ["red", "blue", "brown"]
    red = model.match_scores(colors, "red")
    assert red[0] == pytest.approx(1.0) and red[1] < 0.01
    # A word's score is its probability relative to the best name.
    k = model.names.index("brown")
    np.testing.assert_allclose(model.match_scores(colors, "brown"), p[:, k] / p.max(axis=1))


def test_synonyms_and_unknown_words():
    model = ColorNamingModel()
    assert model.canonical("Grey") == "gray"
    assert model.canonical("violet") == "purple"
    assert model.canonical("chair") is None
    np.testing.assert_allclose(model.match_scores(np.array([[128, 128, 128]]), "grey"),
                               model.match_scores(np.array([[128, 128, 128]]), "gray"))
    with pytest.raises(InvalidInputError, match="unknown colour word"):
        model.match_scores(np.array([[0, 0, 0]]), "chair")


def test_sigma_widens_the_names():
    ambiguous = np.array([[150, 60, 60]])  # between red and brown
    sharp = ColorNamingModel(ColorConfig(sigma_delta_e=5.0)).probabilities(ambiguous)
    soft = ColorNamingModel(ColorConfig(sigma_delta_e=40.0)).probabilities(ambiguous)
    assert sharp.max() > soft.max()
    with pytest.raises(ConfigError, match="sigma_delta_e"):
        ColorConfig(sigma_delta_e=0.0)
