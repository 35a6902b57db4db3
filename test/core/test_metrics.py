"""Metrics of ``core/eval/metrics.py`` against hand-computed values."""
import numpy as np
import pytest

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.eval.metrics import (
    ConfusionMatrix, PanopticImage, depth_consistency, geometry_scores,
    image_wise_panoptic_quality, instance_coverage, panoptic_image_from_segmentation,
    panoptic_quality, panoptic_stats, rare_labels, scene_panoptic_quality, semantic_scores)
from panoptic_mapper.core.types import PanopticSegmentation2D, Segment

WALL, FLOOR, CHAIR, TABLE = 1, 2, 10, 11
THINGS = {CHAIR, TABLE}


def img(labels, instances):
    return PanopticImage(np.asarray(labels), np.asarray(instances))


# ---- hand-computed PQ ------------------------------------------------------------------------
def hand_example():
    """20 pixels: wall 0-9, chair#1 10-14, chair#2 15-19.

    Prediction: wall 0-7, nothing 8-9, chair A = 10-14, chair B = 15-16, chair C = 17-19.
    wall: IoU 8/10 = 0.8 -> TP. chair#1 ~ A: IoU 1 -> TP. chair#2 ~ C: IoU 3/5 = 0.6 -> TP,
    chair#2 ~ B: IoU 2/5 -> B is an FP.
    """
    gt = img([WALL] * 10 + [CHAIR] * 10, [0] * 10 + [1] * 5 + [2] * 5)
    pred = img([WALL] * 8 + [0] * 2 + [CHAIR] * 10, [0] * 10 + [5] * 5 + [6] * 2 + [7] * 3)
    return gt, pred


def test_pq_sq_rq_hand_computed():
    gt, pred = hand_example()
    result = panoptic_quality(gt, pred, THINGS)
    chair, wall = result.per_class[CHAIR], result.per_class[WALL]
    assert (chair.tp, chair.fp, chair.fn) == (2, 1, 0)
    assert chair.pq == pytest.approx(100 * 1.6 / 2.5)   # 64
    assert chair.sq == pytest.approx(80.0) and chair.rq == pytest.approx(80.0)
    assert (wall.tp, wall.fp, wall.fn) == (1, 0, 0)
    assert wall.pq == pytest.approx(80.0) and wall.sq == pytest.approx(80.0) and wall.rq == 100
    assert result.pq == pytest.approx(72.0)
    assert result.sq == pytest.approx(80.0)
    assert result.rq == pytest.approx(90.0)
    assert result.pq_th == pytest.approx(64.0) and result.pq_st == pytest.approx(80.0)
    assert (result.tp, result.fp, result.fn) == (3, 1, 0)


def test_iou_exactly_half_is_not_a_match():
    # chair#1 = pixels 2-4; the predicted chair covers 3-4 and the wall pixel 1:
    # IoU = 2 / (3 + 3 - 2) = 0.5 exactly -> no match: one FN and one FP.
    gt = img([WALL] * 2 + [CHAIR] * 3, [0, 0, 1, 1, 1])
    pred = img([WALL, CHAIR, WALL, CHAIR, CHAIR], [0, 4, 0, 4, 4])
    chair = panoptic_quality(gt, pred, THINGS).per_class[CHAIR]
    assert (chair.tp, chair.fp, chair.fn) == (0, 1, 1)
    assert chair.pq == 0.0
    # One more covered pixel: IoU = 3 / 4 -> a match.
    pred = img([WALL, CHAIR, CHAIR, CHAIR, CHAIR], [0, 4, 4, 4, 4])
    chair = panoptic_quality(gt, pred, THINGS).per_class[CHAIR]
    assert (chair.tp, chair.fp, chair.fn) == (1, 0, 0)
    assert chair.sq == pytest.approx(75.0)


def test_void_ground_truth_is_ignored():
    # GT void on 0-3: a wall predicted over them keeps IoU 1 (the void part leaves the union).
    gt = img([0] * 4 + [WALL] * 6, [0] * 10)
    pred = img([WALL] * 10, [0] * 10)
    result = panoptic_quality(gt, pred, THINGS)
    assert result.pq == pytest.approx(100.0)
    assert list(result.per_class) == [WALL]


def test_mostly_void_prediction_is_not_a_false_positive():
    gt = img([0, 0, WALL, WALL, WALL, WALL], [0] * 6)
    # Chair on 0-2: 2 of its 3 pixels are GT void (> 50 %): ignored, not an FP.
    pred = img([CHAIR, CHAIR, CHAIR, WALL, WALL, WALL], [3, 3, 3, 0, 0, 0])
    result = panoptic_quality(gt, pred, THINGS)
    assert CHAIR not in result.per_class
    assert result.fp == 0
    # Chair on 1-2: exactly half void -> counted as an FP.
    pred = img([0, CHAIR, CHAIR, WALL, WALL, WALL], [0, 3, 3, 0, 0, 0])
    result = panoptic_quality(gt, pred, THINGS)
    assert result.per_class[CHAIR].fp == 1 and result.per_class[CHAIR].pq == 0.0


def test_unlabelled_prediction_is_wrong():
    gt = img([WALL] * 4, [0] * 4)
    pred = img([0] * 4, [0] * 4)
    result = panoptic_quality(gt, pred, THINGS)
    assert result.per_class[WALL].fn == 1 and result.pq == 0.0


def test_perfect_prediction_scores_100_with_any_ids():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, WALL, FLOOR, CHAIR, TABLE], size=(30, 40))
    instances = np.where(np.isin(labels, list(THINGS)), rng.integers(1, 4, size=labels.shape), 0)
    gt = img(labels, instances)
    # Other instance ids for things (a bijection) and arbitrary ids on stuff pixels.
    relabel = np.array([0, 17, 42, 99])
    pred_instances = np.where(np.isin(labels, list(THINGS)), relabel[instances],
                              rng.integers(0, 50, size=labels.shape))
    pred = img(labels, pred_instances)
    result = panoptic_quality(gt, pred, THINGS)
    assert result.pq == pytest.approx(100.0) and result.sq == pytest.approx(100.0)
    assert result.rq == pytest.approx(100.0)
    assert result.pq_th == pytest.approx(100.0) and result.pq_st == pytest.approx(100.0)
    scene = scene_panoptic_quality([gt, gt], [pred, pred], THINGS)
    assert scene.pq == pytest.approx(100.0)
    sem = semantic_scores(labels, labels)
    assert sem.miou == pytest.approx(100.0) and sem.macc == pytest.approx(100.0)


def random_prediction(seed):
    rng = np.random.default_rng(seed)
    gt_labels = rng.choice([WALL, FLOOR, CHAIR, TABLE], size=(40, 40))
    gt_inst = np.where(np.isin(gt_labels, list(THINGS)), rng.integers(1, 3, gt_labels.shape), 0)
    # A noisy copy: 10 % of the pixels get a random label / instance.
    noise = rng.random(gt_labels.shape) < 0.1
    pred_labels = np.where(noise, rng.choice([0, WALL, CHAIR, TABLE], gt_labels.shape), gt_labels)
    pred_inst = np.where(noise, rng.integers(1, 6, gt_labels.shape), gt_inst)
    return img(gt_labels, gt_inst), img(pred_labels, pred_inst)


def test_permuting_predicted_instance_ids_leaves_pq_unchanged():
    gt, pred = random_prediction(1)
    before = panoptic_quality(gt, pred, THINGS)
    permutation = np.array([0, 5, 3, 1, 4, 2])
    after = panoptic_quality(gt, img(pred.label_ids, permutation[pred.instance_ids]), THINGS)
    assert 0 < before.pq < 100
    assert after.pq == pytest.approx(before.pq) and after.sq == pytest.approx(before.sq)
    assert (after.tp, after.fp, after.fn) == (before.tp, before.fp, before.fn)
    scene_before = scene_panoptic_quality([gt, gt], [pred, pred], THINGS)
    permuted = img(pred.label_ids, permutation[pred.instance_ids])
    scene_after = scene_panoptic_quality([gt, gt], [permuted, permuted], THINGS)
    assert scene_after.pq == pytest.approx(scene_before.pq)


def test_swapping_ids_between_frames_lowers_scene_pq_only():
    # Two chairs (GT ids 1, 2), seen in two frames; frame 2's prediction swaps their ids.
    gt = img([CHAIR] * 4 + [CHAIR] * 4, [1] * 4 + [2] * 4)
    consistent = img(gt.label_ids, [7] * 4 + [8] * 4)
    swapped = img(gt.label_ids, [8] * 4 + [7] * 4)
    good = scene_panoptic_quality([gt, gt], [consistent, consistent], THINGS)
    bad = scene_panoptic_quality([gt, gt], [consistent, swapped], THINGS)
    assert good.pq == pytest.approx(100.0)
    # Each predicted id covers half of each GT chair: IoU 1/3 -> no TP, 2 FP + 2 FN.
    assert bad.pq == pytest.approx(0.0)
    assert (bad.tp, bad.fp, bad.fn) == (0, 2, 2)
    image_wise = image_wise_panoptic_quality([gt, gt], [consistent, swapped], THINGS)
    assert image_wise.pooled.pq == pytest.approx(100.0)
    assert image_wise.frame_pq == [pytest.approx(100.0), pytest.approx(100.0)]


def test_partial_swap_gives_intermediate_scene_pq():
    # Chairs of 4 px in 4 frames; in one frame the ids are swapped: each GT chair is 3/4
    # covered by its id -> IoU = 12 / (16 + 16 - 12) = 0.6: still TPs, SQ 60.
    gt = img([CHAIR] * 8, [1] * 4 + [2] * 4)
    ok = img(gt.label_ids, [7] * 4 + [8] * 4)
    swapped = img(gt.label_ids, [8] * 4 + [7] * 4)
    result = scene_panoptic_quality([gt] * 4, [ok, ok, ok, swapped], THINGS)
    assert result.pq == pytest.approx(60.0) and result.rq == pytest.approx(100.0)


def test_stuff_is_one_segment_per_label():
    # GT stuff pixels carry instance 0; predicted stuff may carry any ids -> grouped by label.
    gt = img([WALL] * 6, [0] * 6)
    pred = img([WALL] * 6, [1, 1, 2, 2, 3, 3])
    assert panoptic_quality(gt, pred, THINGS).pq == pytest.approx(100.0)


def test_robust_rule_drops_rare_classes():
    # 1000 labelled pixels: wall 996, floor 4 (0.4 % < 0.5 %) in GT, predicted all wall.
    gt = img([WALL] * 996 + [FLOOR] * 4, [0] * 1000)
    pred = img([WALL] * 1000, [0] * 1000)
    assert rare_labels(gt.label_ids, pred.label_ids, 0.005) == [FLOOR]
    robust = scene_panoptic_quality([gt], [pred], THINGS)
    assert robust.dropped_labels == (FLOOR,)
    # The floor pixels became void: the wall prediction over them leaves the union.
    assert robust.pq == pytest.approx(100.0)
    strict = scene_panoptic_quality([gt], [pred], THINGS, robust_fraction=0.0)
    assert strict.per_class[FLOOR].fn == 1 and strict.pq == pytest.approx(100 * 0.996 / 2)
    # Panoptic Lifting's rule is a union: a class common in GT but rare in the prediction goes too.
    gt = img([WALL] * 900 + [FLOOR] * 100, [0] * 1000)
    pred = img([WALL] * 997 + [FLOOR] * 3, [0] * 1000)
    assert rare_labels(gt.label_ids, pred.label_ids, 0.005) == [FLOOR]
    # Void pixels do not count in the denominator: 4 floor pixels out of 500 labelled = 0.8 %.
    gt = img([0] * 500 + [WALL] * 496 + [FLOOR] * 4, [0] * 1000)
    assert rare_labels(gt.label_ids, gt.label_ids, 0.005) == []


def reference_pq(gt, pred, things):
    """A direct per-segment transcription of the panopticapi rules (slow, for checking)."""
    def segments(labels, instances):
        out = {}
        for k, (label, instance) in enumerate(zip(labels.ravel(), instances.ravel())):
            if label != 0:
                out.setdefault((label, instance if label in things else 0), set()).add(k)
        return out

    void = {k for k, label in enumerate(gt.label_ids.ravel()) if label == 0}
    gt_segments = segments(gt.label_ids, gt.instance_ids)
    pred_segments = segments(pred.label_ids, pred.instance_ids)
    per_class, matched_gt, matched_pred = {}, set(), set()
    for g, g_pixels in gt_segments.items():
        for p, p_pixels in pred_segments.items():
            if g[0] != p[0]:
                continue
            inter = len(g_pixels & p_pixels)
            iou = inter / (len(g_pixels | p_pixels) - len(p_pixels & void))
            if iou > 0.5:
                stats = per_class.setdefault(g[0], [0.0, 0, 0, 0])
                stats[0] += iou
                stats[1] += 1
                matched_gt.add(g)
                matched_pred.add(p)
    for g in set(gt_segments) - matched_gt:
        per_class.setdefault(g[0], [0.0, 0, 0, 0])[3] += 1
    for p, p_pixels in pred_segments.items():
        if p not in matched_pred and len(p_pixels & void) <= 0.5 * len(p_pixels):
            per_class.setdefault(p[0], [0.0, 0, 0, 0])[2] += 1
    return {label: 100 * iou / (tp + fp / 2 + fn / 2)
            for label, (iou, tp, fp, fn) in per_class.items()}


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_per_segment_reference(seed):
    rng = np.random.default_rng(seed)
    # Blocky random scenes with void, stuff and things, and a prediction that moves blocks.
    blocks = rng.integers(0, 8, size=(4, 5))
    gt_labels = np.array([0, WALL, FLOOR, CHAIR, CHAIR, TABLE, CHAIR, 0])[blocks]
    gt_inst = np.where(np.isin(gt_labels, list(THINGS)), blocks + 1, 0)
    gt_labels, gt_inst = (np.kron(a, np.ones((6, 6), int)) for a in (gt_labels, gt_inst))
    shift = rng.integers(-1, 2, size=2)
    pred_labels = np.roll(gt_labels, shift, axis=(0, 1))
    # Some predicted instances are split (per quarter-block id changes).
    split = np.kron(rng.random((8, 10)) < 0.2, np.ones((3, 3), int))
    pred_inst = np.roll(gt_inst, shift, axis=(0, 1)) * 3 + split
    flip = rng.random(gt_labels.shape) < 0.1
    pred_labels = np.where(flip, rng.choice([0, WALL, CHAIR], gt_labels.shape), pred_labels)
    gt, pred = img(gt_labels, gt_inst), img(pred_labels, pred_inst)
    expected = reference_pq(gt, pred, THINGS)
    result = panoptic_quality(gt, pred, THINGS)
    assert {k: v.pq for k, v in result.per_class.items()} == pytest.approx(expected)
    assert result.pq == pytest.approx(np.mean(list(expected.values())))


def test_image_wise_pools_counts_per_category():
    gt, pred = hand_example()
    empty_gt = img([0] * 20, [0] * 20)
    result = image_wise_panoptic_quality([gt, gt, empty_gt], [pred, gt, empty_gt], THINGS)
    # Frame 1: the hand example (PQ 72); frame 2 perfect; frame 3 has nothing to score.
    assert result.frame_pq[0] == pytest.approx(72.0)
    assert result.frame_pq[1] == pytest.approx(100.0)
    assert result.frame_pq[2] is None
    assert result.mean_frame_pq == pytest.approx(86.0)
    chair = result.pooled.per_class[CHAIR]
    assert (chair.tp, chair.fp, chair.fn) == (4, 1, 0)
    assert chair.pq == pytest.approx(100 * 3.6 / 4.5)


def test_stats_add_is_pooling():
    gt, pred = hand_example()
    once = panoptic_stats(gt.label_ids, gt.instance_ids, pred.label_ids, pred.instance_ids, THINGS)
    twice = once + once
    assert twice.counts[CHAIR].tolist() == pytest.approx([3.2, 4, 2, 0])
    assert twice.summary().pq == pytest.approx(once.summary().pq)


def test_panoptic_input_validation():
    with pytest.raises(InvalidInputError, match="shape"):
        panoptic_quality(img([1, 1], [0, 0]), img([1, 1, 1], [0, 0, 0]), THINGS)
    with pytest.raises(InvalidInputError, match="integer"):
        panoptic_quality(img([1.0], [0]), img([1], [0]), THINGS)
    with pytest.raises(InvalidInputError, match="ids must be"):
        panoptic_quality(img([1], [-1]), img([1], [0]), THINGS)
    with pytest.raises(InvalidInputError):
        scene_panoptic_quality([img([1], [0])], [], THINGS)
    with pytest.raises(InvalidInputError, match="robust_fraction"):
        scene_panoptic_quality([img([1], [0])], [img([1], [0])], THINGS, robust_fraction=1.5)


def test_nothing_to_evaluate_gives_none():
    result = panoptic_quality(img([0, 0], [0, 0]), img([0, 0], [0, 0]), THINGS)
    assert result.pq is None and result.pq_th is None and result.per_class == {}
    only_stuff = panoptic_quality(img([WALL], [0]), img([WALL], [0]), THINGS)
    assert only_stuff.pq_st == pytest.approx(100.0) and only_stuff.pq_th is None
    assert only_stuff.to_dict()["per_class"]["1"]["pq"] == pytest.approx(100.0)


def test_panoptic_image_from_segmentation():
    ids = np.array([[0, 1, 1], [2, 2, 3]], np.int32)
    segmentation = PanopticSegmentation2D(ids, (
        Segment(1, "chair", CHAIR, True), Segment(2, "wall", WALL, False),
        Segment(3, "chair", CHAIR, True)))
    image = panoptic_image_from_segmentation(segmentation)
    assert image.label_ids.tolist() == [[0, CHAIR, CHAIR], [WALL, WALL, CHAIR]]
    assert image.instance_ids.tolist() == [[0, 1, 1], [0, 0, 3]]


# ---- semantic --------------------------------------------------------------------------------
def test_miou_macc_hand_computed():
    gt = np.array([1, 1, 1, 2, 2, 0])
    pred = np.array([1, 1, 2, 2, 0, 1])
    # Class 1: TP 2, GT 3, predicted 2 -> IoU 2/3, recall 2/3.
    # Class 2: TP 1, GT 2, predicted 2 -> IoU 1/3, recall 1/2. The last pixel is void.
    scores = semantic_scores(gt, pred)
    assert scores.per_class_iou == {1: pytest.approx(200 / 3), 2: pytest.approx(100 / 3)}
    assert scores.per_class_acc == {1: pytest.approx(200 / 3), 2: pytest.approx(50.0)}
    assert scores.miou == pytest.approx(50.0)
    assert scores.macc == pytest.approx((200 / 3 + 50) / 2)
    assert scores.overall_acc == pytest.approx(60.0)
    assert scores.num_evaluated == 5


def test_confusion_matrix_accumulates_over_frames_and_grows():
    matrix = ConfusionMatrix()
    matrix.add(np.array([[1, 1]]), np.array([[1, 1]]))
    matrix.add(np.array([[20, 20]]), np.array([[20, 1]]))
    scores = matrix.scores()
    # Class 1: TP 2, GT 2, predicted 3 -> IoU 2/3; class 20: TP 1, GT 2, pred 1 -> IoU 1/2.
    assert scores.per_class_iou == {1: pytest.approx(200 / 3), 20: pytest.approx(50.0)}
    assert scores.macc == pytest.approx(75.0)
    assert ConfusionMatrix().scores().miou is None


# ---- instance coverage -----------------------------------------------------------------------
def test_coverage_hand_computed():
    gt = np.array([1, 1, 1, 1, 2, 2, 0, 0])
    pred = np.array([5, 5, 5, 6, 6, 6, 0, 6])
    # IoU(1,5) = 3/4, IoU(2,6) = 2/(2+4-2) = 1/2.
    for matching in ("hungarian", "best"):
        cov = instance_coverage(gt, pred, matching=matching)
        assert cov.per_instance_iou == {1: pytest.approx(75.0), 2: pytest.approx(50.0)}
        assert cov.mcov == pytest.approx(62.5)
        assert cov.mwcov == pytest.approx((4 * 75 + 2 * 50) / 6)
        assert cov.num_gt_instances == 2 and cov.num_pred_instances == 2


def test_coverage_hungarian_is_one_to_one():
    # One predicted instance covering two GT instances: IoU 1/2 with each.
    gt, pred = np.array([1, 1, 2, 2]), np.array([5, 5, 5, 5])
    assert instance_coverage(gt, pred, matching="best").mcov == pytest.approx(50.0)
    hungarian = instance_coverage(gt, pred, matching="hungarian")
    assert hungarian.mcov == pytest.approx(25.0)
    assert sorted(hungarian.per_instance_iou.values()) == [0.0, pytest.approx(50.0)]
    nothing = instance_coverage(gt, np.zeros(4, int))
    assert nothing.mcov == 0.0 and nothing.num_pred_instances == 0
    assert instance_coverage(np.zeros(3, int), np.ones(3, int)).mcov is None
    with pytest.raises(InvalidInputError):
        instance_coverage(gt, pred, matching="greedy")


# ---- geometry and depth ----------------------------------------------------------------------
def test_geometry_scores_hand_computed():
    scores = geometry_scores(np.array([0.01, 0.03, 0.08]), np.array([0.02, 0.02]),
                             threshold_m=0.05)
    assert scores.accuracy_cm == pytest.approx(4.0)
    assert scores.completion_cm == pytest.approx(2.0)
    assert scores.chamfer_l1_cm == pytest.approx(3.0)
    assert scores.precision == pytest.approx(200 / 3)
    assert scores.recall == pytest.approx(100.0)
    assert scores.f1 == pytest.approx(80.0)
    assert scores.threshold_cm == pytest.approx(5.0)
    with pytest.raises(InvalidInputError, match="empty"):
        geometry_scores(np.zeros(0), np.array([0.1]))
    assert geometry_scores(np.array([1.0]), np.array([1.0])).f1 == 0.0


def test_depth_consistency_hand_computed():
    observed = np.array([[1.0, 2.0], [0.0, 3.0]], np.float32)
    rendered = np.array([[1.1, 0.0], [1.0, 2.7]], np.float32)
    # Both valid at (0,0) and (1,1): errors 0.1 and 0.3 m; 2 of 3 observed pixels rendered.
    result = depth_consistency([observed], [rendered])
    assert result.median_abs_error_cm == pytest.approx(20.0, abs=1e-4)
    assert result.mean_abs_error_cm == pytest.approx(20.0, abs=1e-4)
    assert result.coverage == pytest.approx(200 / 3)
    assert result.num_pixels == 2
    empty = depth_consistency([observed], [np.zeros_like(observed)])
    assert empty.median_abs_error_cm is None and empty.coverage == 0.0
