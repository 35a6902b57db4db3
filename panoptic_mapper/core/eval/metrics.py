"""Evaluation metrics: panoptic quality, semantic IoU/accuracy, instance coverage, geometry, depth.

Every function here takes plain arrays (or objects with ``label_ids`` / ``instance_ids``) and
returns a named dataclass. Scores that the literature reports in percent are in percent
(PQ/SQ/RQ, mIoU, mAcc, mCov, mW-Cov, precision/recall/F1); distances are in centimetres
(``*_cm``). A score that is undefined (e.g. PQ_th when no thing class is evaluated) is ``None``.

Conventions shared by all metrics (see ``docs/evaluation.md``):
  * label id 0 is void: pixels / points whose ground truth is void are ignored; a prediction of
    label 0 means "no prediction" and is wrong wherever the ground truth is labelled;
  * panoptic segments are ``(label, instance)`` pairs for thing labels and one segment per label
    for stuff labels (the instance id of a stuff pixel is ignored, in prediction and ground truth);
  * instance id 0 is "no instance".

Owns: the metric definitions and their accumulation over frames.
Does not own: running maps, rendering, or choosing which frames/points to score (``runner.py``),
surface sampling and point-to-mesh distances (``surface.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Collection, Iterable, Literal, Protocol, Sequence

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.types import VOID_LABEL_ID, PanopticSegmentation2D

PERCENT = 100.0
MATCH_IOU = 0.5
"""A predicted and a ground-truth segment of the same class match when IoU > this (strictly)."""
VOID_FP_FRACTION = 0.5
"""An unmatched predicted segment whose area is more than this fraction ground-truth void is not a
false positive (the panopticapi rule)."""
DEFAULT_ROBUST_FRACTION = 0.005
"""Panoptic Lifting's ``robust`` threshold for the scene-level PQ (0.5 % of the pixels)."""
_MAX_ID = 1 << 31


class PanopticLabels(Protocol):
    """Anything with per-pixel (or per-point) label and instance ids of equal shape."""

    label_ids: np.ndarray
    instance_ids: np.ndarray


@dataclass
class PanopticImage:
    """A label image and an instance image of equal shape (a prediction or a ground truth)."""

    label_ids: np.ndarray
    """[H, W] int semantic label per pixel (0 = void / no prediction)."""
    instance_ids: np.ndarray
    """[H, W] int instance id per pixel (0 = none; ignored for stuff labels)."""


def panoptic_image_from_segmentation(segmentation: PanopticSegmentation2D) -> PanopticImage:
    """The label and instance images of a 2D panoptic segmentation.

    Thing pixels get their segment id as instance id; stuff pixels get instance id 0.
    """
    size = max([0] + [s.id for s in segmentation.segments]) + 1
    thing_instance = np.zeros(size, np.int32)
    for segment in segmentation.segments:
        if segment.is_thing:
            thing_instance[segment.id] = segment.id
    return PanopticImage(label_ids=segmentation.label_image(),
                         instance_ids=thing_instance[segmentation.segment_ids])


# ============================================================================================
# Panoptic quality
# ============================================================================================
@dataclass
class ClassPanopticQuality:
    """PQ of one category."""

    label_id: int
    is_thing: bool
    pq: float
    """Percent."""
    sq: float
    """Percent; 0 when the class has no true positive (panopticapi convention)."""
    rq: float
    """Percent."""
    tp: int
    fp: int
    fn: int


@dataclass
class PanopticQuality:
    """Panoptic quality averaged over the evaluated categories (Kirillov et al.), in percent.

    A category is evaluated when it has at least one TP, FP or FN. ``pq``, ``sq`` and ``rq`` are
    means of the per-category values, so ``pq != sq * rq`` in general. ``None`` = no category of
    that group was evaluated.
    """

    pq: float | None
    sq: float | None
    rq: float | None
    pq_th: float | None
    sq_th: float | None
    rq_th: float | None
    pq_st: float | None
    sq_st: float | None
    rq_st: float | None
    per_class: dict[int, ClassPanopticQuality]
    """label id -> per-category scores, for every evaluated category."""
    tp: int
    fp: int
    fn: int
    dropped_labels: tuple[int, ...] = ()
    """Label ids removed by the ``robust`` rule before scoring."""

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (per-class keys become strings)."""
        out = asdict(self)
        out["per_class"] = {str(k): v for k, v in out["per_class"].items()}
        out["dropped_labels"] = list(self.dropped_labels)
        return out


@dataclass
class PanopticStats:
    """Per-category TP/FP/FN counts and IoU sums; adding two stats pools them (COCO style).

    Pooling the stats of several images matches segments within each image and then computes
    PQ per category over all matches, as panopticapi does for a dataset.
    """

    counts: dict[int, np.ndarray] = field(default_factory=dict)
    """label id -> float64 [4] = (iou_sum, tp, fp, fn)."""
    is_thing: dict[int, bool] = field(default_factory=dict)
    """label id -> thing flag, for every label in ``counts``."""

    def __add__(self, other: "PanopticStats") -> "PanopticStats":
        merged = PanopticStats({k: v.copy() for k, v in self.counts.items()}, dict(self.is_thing))
        for label, values in other.counts.items():
            if label in merged.counts:
                merged.counts[label] += values
            else:
                merged.counts[label] = values.copy()
            merged.is_thing[label] = other.is_thing[label]
        return merged

    def summary(self, dropped_labels: Sequence[int] = ()) -> PanopticQuality:
        """Per-category PQ/SQ/RQ and their means over all, thing and stuff categories."""
        per_class: dict[int, ClassPanopticQuality] = {}
        for label in sorted(self.counts):
            iou_sum, tp, fp, fn = self.counts[label]
            if tp + fp + fn == 0:
                continue
            denominator = tp + 0.5 * fp + 0.5 * fn
            per_class[label] = ClassPanopticQuality(
                label_id=label, is_thing=self.is_thing[label],
                pq=PERCENT * iou_sum / denominator,
                sq=PERCENT * iou_sum / tp if tp > 0 else 0.0,
                rq=PERCENT * tp / denominator, tp=int(tp), fp=int(fp), fn=int(fn))

        def means(values: list[ClassPanopticQuality]) -> tuple[float | None, ...]:
            if not values:
                return None, None, None
            return (float(np.mean([c.pq for c in values])), float(np.mean([c.sq for c in values])),
                    float(np.mean([c.rq for c in values])))

        classes = list(per_class.values())
        pq, sq, rq = means(classes)
        pq_th, sq_th, rq_th = means([c for c in classes if c.is_thing])
        pq_st, sq_st, rq_st = means([c for c in classes if not c.is_thing])
        return PanopticQuality(
            pq=pq, sq=sq, rq=rq, pq_th=pq_th, sq_th=sq_th, rq_th=rq_th,
            pq_st=pq_st, sq_st=sq_st, rq_st=rq_st, per_class=per_class,
            tp=sum(c.tp for c in classes), fp=sum(c.fp for c in classes),
            fn=sum(c.fn for c in classes), dropped_labels=tuple(sorted(dropped_labels)))


def panoptic_stats(gt_label_ids: np.ndarray, gt_instance_ids: np.ndarray,
                   pred_label_ids: np.ndarray, pred_instance_ids: np.ndarray,
                   thing_label_ids: Collection[int]) -> PanopticStats:
    """Match predicted to ground-truth segments and count TP/FP/FN per category.

    Segments are ``(label, instance)`` for thing labels and ``(label,)`` for stuff labels. A TP is
    a same-label pair with IoU > 0.5, where IoU = |P∩G| / (|P| + |G| - |P∩G| - |P∩void|): the part
    of a predicted segment lying on ground-truth void counts in neither the intersection nor the
    union. Such matches are unique, so no assignment step is needed. Unmatched ground-truth
    segments are FNs; unmatched predicted segments are FPs unless more than half of their area is
    ground-truth void. (The panopticapi rules; the arrays may be one image or many concatenated.)

    Args:
        gt_label_ids: [...] int ground-truth labels (0 = void, ignored).
        gt_instance_ids: [...] int ground-truth instance ids (same shape).
        pred_label_ids: [...] int predicted labels (0 = no prediction).
        pred_instance_ids: [...] int predicted instance ids (same shape).
        thing_label_ids: labels that are things; every other label is stuff.

    Returns:
        The per-category counts; ``.summary()`` turns them into :class:`PanopticQuality`.
    """
    gl, gi, pl, pi = _flat_int64(("gt_label_ids", gt_label_ids),
                                 ("gt_instance_ids", gt_instance_ids),
                                 ("pred_label_ids", pred_label_ids),
                                 ("pred_instance_ids", pred_instance_ids))
    things = sorted(set(int(t) for t in thing_label_ids))
    gt_labels, gt_index = _segments(gl, gi, things)
    pred_labels, pred_index = _segments(pl, pi, things)
    n_gt, n_pred = len(gt_labels), len(pred_labels)
    gt_area = np.bincount(gt_index, minlength=n_gt).astype(np.float64)
    pred_area = np.bincount(pred_index, minlength=n_pred).astype(np.float64)
    pair_keys, intersection = _compact(gt_index * np.int64(n_pred) + pred_index)
    pair_gt, pair_pred = pair_keys // n_pred, pair_keys % n_pred
    intersection = intersection.astype(np.float64)

    # Segments are sorted by label, so a void ground-truth segment is segment 0.
    pred_on_void = np.zeros(n_pred)
    if n_gt and gt_labels[0] == VOID_LABEL_ID:
        on_void = pair_gt == 0
        pred_on_void[pair_pred[on_void]] = intersection[on_void]
    gt_valid = gt_labels != VOID_LABEL_ID
    pred_valid = pred_labels != VOID_LABEL_ID

    candidate = (gt_valid[pair_gt] & pred_valid[pair_pred]
                 & (gt_labels[pair_gt] == pred_labels[pair_pred]))
    union = (pred_area[pair_pred] + gt_area[pair_gt] - intersection - pred_on_void[pair_pred])
    iou = np.where(candidate, intersection / np.maximum(union, 1.0), 0.0)
    matched = candidate & (iou > MATCH_IOU)

    gt_matched = np.zeros(n_gt, bool)
    gt_matched[pair_gt[matched]] = True
    pred_matched = np.zeros(n_pred, bool)
    pred_matched[pair_pred[matched]] = True
    fn_segments = gt_valid & ~gt_matched
    fp_segments = (pred_valid & ~pred_matched
                   & (pred_on_void <= VOID_FP_FRACTION * np.maximum(pred_area, 1.0)))

    # Per-category sums: one bincount per quantity over the category index of each item.
    labels = np.unique(np.concatenate([gt_labels[gt_valid], pred_labels[pred_valid]]))
    n = len(labels)
    matched_category = np.searchsorted(labels, gt_labels[pair_gt[matched]])
    iou_sum = np.bincount(matched_category, weights=iou[matched], minlength=n)
    tp = np.bincount(matched_category, minlength=n)
    fp = np.bincount(np.searchsorted(labels, pred_labels[fp_segments]), minlength=n)
    fn = np.bincount(np.searchsorted(labels, gt_labels[fn_segments]), minlength=n)
    thing_set = set(things)
    return PanopticStats(
        counts={int(label): np.array([iou_sum[k], tp[k], fp[k], fn[k]], np.float64)
                for k, label in enumerate(labels)},
        is_thing={int(label): int(label) in thing_set for label in labels})


def panoptic_quality(gt: PanopticLabels, pred: PanopticLabels, thing_label_ids: Collection[int],
                     robust_fraction: float = 0.0) -> PanopticQuality:
    """PQ / SQ / RQ (percent) of one prediction against its ground truth (e.g. one image).

    Args:
        gt: ground-truth ``label_ids`` / ``instance_ids`` (label 0 = void).
        pred: predicted ``label_ids`` / ``instance_ids`` of the same shape.
        thing_label_ids: labels that are things; every other label is stuff.
        robust_fraction: drop rare classes first (see :func:`rare_labels`); 0 keeps all.
    """
    gl, gi, pl, pi = _flat_int64(("gt.label_ids", gt.label_ids),
                                 ("gt.instance_ids", gt.instance_ids),
                                 ("pred.label_ids", pred.label_ids),
                                 ("pred.instance_ids", pred.instance_ids))
    dropped = rare_labels(gl, pl, robust_fraction)
    if dropped:
        gl, pl = _drop_labels(gl, dropped), _drop_labels(pl, dropped)
    return panoptic_stats(gl, gi, pl, pi, thing_label_ids).summary(dropped)


def scene_panoptic_quality(gt_frames: Sequence[PanopticLabels],
                           pred_frames: Sequence[PanopticLabels], thing_label_ids: Collection[int],
                           robust_fraction: float = DEFAULT_ROBUST_FRACTION) -> PanopticQuality:
    """Scene-level PQ (Panoptic Lifting's PQ^scene), in percent.

    All frames are concatenated into one "image" before matching, so a predicted instance id
    must denote the same object in every frame to score: an object whose id changes between
    frames becomes two segments, each covering only part of the ground-truth segment.

    Args:
        gt_frames: per-frame ground truth; instance ids consistent across the scene.
        pred_frames: per-frame predictions, in the same order and of the same shapes.
        thing_label_ids: labels that are things; every other label is stuff.
        robust_fraction: Panoptic Lifting's ``robust`` rule (default 0.005; 0 disables it), see
            :func:`rare_labels`.
    """
    if len(gt_frames) != len(pred_frames):
        raise InvalidInputError("pred_frames", len(pred_frames),
                                f"need one prediction per ground-truth frame ({len(gt_frames)})",
                                kind="size_mismatch")
    if not gt_frames:
        raise InvalidInputError("gt_frames", 0, "no frame to evaluate", kind="empty")
    stacked = [_flat_int64((f"gt_frames[{i}].label_ids", g.label_ids),
                           (f"gt_frames[{i}].instance_ids", g.instance_ids),
                           (f"pred_frames[{i}].label_ids", p.label_ids),
                           (f"pred_frames[{i}].instance_ids", p.instance_ids))
               for i, (g, p) in enumerate(zip(gt_frames, pred_frames))]
    gl, gi, pl, pi = (np.concatenate([s[k] for s in stacked]) for k in range(4))
    return panoptic_quality(PanopticImage(gl, gi), PanopticImage(pl, pi), thing_label_ids,
                            robust_fraction)


@dataclass
class ImageWisePanopticQuality:
    """PQ of per-frame predictions whose ids are not associated across frames (2D segmenters)."""

    pooled: PanopticQuality
    """Segments matched within each frame, TP/FP/FN pooled over frames per category (COCO)."""
    frame_pq: list[float | None]
    """PQ of each frame on its own (percent; None when the frame has nothing to evaluate)."""
    mean_frame_pq: float | None
    """Mean of ``frame_pq`` over frames with a value (Panoptic Lifting's image-wise variant)."""

    def to_dict(self) -> dict:
        return {"pooled": self.pooled.to_dict(), "frame_pq": self.frame_pq,
                "mean_frame_pq": self.mean_frame_pq}


def image_wise_panoptic_quality(gt_frames: Iterable[PanopticLabels],
                                pred_frames: Iterable[PanopticLabels],
                                thing_label_ids: Collection[int],
                                robust_fraction: float = 0.0) -> ImageWisePanopticQuality:
    """Per-frame PQ (segments matched inside each frame), pooled and averaged over frames.

    Args:
        gt_frames: per-frame ground truth.
        pred_frames: per-frame predictions (ids need not be consistent across frames).
        thing_label_ids: labels that are things; every other label is stuff.
        robust_fraction: per-frame rare-class rule (see :func:`rare_labels`); 0 (default, the COCO
            protocol) keeps all classes.
    """
    pooled = PanopticStats()
    dropped_any: set[int] = set()
    frame_pq: list[float | None] = []
    gt_list, pred_list = list(gt_frames), list(pred_frames)
    if len(gt_list) != len(pred_list):
        raise InvalidInputError("pred_frames", len(pred_list),
                                f"need one prediction per ground-truth frame ({len(gt_list)})",
                                kind="size_mismatch")
    if not gt_list:
        raise InvalidInputError("gt_frames", 0, "no frame to evaluate", kind="empty")
    pairs = list(zip(gt_list, pred_list))
    for i, (g, p) in enumerate(pairs):
        gl, gi, pl, pi = _flat_int64((f"gt_frames[{i}].label_ids", g.label_ids),
                                     (f"gt_frames[{i}].instance_ids", g.instance_ids),
                                     (f"pred_frames[{i}].label_ids", p.label_ids),
                                     (f"pred_frames[{i}].instance_ids", p.instance_ids))
        dropped = rare_labels(gl, pl, robust_fraction)
        if dropped:
            gl, pl = _drop_labels(gl, dropped), _drop_labels(pl, dropped)
            dropped_any.update(dropped)
        stats = panoptic_stats(gl, gi, pl, pi, thing_label_ids)
        frame_pq.append(stats.summary().pq)
        pooled = pooled + stats
    scored = [v for v in frame_pq if v is not None]
    return ImageWisePanopticQuality(pooled=pooled.summary(sorted(dropped_any)), frame_pq=frame_pq,
                                    mean_frame_pq=float(np.mean(scored)) if scored else None)


def rare_labels(gt_label_ids: np.ndarray, pred_label_ids: np.ndarray,
                robust_fraction: float) -> list[int]:
    """Labels dropped by Panoptic Lifting's ``robust`` rule.

    Over the pixels whose ground truth is not void, a label is dropped when it is present but
    covers less than ``robust_fraction`` of them in the prediction, or present but below that
    fraction in the ground truth (``util/panoptic_quality.py:get_non_robust_classes_for_image``:
    the union of both sets, so a class that is common in the ground truth but rare in the
    prediction is dropped too). Dropped labels become void in both before scoring.

    Args:
        gt_label_ids: [N] int ground-truth labels.
        pred_label_ids: [N] int predicted labels.
        robust_fraction: threshold in [0, 1); 0 drops nothing.
    """
    if not 0.0 <= robust_fraction < 1.0:
        raise InvalidInputError("robust_fraction", robust_fraction, "must be in [0, 1)",
                                kind="metric_option")
    gl = np.asarray(gt_label_ids).reshape(-1)
    pl = np.asarray(pred_label_ids).reshape(-1)
    valid = gl != VOID_LABEL_ID
    n_valid = int(valid.sum())
    if robust_fraction == 0.0 or n_valid == 0:
        return []
    dropped: set[int] = set()
    for labels in (gl[valid], pl[valid]):
        counts = np.bincount(labels.astype(np.int64, copy=False))
        rare = (counts > 0) & (counts < robust_fraction * n_valid)
        dropped.update(int(v) for v in np.flatnonzero(rare))
    dropped.discard(VOID_LABEL_ID)
    return sorted(dropped)


def _drop_labels(label_ids: np.ndarray, dropped: Sequence[int]) -> np.ndarray:
    table = np.arange(int(label_ids.max(initial=0)) + 1, dtype=np.int64)
    table[[d for d in dropped if d < len(table)]] = VOID_LABEL_ID
    return table[label_ids]


def _segments(label_ids: np.ndarray, instance_ids: np.ndarray,
              things: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Number the segments: ``(label, instance)`` for things, ``(label,)`` for stuff and void.

    Returns:
        ``labels`` [S] int64, the label of each segment, sorted so that a void segment (label 0)
        comes first, and ``index`` [N] int64, the segment of each pixel.
    """
    max_label = int(label_ids.max(initial=0))
    thing_table = np.zeros(max_label + 1, bool)
    thing_table[[t for t in things if 0 <= t <= max_label]] = True
    instances = np.where(thing_table[label_ids], instance_ids, 0)
    stride = np.int64(instances.max(initial=0)) + 1
    keys, index = _compact(label_ids * stride + instances, return_inverse=True)
    return keys // stride, index


_BINCOUNT_MAX_RANGE = 1 << 23
"""Ids below this are compacted with ``np.bincount`` (O(N)); larger ranges fall back to a sort."""


def _compact(keys: np.ndarray, return_inverse: bool = False):
    """``np.unique(keys, return_counts=True[, return_inverse=True])`` for non-negative int64 keys,
    in O(N) when the keys span a small range (the common case: few labels and instances)."""
    if keys.size == 0 or int(keys.max()) >= _BINCOUNT_MAX_RANGE:
        if return_inverse:
            unique, inverse = np.unique(keys, return_inverse=True)
            return unique, inverse.reshape(-1)
        return np.unique(keys, return_counts=True)
    counts = np.bincount(keys)
    present = np.flatnonzero(counts)
    if return_inverse:
        position = np.zeros(len(counts), np.int64)
        position[present] = np.arange(len(present))
        return present.astype(np.int64), position[keys]
    return present.astype(np.int64), counts[present]


def _flat_int64(*named: tuple[str, np.ndarray]) -> list[np.ndarray]:
    """Flatten equal-shaped non-negative integer arrays to int64, naming the first bad one."""
    arrays = [np.asarray(a) for _, a in named]
    shape = arrays[0].shape
    out = []
    for (name, _), array in zip(named, arrays):
        if array.shape != shape:
            raise InvalidInputError(name, list(array.shape),
                                    f"must have the shape of {named[0][0]} {list(shape)}",
                                    kind="size_mismatch")
        if array.size and array.dtype.kind not in "iu":
            raise InvalidInputError(name, str(array.dtype), "must be an integer array",
                                    kind="encoding")
        flat = array.reshape(-1).astype(np.int64, copy=False)
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= _MAX_ID):
            raise InvalidInputError(name, f"range [{int(flat.min())}, {int(flat.max())}]",
                                    "ids must be in [0, 2^31)", kind="metric_input")
        out.append(flat)
    return out


# ============================================================================================
# Semantic segmentation: mIoU and mAcc from one confusion matrix
# ============================================================================================
@dataclass
class SemanticScores:
    """Semantic segmentation scores over the labels present in the ground truth, in percent."""

    miou: float | None
    """Mean over evaluated labels of TP / (TP + FP + FN)."""
    macc: float | None
    """Mean class recall: mean over evaluated labels of TP / (TP + FN)."""
    overall_acc: float | None
    """Fraction of labelled ground-truth pixels/points predicted correctly."""
    per_class_iou: dict[int, float]
    per_class_acc: dict[int, float]
    num_evaluated: int
    """Pixels or points with a non-void ground truth."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["per_class_iou"] = {str(k): v for k, v in self.per_class_iou.items()}
        out["per_class_acc"] = {str(k): v for k, v in self.per_class_acc.items()}
        return out


class ConfusionMatrix:
    """A growing ``[gt label, predicted label]`` count matrix; ground-truth void is skipped."""

    def __init__(self, num_labels: int = 1):
        self.counts = np.zeros((max(1, num_labels), max(1, num_labels)), np.int64)
        """[L, L] int64: counts[g, p] = pixels with ground truth g predicted as p."""

    def add(self, gt_label_ids: np.ndarray, pred_label_ids: np.ndarray) -> None:
        """Count one image (or point set); pixels with ground truth 0 are ignored.

        Args:
            gt_label_ids: [...] int ground-truth labels.
            pred_label_ids: [...] int predicted labels (0 = no prediction, always wrong).
        """
        gl, pl = _flat_int64(("gt_label_ids", gt_label_ids), ("pred_label_ids", pred_label_ids))
        keep = gl != VOID_LABEL_ID
        gl, pl = gl[keep], pl[keep]
        if gl.size == 0:
            return
        size = int(max(gl.max(), pl.max())) + 1
        if size > len(self.counts):
            grown = np.zeros((size, size), np.int64)
            grown[:len(self.counts), :len(self.counts)] = self.counts
            self.counts = grown
        n = len(self.counts)
        self.counts += np.bincount(gl * n + pl, minlength=n * n).reshape(n, n)

    def scores(self) -> SemanticScores:
        """mIoU, mAcc and overall accuracy over labels present in the ground truth."""
        tp = np.diag(self.counts).astype(np.float64)
        gt_total = self.counts.sum(axis=1).astype(np.float64)
        pred_total = self.counts.sum(axis=0).astype(np.float64)
        evaluated = np.flatnonzero(gt_total > 0)
        iou = {int(c): PERCENT * tp[c] / (gt_total[c] + pred_total[c] - tp[c]) for c in evaluated}
        acc = {int(c): PERCENT * tp[c] / gt_total[c] for c in evaluated}
        total = float(gt_total.sum())
        return SemanticScores(
            miou=float(np.mean(list(iou.values()))) if iou else None,
            macc=float(np.mean(list(acc.values()))) if acc else None,
            overall_acc=PERCENT * float(tp.sum()) / total if total else None,
            per_class_iou=iou, per_class_acc=acc, num_evaluated=int(total))


def semantic_scores(gt_label_ids: np.ndarray, pred_label_ids: np.ndarray) -> SemanticScores:
    """mIoU / mAcc (percent) of predicted labels against ground truth of the same shape."""
    matrix = ConfusionMatrix()
    matrix.add(gt_label_ids, pred_label_ids)
    return matrix.scores()


# ============================================================================================
# Instance coverage
# ============================================================================================
@dataclass
class InstanceCoverage:
    """Mean coverage of ground-truth instances by predicted instances, in percent."""

    mcov: float | None
    """Mean over ground-truth instances of the IoU of the predicted instance assigned to it."""
    mwcov: float | None
    """Same, weighted by ground-truth instance size (points)."""
    per_instance_iou: dict[int, float]
    """Ground-truth instance id -> IoU (percent) of its predicted instance (0 if none)."""
    num_gt_instances: int
    num_pred_instances: int
    matching: str
    """``hungarian`` (one-to-one, maximal total IoU) or ``best`` (max IoU per GT instance)."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["per_instance_iou"] = {str(k): v for k, v in self.per_instance_iou.items()}
        return out


def instance_coverage(gt_instance_ids: np.ndarray, pred_instance_ids: np.ndarray,
                      matching: Literal["hungarian", "best"] = "hungarian") -> InstanceCoverage:
    """mCov and mW-Cov of predicted instances over the given points (or pixels).

    IoU is computed over exactly the points passed in (the caller drops void ones). With
    ``hungarian`` (PanopticRecon++'s 3D protocol) ground-truth and predicted instances are
    matched one-to-one maximising the summed IoU (``scipy.optimize.linear_sum_assignment``), and
    an unassigned ground-truth instance scores 0; with ``best`` (the original mCov of SGPN) each
    ground-truth instance takes its best IoU over all predicted instances.

    Args:
        gt_instance_ids: [N] int ground-truth instance per point (0 = no instance, e.g. stuff).
        pred_instance_ids: [N] int predicted instance per point (0 = none).
        matching: ``hungarian`` or ``best``.
    """
    from scipy.optimize import linear_sum_assignment

    if matching not in ("hungarian", "best"):
        raise InvalidInputError("matching", matching, "must be 'hungarian' or 'best'",
                                kind="metric_option")
    gi, pi = _flat_int64(("gt_instance_ids", gt_instance_ids),
                         ("pred_instance_ids", pred_instance_ids))
    gt_ids, g = np.unique(gi, return_inverse=True)
    pred_ids, p = np.unique(pi, return_inverse=True)
    gt_area = np.bincount(g, minlength=len(gt_ids)).astype(np.float64)
    pred_area = np.bincount(p, minlength=len(pred_ids)).astype(np.float64)
    inter = np.bincount(g * len(pred_ids) + p, minlength=len(gt_ids) * len(pred_ids))
    inter = inter.reshape(len(gt_ids), len(pred_ids)).astype(np.float64)
    iou = inter / (gt_area[:, None] + pred_area[None, :] - inter)
    rows, cols = gt_ids > 0, pred_ids > 0
    iou = iou[np.ix_(rows, cols)]
    gt_ids, gt_area = gt_ids[rows], gt_area[rows]
    coverage = np.zeros(len(gt_ids))
    if iou.size:
        if matching == "best":
            coverage = iou.max(axis=1)
        else:
            assigned_gt, assigned_pred = linear_sum_assignment(iou, maximize=True)
            coverage[assigned_gt] = iou[assigned_gt, assigned_pred]
    coverage *= PERCENT
    empty = len(gt_ids) == 0
    return InstanceCoverage(
        mcov=None if empty else float(coverage.mean()),
        mwcov=None if empty else float((coverage * gt_area).sum() / gt_area.sum()),
        per_instance_iou={int(k): float(v) for k, v in zip(gt_ids, coverage)},
        num_gt_instances=len(gt_ids), num_pred_instances=int(cols.sum()), matching=matching)


# ============================================================================================
# Geometry
# ============================================================================================
DEFAULT_GEOMETRY_THRESHOLD_M = 0.05


@dataclass
class GeometryScores:
    """Reconstruction quality against a ground-truth surface (PanopticRecon++ Table IV)."""

    accuracy_cm: float
    """Mean distance from predicted surface samples to the ground-truth surface."""
    completion_cm: float
    """Mean distance from ground-truth surface samples to the predicted surface."""
    chamfer_l1_cm: float
    """(accuracy + completion) / 2."""
    precision: float
    """Percent of predicted samples within ``threshold_cm`` of the ground truth."""
    recall: float
    """Percent of ground-truth samples within ``threshold_cm`` of the prediction."""
    f1: float
    """Harmonic mean of precision and recall, percent."""
    threshold_cm: float
    num_pred_samples: int
    num_gt_samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def geometry_scores(pred_to_gt_m: np.ndarray, gt_to_pred_m: np.ndarray,
                    threshold_m: float = DEFAULT_GEOMETRY_THRESHOLD_M) -> GeometryScores:
    """Accuracy, completion, Chamfer-L1, precision, recall and F1 from surface distances.

    Args:
        pred_to_gt_m: [N] distances (m) from predicted surface samples to the ground truth.
        gt_to_pred_m: [M] distances (m) from ground-truth surface samples to the prediction.
        threshold_m: inlier distance for precision / recall (default 5 cm).
    """
    d_pred = np.asarray(pred_to_gt_m, np.float64).reshape(-1)
    d_gt = np.asarray(gt_to_pred_m, np.float64).reshape(-1)
    for name, d in (("pred_to_gt_m", d_pred), ("gt_to_pred_m", d_gt)):
        if d.size == 0:
            raise InvalidInputError(name, 0, "no surface sample (empty mesh?)", kind="empty")
        if not np.all(np.isfinite(d)) or float(d.min()) < 0:
            raise InvalidInputError(name, "non-finite or negative", "distances must be >= 0",
                                    kind="metric_input")
    if not threshold_m > 0:
        raise InvalidInputError("threshold_m", threshold_m, "must be > 0", kind="metric_option")
    accuracy = PERCENT * float(d_pred.mean())
    completion = PERCENT * float(d_gt.mean())
    precision = PERCENT * float(np.mean(d_pred < threshold_m))
    recall = PERCENT * float(np.mean(d_gt < threshold_m))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return GeometryScores(accuracy_cm=accuracy, completion_cm=completion,
                          chamfer_l1_cm=(accuracy + completion) / 2, precision=precision,
                          recall=recall, f1=f1, threshold_cm=PERCENT * threshold_m,
                          num_pred_samples=int(d_pred.size), num_gt_samples=int(d_gt.size))


# ============================================================================================
# Depth consistency (no ground-truth mesh needed)
# ============================================================================================
@dataclass
class DepthConsistency:
    """How well the map's rendered depth agrees with the observed depth images."""

    median_abs_error_cm: float | None
    """Median |rendered - observed| over pixels where both are valid (None: no such pixel)."""
    mean_abs_error_cm: float | None
    coverage: float
    """Percent of observed-valid pixels where the map rendered a depth."""
    num_pixels: int
    """Pixels where both depths are valid."""

    def to_dict(self) -> dict:
        return asdict(self)


class DepthConsistencyAccumulator:
    """Pools per-pixel depth errors over frames; :meth:`result` takes the median of all."""

    def __init__(self) -> None:
        self._errors_m: list[np.ndarray] = []
        self._observed = 0

    def add(self, observed_depth_m: np.ndarray, rendered_depth_m: np.ndarray) -> None:
        """Add one frame: [H, W] observed and rendered depth in metres, 0 = invalid."""
        observed = np.asarray(observed_depth_m, np.float32)
        rendered = np.asarray(rendered_depth_m, np.float32)
        if observed.shape != rendered.shape:
            raise InvalidInputError("rendered_depth_m", list(rendered.shape),
                                    f"must match the observed depth {list(observed.shape)}",
                                    kind="size_mismatch")
        seen = observed > 0
        both = seen & (rendered > 0) & np.isfinite(rendered)
        self._observed += int(seen.sum())
        self._errors_m.append(np.abs(rendered[both] - observed[both]))

    def result(self) -> DepthConsistency:
        errors = np.concatenate(self._errors_m) if self._errors_m else np.zeros(0, np.float32)
        return DepthConsistency(
            median_abs_error_cm=PERCENT * float(np.median(errors)) if errors.size else None,
            mean_abs_error_cm=PERCENT * float(errors.mean(dtype=np.float64)) if errors.size
            else None,
            coverage=PERCENT * errors.size / self._observed if self._observed else 0.0,
            num_pixels=int(errors.size))


def depth_consistency(observed_depth_m: Sequence[np.ndarray],
                      rendered_depth_m: Sequence[np.ndarray]) -> DepthConsistency:
    """Median / mean absolute depth error (cm) pooled over frames, and rendered coverage.

    Args:
        observed_depth_m: per-frame [H, W] measured depth, metres, 0 = invalid.
        rendered_depth_m: per-frame [H, W] depth rendered from the map at the same poses.
    """
    if len(observed_depth_m) != len(rendered_depth_m):
        raise InvalidInputError("rendered_depth_m", len(rendered_depth_m),
                                f"need one render per observed frame ({len(observed_depth_m)})",
                                kind="size_mismatch")
    accumulator = DepthConsistencyAccumulator()
    for observed, rendered in zip(observed_depth_m, rendered_depth_m):
        accumulator.add(observed, rendered)
    return accumulator.result()
