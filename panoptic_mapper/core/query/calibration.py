"""Calibrated probability that a query phrase names a label, from text-similarity features.

Raw cosine similarities of a sentence-embedding model are not probabilities and are not
comparable across labels ("giraffe" is 0.34 from "plant", "something to drink from" 0.47 from
"mug"). Three features per (query, label) pair, fed to a logistic model, give a probability that
one threshold can cut:

1. ``s``: the best cosine between the query and the label's texts (phrases, descriptions);
2. ``s - g``: the margin over the best similarity of a generic negative ("object", "things", ...)
   to the same label (LERF-style relevancy: a query must beat "object" to count);
3. ``s - s_best``: the gap to the best label for this query (0 for the best label), so that
   "coffee cup" does not also name "coffee table".

The weights are fitted (:func:`fit_logistic`) on a labelled query set with synonyms, descriptions
and generic negatives (``benchmarks/query_calibration.py``, which prints the values that are the
defaults of :class:`MatchCalibration`).

Owns: :class:`MatchCalibration`, :func:`match_features`, :func:`fit_logistic`.
Does not own: embeddings (``text_matching``) or the calibration data (the benchmark script).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require

NUM_FEATURES = 3


@dataclass
class MatchCalibration(ConfigBase):
    """Logistic-model weights of the query->label match probability (fitted, see module doc)."""

    weight_similarity: float = 10.3866
    """Weight of the best query-to-label cosine similarity."""
    weight_generic_margin: float = 10.3615
    """Weight of the margin over the generic negatives' similarity to the label."""
    weight_best_margin: float = 16.3117
    """Weight of the (non-positive) gap to the query's best label."""
    bias: float = -7.6155
    """Intercept."""

    def validate(self) -> None:
        super().validate()
        for name in ("weight_similarity", "weight_generic_margin", "weight_best_margin", "bias"):
            value = getattr(self, name)
            require(np.isfinite(value), name, value, "must be finite")

    @property
    def weights(self) -> np.ndarray:
        """[NUM_FEATURES + 1] weights, bias last."""
        return np.array([self.weight_similarity, self.weight_generic_margin,
                         self.weight_best_margin, self.bias])

    @classmethod
    def from_weights(cls, weights: np.ndarray) -> "MatchCalibration":
        w = [float(round(v, 4)) for v in np.asarray(weights, float).reshape(NUM_FEATURES + 1)]
        return cls(weight_similarity=w[0], weight_generic_margin=w[1], weight_best_margin=w[2],
                   bias=w[3])

    def probability(self, features: np.ndarray) -> np.ndarray:
        """[...] match probability of [..., NUM_FEATURES] features."""
        return predict_logistic(self.weights, features)


def match_features(label_similarity: np.ndarray, generic_similarity: np.ndarray) -> np.ndarray:
    """[..., L, 3] features from query-to-label similarities.

    Args:
        label_similarity: [..., L] best cosine between the query and each label's texts.
        generic_similarity: [L] best cosine between any generic negative and each label's texts.
    """
    s = np.asarray(label_similarity, float)
    best = s.max(axis=-1, keepdims=True)
    return np.stack([s, s - np.asarray(generic_similarity, float), s - best], axis=-1)


def predict_logistic(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``sigmoid(features @ w[:-1] + w[-1])``."""
    z = np.asarray(features, float) @ weights[:-1] + weights[-1]
    return 1.0 / (1.0 + np.exp(-z))


def fit_logistic(features: np.ndarray, targets: np.ndarray, l2: float = 1e-2,
                 iterations: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method.

    Args:
        features: [M, F] samples.
        targets: [M] 0/1 labels.
        l2: ridge penalty on all weights (bias included; keeps separable data finite).
        iterations: Newton steps (the problem is small and convex; 50 is plenty).

    Returns:
        [F + 1] weights, bias last.
    """
    x = np.asarray(features, float)
    y = np.asarray(targets, float)
    a = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    w = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        hessian = a.T @ (a * (p * (1 - p))[:, None]) + l2 * np.eye(len(w))
        gradient = a.T @ (p - y) + l2 * w
        w -= np.linalg.solve(hessian, gradient)
    return w
