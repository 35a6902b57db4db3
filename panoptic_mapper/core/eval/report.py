"""Reports of evaluation runs: headline numbers, per-method means over scenes, JSON and Markdown.

Owns: which numbers are headline numbers, their column names and formats, and the mean rule (a
method's mean of a metric is reported only when every scene has that metric).
Does not own: computing metrics or running maps (``runner.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from panoptic_mapper.core.eval.runner import EvalResult, InputSegmentationScores, MethodResult


@dataclass(frozen=True)
class Column:
    """One headline number."""

    key: str
    """Key in ``metrics.json`` rows."""
    header: str
    """Markdown column header (with unit)."""
    get: Callable[[MethodResult], float | None]
    digits: int = 1


def _attr(*path: str) -> Callable[[object], float | None]:
    def get(result: object) -> float | None:
        value = result
        for name in path:
            value = getattr(value, name, None)
            if value is None:
                return None
        return float(value)
    return get


COLUMNS: tuple[Column, ...] = (
    Column("pq", "PQ", _attr("panoptic", "pq")),
    Column("sq", "SQ", _attr("panoptic", "sq")),
    Column("rq", "RQ", _attr("panoptic", "rq")),
    Column("pq_th", "PQ_th", _attr("panoptic", "pq_th")),
    Column("pq_st", "PQ_st", _attr("panoptic", "pq_st")),
    Column("miou_2d", "mIoU 2D", _attr("semantic_2d", "miou")),
    Column("macc_2d", "mAcc 2D", _attr("semantic_2d", "macc")),
    Column("miou_3d", "mIoU 3D", _attr("semantic_3d", "miou")),
    Column("macc_3d", "mAcc 3D", _attr("semantic_3d", "macc")),
    Column("mcov", "mCov", _attr("coverage_3d", "mcov")),
    Column("mwcov", "mW-Cov", _attr("coverage_3d", "mwcov")),
    Column("accuracy_cm", "Acc (cm)", _attr("geometry", "accuracy_cm"), 2),
    Column("completion_cm", "Comp (cm)", _attr("geometry", "completion_cm"), 2),
    Column("chamfer_l1_cm", "C-L1 (cm)", _attr("geometry", "chamfer_l1_cm"), 2),
    Column("precision", "Prec@5cm", _attr("geometry", "precision")),
    Column("recall", "Rec@5cm", _attr("geometry", "recall")),
    Column("f1", "F1@5cm", _attr("geometry", "f1")),
    Column("depth_median_cm", "depth err (cm)", _attr("depth", "median_abs_error_cm"), 2),
    Column("depth_coverage", "depth cov (%)", _attr("depth", "coverage")),
    Column("integrate_ms_median", "integrate ms (median)", _attr("timing", "integrate_ms_median")),
    Column("integrate_ms_p95", "integrate ms (p95)", _attr("timing", "integrate_ms_p95")),
    Column("finalize_s", "finalize s", _attr("timing", "finalize_s"), 2),
)
"""The headline numbers, in table order (percent unless a unit is given)."""

INPUT_COLUMNS: tuple[Column, ...] = (
    Column("pq", "PQ (image-wise)", _attr("panoptic", "pooled", "pq")),
    Column("sq", "SQ", _attr("panoptic", "pooled", "sq")),
    Column("rq", "RQ", _attr("panoptic", "pooled", "rq")),
    Column("pq_th", "PQ_th", _attr("panoptic", "pooled", "pq_th")),
    Column("pq_st", "PQ_st", _attr("panoptic", "pooled", "pq_st")),
    Column("miou_2d", "mIoU 2D", _attr("semantic", "miou")),
    Column("macc_2d", "mAcc 2D", _attr("semantic", "macc")),
)
"""Headline numbers of the 2D input segmentation."""


def headline(result: MethodResult | InputSegmentationScores,
             columns: tuple[Column, ...] = COLUMNS) -> dict[str, float | None]:
    """``{column key: value}`` for one method on one scene."""
    return {c.key: c.get(result) for c in columns}


def method_means(results: list[EvalResult]) -> dict[str, dict[str, float | None]]:
    """Per method, the mean of each headline number over the scenes that ran it.

    A mean is None unless every scene has the number (e.g. one scene without a ground-truth
    mesh leaves the geometry means empty), so a mean never mixes different scene sets.
    """
    rows: dict[str, list[dict[str, float | None]]] = {}
    for result in results:
        for name, method in result.methods.items():
            rows.setdefault(name, []).append(headline(method))
    means: dict[str, dict[str, float | None]] = {}
    for name, scene_rows in rows.items():
        means[name] = {}
        for column in COLUMNS:
            values = [row[column.key] for row in scene_rows]
            means[name][column.key] = (None if any(v is None for v in values)
                                       else float(np.mean(values)))
        means[name]["scenes"] = len(scene_rows)
    return means


def to_json(results: list[EvalResult]) -> dict:
    """The content of ``metrics.json``: headline rows, means, and every scene in full."""
    rows = []
    for result in results:
        for name, method in result.methods.items():
            rows.append({"scene": result.scene, "method": name, **headline(method)})
    inputs = [{"scene": r.scene, **headline(r.input_segmentation, INPUT_COLUMNS)}
              for r in results if r.input_segmentation is not None]
    return {"units": "percent unless the key ends in _cm, _ms or _s",
            "rows": rows, "mean": method_means(results) if len(results) > 1 else {},
            "input_segmentation": inputs, "scenes": [r.to_dict() for r in results]}


def to_markdown(results: list[EvalResult]) -> str:
    """Markdown tables: one row per scene and method (plus per-method means over several
    scenes), and the 2D input segmentation's own scores. Columns no row has are left out."""
    rows: list[tuple[str, str, dict[str, float | None]]] = []
    for result in results:
        for name, method in result.methods.items():
            rows.append((result.scene, name, headline(method)))
    if len(results) > 1:
        for name, means in method_means(results).items():
            rows.append((f"mean of {means['scenes']}", name, means))
    lines = [_table(("scene", "method"), [(r[0], r[1]) for r in rows], [r[2] for r in rows],
                    COLUMNS)]
    inputs = [(r.scene, headline(r.input_segmentation, INPUT_COLUMNS))
              for r in results if r.input_segmentation is not None]
    if inputs:
        lines += ["", "2D input segmentation on the same frames (ids per frame: image-wise PQ):",
                  "", _table(("scene",), [(s,) for s, _ in inputs], [v for _, v in inputs],
                             INPUT_COLUMNS)]
    notes = sorted({f"{r.scene}: {note}" for r in results for note in r.notes}
                   | {f"{r.scene}/{name}: {note}" for r in results
                      for name, m in r.methods.items() for note in m.notes})
    lines += ["", "Scores in percent, distances in cm; PQ is scene-level (ids must be consistent "
              "across frames); times are wall-clock on the machine that ran the evaluation."]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _table(keys: tuple[str, ...], labels: list[tuple[str, ...]],
           values: list[dict[str, float | None]], columns: tuple[Column, ...]) -> str:
    shown = [c for c in columns if any(v.get(c.key) is not None for v in values)]
    header = "| " + " | ".join(list(keys) + [c.header for c in shown]) + " |"
    rule = "|" + "---|" * (len(keys) + len(shown))
    body = []
    for label, row in zip(labels, values):
        cells = list(label) + [_format(row.get(c.key), c.digits) for c in shown]
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([header, rule] + body)


def _format(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
