"""Grounded-SAM emulator: every corruption happens at its documented rate; clean is exact.

The ground truth is a hand-made 120 x 160 frame (wall and floor stuff; two touching chairs, a
table touching the second chair, a small mug, a far box), so expected areas and rates are known.
Each rate test switches one corruption on and measures it over many frame keys; the tolerance is
4 binomial standard deviations (the draws are seeded, so the tests are deterministic).
"""
import dataclasses
import math

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.eval.metrics import (image_wise_panoptic_quality,
                                               panoptic_image_from_segmentation)
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import (SegmentationRequest, SegmenterBackend,
                                                    create_segmenter)
from panoptic_mapper.core.segmentation.emulator import (NOISE_LEVELS, GroundedSamEmulator,
                                                        GroundedSamEmulatorConfig,
                                                        emulator_preset)
from panoptic_mapper.core.types import GroundTruthLabels

H, W = 120, 160
WALL, FLOOR, CHAIR, TABLE, BED, MUG, BOX = 1, 2, 10, 11, 16, 18, 20
CHAIR_A, CHAIR_B, TABLE_C, MUG_D, BOX_E = 1, 2, 3, 4, 5


@pytest.fixture(scope="module")
def registry():
    return LabelRegistry.default()


def _frame():
    labels = np.full((H, W), WALL, np.int32)
    labels[80:, :] = FLOOR
    inst = np.zeros((H, W), np.int32)
    for iid, lab, (r0, r1, c0, c1) in [(CHAIR_A, CHAIR, (40, 100, 10, 40)),
                                       (CHAIR_B, CHAIR, (40, 100, 40, 70)),   # touches A
                                       (TABLE_C, TABLE, (50, 100, 70, 120)),  # touches B
                                       (MUG_D, MUG, (20, 26, 140, 146)),      # 36 px
                                       (BOX_E, BOX, (10, 30, 80, 110))]:
        labels[r0:r1, c0:c1] = lab
        inst[r0:r1, c0:c1] = iid
    depth = np.full((H, W), 1.5, np.float32)
    depth[inst == BOX_E] = 6.0  # far
    return GroundTruthLabels(labels, inst), depth


def _config(**rates) -> GroundedSamEmulatorConfig:
    """The clean level with some corruptions switched on."""
    return emulator_preset("clean", **rates)


def _runs(registry, n, **rates):
    gt, depth = _frame()
    emulator = GroundedSamEmulator(_config(**rates), registry)
    return gt, [emulator.emulate(gt, depth, frame_key=k) for k in range(n)]


def _within(measured: float, p: float, n: int) -> bool:
    return abs(measured - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-4) / n)


def _outcome(report, instance_id):
    return next(o for o in report.outcomes if o.gt_instance_id == instance_id)


def test_clean_level_reproduces_the_ground_truth(registry):
    gt, runs = _runs(registry, 3)
    for run in runs:
        seg = run.segmentation
        np.testing.assert_array_equal(seg.label_image(), gt.label_ids)
        assert len(seg.segments) == 7  # 5 things + wall + floor
        for s in seg.segments:
            mask = seg.segment_ids == s.id
            values = np.unique(gt.instance_ids[mask]) if s.is_thing else np.unique(
                gt.label_ids[mask])
            assert len(values) == 1  # one GT segment per output segment, whole
            if s.is_thing:
                assert mask.sum() == (gt.instance_ids == values[0]).sum()
    pq = image_wise_panoptic_quality([gt] * 3, [panoptic_image_from_segmentation(r.segmentation)
                                                for r in runs], registry.thing_ids)
    assert pq.pooled.pq == pytest.approx(100.0)


def test_ids_are_not_associated_across_frames(registry):
    gt, runs = _runs(registry, 60)
    ids = [int(np.unique(r.segmentation.segment_ids[gt.instance_ids == TABLE_C])[0])
           for r in runs]
    assert len(set(ids)) >= 5
    same_as_first = np.mean([i == ids[0] for i in ids[1:]])
    assert _within(float(same_as_first), 1 / 7, 59)


def test_deterministic_given_seed_and_frame_key(registry):
    gt, depth = _frame()
    emulator = GroundedSamEmulator(emulator_preset("hard", seed=3), registry)
    a = emulator.emulate(gt, depth, frame_key=11).segmentation
    b = emulator.emulate(gt, depth, frame_key=11).segmentation
    c = emulator.emulate(gt, depth, frame_key=12).segmentation
    np.testing.assert_array_equal(a.segment_ids, b.segment_ids)
    assert a.segments == b.segments
    assert not np.array_equal(a.segment_ids, c.segment_ids)
    other_seed = GroundedSamEmulator(emulator_preset("hard", seed=4), registry)
    assert not np.array_equal(a.segment_ids,
                              other_seed.emulate(gt, depth, frame_key=11).segmentation.segment_ids)


def test_miss_rate(registry):
    n = 300
    gt, runs = _runs(registry, n, miss_rate=0.2)
    missed = [not (run.segmentation.segment_ids[gt.instance_ids == i] > 0).any()
              for run in runs for i in (CHAIR_A, CHAIR_B, TABLE_C, MUG_D, BOX_E)]
    assert _within(float(np.mean(missed)), 0.2, 5 * n)
    for run in runs:  # the report agrees with the image
        for i in (CHAIR_A, TABLE_C):
            shown = (run.segmentation.segment_ids[gt.instance_ids == i] > 0).any()
            assert shown == (_outcome(run.report, i).dropped != "missed")


def test_small_objects_are_missed_more(registry):
    n = 400
    gt, runs = _runs(registry, n, miss_rate_small=0.5)
    area_frac = 36 / (H * W)
    expected_mug = 0.5 * math.exp(-area_frac / 0.004)
    mug = np.mean([_outcome(r.report, MUG_D).dropped == "missed" for r in runs])
    table = np.mean([_outcome(r.report, TABLE_C).dropped == "missed" for r in runs])
    expected_table = 0.5 * math.exp(-2500 / (H * W) / 0.004)
    assert _within(float(mug), expected_mug, n)
    assert table < 0.01 and expected_table < 1e-10


def test_far_objects_are_missed_more(registry):
    n = 300
    gt, runs = _runs(registry, n, miss_rate_far=0.6)
    far = np.mean([_outcome(r.report, BOX_E).dropped == "missed" for r in runs])
    near = np.mean([_outcome(r.report, CHAIR_A).dropped == "missed" for r in runs])
    assert _within(float(far), 0.6, n)  # 6 m is beyond far_end_m (4.5 m)
    assert near == 0.0
    assert _outcome(runs[0].report, BOX_E).median_depth_m == pytest.approx(6.0)


def test_stuff_miss_rate(registry):
    n = 300
    gt, runs = _runs(registry, n, stuff_miss_rate=0.25)
    missed = [not (r.segmentation.segment_ids[gt.label_ids == lab] > 0).any()
              for r in runs for lab in (WALL, FLOOR)]
    assert _within(float(np.mean(missed)), 0.25, 2 * n)


def test_confusion_with_confusable_labels(registry):
    n = 300
    gt, runs = _runs(registry, n, confusion_rate=0.3)
    chair_as_sofa = table_as_desk = box_confused = 0
    for r in runs:
        labels = r.segmentation.label_image()
        chair_as_sofa += int(np.unique(labels[gt.instance_ids == CHAIR_A])[0] == 13)
        table_as_desk += int(np.unique(labels[gt.instance_ids == TABLE_C])[0] == 12)
        box_confused += int(np.unique(labels[gt.instance_ids == BOX_E])[0] == 14)
    assert _within(chair_as_sofa / n, 0.3, n)   # chair -> sofa
    assert _within(table_as_desk / n, 0.3, n)   # table -> desk
    assert _within(box_confused / n, 0.3, n)    # box -> cabinet


def test_random_confusion_rate(registry):
    n = 300
    gt, runs = _runs(registry, n, random_confusion_rate=0.2)
    wrong = [_outcome(r.report, i).label_id != _outcome(r.report, i).gt_label_id
             for r in runs for i in (CHAIR_A, TABLE_C, MUG_D)]
    assert _within(float(np.mean(wrong)), 0.2, 3 * n)
    wall = [np.unique(r.segmentation.label_image()[gt.label_ids == WALL]) for r in runs]
    assert all(list(w) == [WALL] for w in wall)  # stuff keeps its label


def test_split_rate(registry):
    n = 300
    gt, runs = _runs(registry, n, split_rate=0.25)
    split = []
    for r in runs:
        for i in (CHAIR_A, TABLE_C):  # large enough (>= 0.3 % of the image)
            ids = np.unique(r.segmentation.segment_ids[gt.instance_ids == i])
            split.append(len(ids[ids > 0]) == 2)
            assert _outcome(r.report, i).split == split[-1]
    assert _within(float(np.mean(split)), 0.25, 2 * n)
    mug_split = [len(_outcome(r.report, MUG_D).segment_ids) > 1 for r in runs]
    assert not any(mug_split)  # too small to be split


def test_merge_rates(registry):
    n = 300
    gt, runs = _runs(registry, n, merge_rate_same_class=0.4, merge_rate_other=0.1)
    same, other = [], []
    for r in runs:
        seg = r.segmentation.segment_ids
        a, b, c = (np.unique(seg[gt.instance_ids == i]) for i in (CHAIR_A, CHAIR_B, TABLE_C))
        same.append(a[0] == b[0])
        other.append(b[0] == c[0])
    assert _within(float(np.mean(same)), 0.4, n)   # the two touching chairs
    assert _within(float(np.mean(other)), 0.1, n)  # chair B and the table
    merged = runs[int(np.argmax(same))]
    assert _outcome(merged.report, CHAIR_A).merged and _outcome(merged.report, CHAIR_B).merged


def test_erosion_shrinks_masks_by_the_documented_width(registry):
    gt, runs = _runs(registry, 2, erosion_px=3.0 * 640 / W)  # 3 px at this image width
    seg = runs[0].segmentation.segment_ids
    # the table touches chair B (left), the floor (bottom) and the wall (top, right)
    table = seg[gt.instance_ids == TABLE_C]
    assert (table > 0).sum() == (50 - 6) * (50 - 6)
    wall_interior = seg[5, 5]
    assert wall_interior > 0 and seg[40, 10] == 0  # a corner of chair A is eroded away


def test_false_positives_and_score_conflicts(registry):
    n = 300
    gt, runs = _runs(registry, n, false_positives_per_frame=1.5,
                     false_positive_score_range=(0.99, 1.0))
    counts = [len(r.report.false_positive_ids) for r in runs]
    assert abs(np.mean(counts) - 1.5) < 4 * math.sqrt(1.5 / n)  # Poisson mean
    thing_ids = set(registry.thing_ids)
    for r in runs[:50]:
        by_id = r.segmentation.segment_by_id()
        for fp in r.report.false_positive_ids:
            assert by_id[fp].is_thing and by_id[fp].label_id in thing_ids
            assert by_id[fp].score >= 0.99  # they win every pixel they cover
    low = GroundedSamEmulator(_config(false_positives_per_frame=1.5,
                                      false_positive_score_range=(0.01, 0.02)), registry)
    gt, depth = _frame()
    # true segments cover every pixel and score higher: low-score blobs keep no pixel at all
    assert all(not low.emulate(gt, depth, k).report.false_positive_ids for k in range(30))


def test_big_boxes_are_skipped(registry):
    labels = np.full((H, W), WALL, np.int32)
    inst = np.zeros((H, W), np.int32)
    labels[5:115, 5:155], inst[5:115, 5:155] = BED, 9
    emulator = GroundedSamEmulator(_config(max_box_frac=0.7), registry)
    out = emulator.emulate(GroundTruthLabels(labels, inst), None, 0)
    assert _outcome(out.report, 9).dropped == "too_big"
    assert {s.label for s in out.segmentation.segments} == {"wall"}


def test_phrases_scores_and_thing_flags(registry):
    gt, depth = _frame()
    emulator = GroundedSamEmulator(emulator_preset("hard", seed=1), registry)
    for k in range(20):
        for s in emulator.emulate(gt, depth, k).segmentation.segments:
            label = registry.by_id(s.label_id)
            assert s.phrase in label.phrases and s.label == label.name
            assert s.is_thing == label.is_thing
            assert 0.0 < s.score <= 1.0


def test_noise_levels_order_the_quality(registry):
    gt, depth = _frame()
    scores = {}
    for level in ("clean", "medium", "hard"):
        emulator = GroundedSamEmulator(emulator_preset(level, seed=0), registry)
        preds = [panoptic_image_from_segmentation(emulator.emulate(gt, depth, k).segmentation)
                 for k in range(40)]
        scores[level] = image_wise_panoptic_quality([gt] * 40, preds, registry.thing_ids).pooled.pq
    assert scores["clean"] > scores["medium"] > scores["hard"] > 5.0


def test_backend_protocol_and_factory(registry):
    emulator = create_segmenter("emulator", registry, {"level": "hard", "seed": 2})
    assert isinstance(emulator, SegmenterBackend) and isinstance(emulator, GroundedSamEmulator)
    assert emulator.config.split_rate == NOISE_LEVELS["hard"]["split_rate"]
    gt, depth = _frame()
    rgb = np.zeros((H, W, 3), np.uint8)
    seg = emulator.segment(SegmentationRequest(rgb, stamp_ns=42, depth_m=depth, ground_truth=gt))
    assert seg.stamp_ns == 42 and seg.shape == (H, W)
    again = emulator.segment(SegmentationRequest(rgb, stamp_ns=42, depth_m=depth,
                                                 ground_truth=gt))
    np.testing.assert_array_equal(seg.segment_ids, again.segment_ids)  # keyed by the stamp
    with pytest.raises(InvalidInputError) as err:
        emulator.segment(SegmentationRequest(rgb, stamp_ns=1))
    assert err.value.field == "ground_truth"
    with pytest.raises(InvalidInputError) as err:
        emulator.emulate(gt, depth[:10], 0)
    assert err.value.field == "depth_m"
    with pytest.raises(InvalidInputError) as err:
        emulator.emulate(GroundTruthLabels(gt.label_ids, -gt.instance_ids), depth, 0)
    assert err.value.field == "ground_truth.instance_ids"
    with pytest.raises(InvalidInputError) as err:
        emulator.emulate(GroundTruthLabels(gt.label_ids + 100, gt.instance_ids), depth, 0)
    assert err.value.field == "ground_truth.label_ids" and err.value.kind == "unknown_label"


def test_config_errors_name_the_field(registry):
    with pytest.raises(ConfigError) as err:
        GroundedSamEmulator.from_config({"level": "extreme"}, registry)
    assert err.value.field == "emulator.level"
    with pytest.raises(ConfigError) as err:
        GroundedSamEmulator.from_config({"miss_rate": 1.5}, registry)
    assert err.value.field == "miss_rate"
    with pytest.raises(ConfigError) as err:
        GroundedSamEmulator.from_config({"miss_rat": 0.1}, registry)
    assert err.value.field == "miss_rat"


def test_documented_parameter_table_matches_the_presets():
    """docs/benchmark.md lists every emulator parameter with its value at each level."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "benchmark.md").read_text()
    doc = doc[doc.index("## The Grounded-SAM emulator"):]
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:4]
    fields = [f.name for f in dataclasses.fields(GroundedSamEmulatorConfig) if f.name != "seed"]
    assert sorted(rows) == sorted(fields)
    for level, column in (("clean", 0), ("medium", 1), ("hard", 2)):
        config = emulator_preset(level)
        for name in fields:
            value = getattr(config, name)
            values = value if isinstance(value, tuple) else (value,)
            documented = [float(v) for v in rows[name][column].split("-")]
            assert documented == pytest.approx([float(v) for v in values]), (level, name)


def _merged_ab(run) -> bool:
    return (CHAIR_A, CHAIR_B) in {tuple(sorted((run.report.outcomes[a].gt_instance_id,
                                                run.report.outcomes[b].gt_instance_id)))
                                  for a, b in run.report.merged_pairs}


def test_pair_consistency_makes_the_same_pair_merge_in_every_view_or_in_none(registry):
    gt, depth = _frame()
    per_seed = {}
    for consistency in (0.0, 1.0):
        fractions = []
        for seed in range(30):
            config = dataclasses.replace(_config(merge_rate_same_class=0.5,
                                                 merge_pair_consistency=consistency), seed=seed)
            emulator = GroundedSamEmulator(config, registry)
            fractions.append(np.mean([_merged_ab(emulator.emulate(gt, depth, frame_key=k))
                                      for k in range(20)]))
        per_seed[consistency] = np.array(fractions)
    # Independent per frame: every scene merges the pair in about half its frames.
    assert np.all((per_seed[0.0] > 0.1) & (per_seed[0.0] < 0.9))
    # Fully consistent: a scene merges the pair always or never, and about half the scenes do.
    assert set(per_seed[1.0].tolist()) <= {0.0, 1.0}
    assert _within(float(per_seed[1.0].mean()), 0.5, 30)
    # The mean rate over scenes is the configured rate either way.
    assert abs(per_seed[0.0].mean() - 0.5) < 0.1


def test_masks_bleed_across_contacts_between_things_only(registry):
    gt, depth = _frame()
    for rate, expect_bleed in ((0.0, False), (1.0, True)):
        _, runs = _runs(registry, 10, bleed_rate=rate, bleed_px=40.0)  # 10 px at 160 px wide
        bled = []
        for run in runs:
            seg = run.segmentation
            stuff = ~registry.is_thing_table()[gt.label_ids]
            np.testing.assert_array_equal(seg.label_image()[stuff], gt.label_ids[stuff])
            wrong = 0
            for s in seg.segments:
                mask = seg.segment_ids == s.id
                if not s.is_thing:
                    continue
                values, counts = np.unique(gt.instance_ids[mask], return_counts=True)
                own = values[np.argmax(counts)]
                outside = mask & (gt.instance_ids != own)
                wrong += int(outside.sum())
                if outside.any():  # only next to its own object, within the bleed depth
                    from scipy import ndimage
                    distance = ndimage.distance_transform_edt(gt.instance_ids != own)
                    assert distance[outside].max() <= 15.0 + 1e-6
            bled.append(wrong)
        assert (min(bled) > 0) if expect_bleed else (max(bled) == 0)


def test_hard_level_merges_touching_same_class_things_in_most_frames(registry):
    gt, depth = _frame()
    merged = []
    for seed in range(20):
        emulator = GroundedSamEmulator(emulator_preset("hard", seed=seed), registry)
        merged += [_merged_ab(emulator.emulate(gt, depth, frame_key=k)) for k in range(10)]
    assert np.mean(merged) > 0.6
