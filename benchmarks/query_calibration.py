"""Fit the query->label match calibration and report how well it separates matches.

Data: every registry phrase (naming its own label), the synonym/description positives and the
generic negatives of ``query_sets.CALIBRATION_*``; one sample per (phrase, registry label) pair,
positive when the phrase names that label. Features and model: ``core/query/calibration.py``.
Prints 5-fold cross-validated (folds by phrase) pair precision/recall at probability 0.5, how
many negative phrases would return any label, and the fitted weights to copy into
``MatchCalibration``'s defaults. ``--explain PHRASE ...`` prints the most likely labels of
phrases under the default calibration instead.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/query_calibration.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from query_sets import CALIBRATION_NEGATIVES, CALIBRATION_POSITIVES  # noqa: E402

from panoptic_mapper.core.labels import LabelRegistry  # noqa: E402
from panoptic_mapper.core.query.calibration import (MatchCalibration, fit_logistic,  # noqa: E402
                                                    predict_logistic)
from panoptic_mapper.core.query.text_matching import (EmbeddingLabelMatcher,  # noqa: E402
                                                      TextMatchConfig)


def calibration_samples(matcher: EmbeddingLabelMatcher) -> tuple[list[str], np.ndarray,
                                                                 np.ndarray]:
    """Phrases, [Q, L, 3] features and [Q, L] 0/1 targets (registry label order)."""
    registry = matcher.registry
    truth: dict[str, set[str]] = {}
    for phrase, label in registry.all_phrases():
        truth.setdefault(phrase, set()).add(label.name)
    for phrase, names in CALIBRATION_POSITIVES.items():
        truth.setdefault(phrase, set()).update(names)
    for phrase in CALIBRATION_NEGATIVES:
        truth.setdefault(phrase, set())
    phrases = sorted(truth)
    names = [label.name for label in registry]
    targets = np.array([[name in truth[p] for name in names] for p in phrases], float)
    return phrases, matcher.features(phrases), targets


def cross_validate(features: np.ndarray, targets: np.ndarray, folds: int,
                   seed: int = 0) -> np.ndarray:
    """[Q, L] out-of-fold probabilities, folds drawn over phrases."""
    fold = np.random.default_rng(seed).permutation(len(features)) % folds
    out = np.zeros(targets.shape)
    for k in range(folds):
        test = fold == k
        weights = fit_logistic(features[~test].reshape(-1, 3), targets[~test].reshape(-1))
        out[test] = predict_logistic(weights, features[test])
    return out


def report(name: str, probs: np.ndarray, targets: np.ndarray, phrases: list[str],
           negatives: set[str]) -> None:
    hit = probs >= 0.5
    tp = int((hit & (targets > 0)).sum())
    fp = int((hit & (targets == 0)).sum())
    fn = int((~hit & (targets > 0)).sum())
    neg_rows = [i for i, p in enumerate(phrases) if p in negatives]
    false_alarms = [phrases[i] for i in neg_rows if hit[i].any()]
    print(f"{name}: pair precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f} "
          f"(TP {tp}, FP {fp}, FN {fn}); negative phrases with any label: "
          f"{len(false_alarms)}/{len(neg_rows)} {false_alarms}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-descriptions", action="store_true",
                        help="ablation: registry phrases only")
    parser.add_argument("--explain", nargs="+", metavar="PHRASE",
                        help="only print the three most likely labels of these phrases "
                             "(default calibration)")
    args = parser.parse_args()
    registry = LabelRegistry.default()
    matcher = EmbeddingLabelMatcher(registry,
                                    TextMatchConfig(use_descriptions=not args.no_descriptions))
    if args.explain:
        for phrase in args.explain:
            p = matcher.match(phrase).probability
            top = sorted(((p[lab.id], lab.name) for lab in registry), reverse=True)[:3]
            print(f"{phrase!r}: " + ", ".join(f"{name} {prob:.3f}" for prob, name in top))
        return 0
    phrases, features, targets = calibration_samples(matcher)
    negatives = set(CALIBRATION_NEGATIVES)
    print(f"{len(phrases)} phrases x {len(registry)} labels = {targets.size} pairs, "
          f"{int(targets.sum())} positive; descriptions: {not args.no_descriptions}")
    report(f"{args.folds}-fold CV", cross_validate(features, targets, args.folds), targets,
           phrases, negatives)
    weights = fit_logistic(features.reshape(-1, 3), targets.reshape(-1))
    fitted = MatchCalibration.from_weights(weights)
    report("fit on all (training)", fitted.probability(features), targets, phrases, negatives)
    report("current defaults", MatchCalibration().probability(features), targets, phrases,
           negatives)
    probs = fitted.probability(features)
    misses = [(phrases[i], registry.labels[j].name, round(float(probs[i, j]), 2))
              for i, j in zip(*np.nonzero((probs < 0.5) & (targets > 0)))]
    false_pos = [(phrases[i], registry.labels[j].name, round(float(probs[i, j]), 2))
                 for i, j in zip(*np.nonzero((probs >= 0.5) & (targets == 0)))]
    print("missed positives:", misses)
    print("false positives:", false_pos)
    print("fitted MatchCalibration:", fitted.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
