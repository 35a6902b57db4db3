"""The refined map over a stand-in prior: prior answers until ready, training raises PQ, ids of
the prior survive, save/load resumes, background training is thread-safe."""
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.eval.metrics import scene_panoptic_quality
from panoptic_mapper.core.mapping.base import IntegrationReport, PanopticMap
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.mapping.refined_map import RefinedPanopticMap
from panoptic_mapper.core.types import PanopticMesh

sys.path.insert(0, str(Path(__file__).parent))
from field_toy_scene import ToyPriorMap, make_toy_scene  # noqa: E402
from field_toy_scene import one_torch_thread  # noqa: E402,F401 (autouse)
from field_toy_scene import integrated_refined_map as _integrated  # noqa: E402
from field_toy_scene import refined_config as _config  # noqa: E402


@pytest.fixture(scope="module")
def toy_scene():
    return make_toy_scene(num_frames=16, width=64, height=48)


def _scene_pq(refined, scene) -> float:
    renders = [refined.render_labels(f.T_world_cam, f.intrinsics) for f in scene.frames]
    return scene_panoptic_quality(scene.ground_truth, renders, scene.thing_label_ids).pq


def test_answers_from_the_prior_until_ready(toy_scene):
    prior = ToyPriorMap(toy_scene)
    refined = _integrated(toy_scene, _config(20, ready_fraction=0.5), prior)
    assert isinstance(refined, PanopticMap)
    assert prior.frames == 16 and len(refined.store) == 16
    assert not refined.is_ready
    assert refined.get_mesh() is prior.mesh
    assert [i.id for i in refined.get_instances()] == [101, 102, 103, 104]
    refined.train_steps(5)
    assert not refined.is_ready and refined.get_mesh() is prior.mesh
    refined.train_steps(5)
    assert refined.is_ready and refined.get_mesh() is not prior.mesh
    assert refined.get_mesh().num_vertices == prior.mesh.num_vertices


class _RejectingPrior(ToyPriorMap):
    def integrate_frame(self, frame, segmentation):
        return IntegrationReport(accepted=False, reason="pose jump")


def test_rejected_frames_are_not_kept(toy_scene):
    refined = RefinedPanopticMap(toy_scene.registry, _config(10),
                                 prior=_RejectingPrior(toy_scene))
    report = refined.integrate_frame(toy_scene.frames[0], toy_scene.segmentations[0])
    assert not report.accepted and report.reason == "pose jump"
    assert len(refined.store) == 0
    with pytest.raises(InvalidInputError, match="keyframes"):
        refined.train_steps(1)
    refined.finalize()  # too few keyframes: stays on the prior, no exception
    assert not refined.is_ready


def test_keyframe_selection_uses_motion(toy_scene):
    config = _config(10)
    config.keyframes.min_translation_m = 10.0
    config.keyframes.min_rotation_deg = 90.0
    config.keyframes.max_interval_s = 0.35
    refined = _integrated(toy_scene, config)
    # frames are 0.1 s apart and turn 22.5 deg each: every 4th frame is a keyframe
    assert len(refined.store) == 4


@pytest.mark.slow
def test_short_training_raises_pq_and_keeps_prior_ids(toy_scene):
    # labels purely from the field (no fallback to the prior), untrained vs trained
    baseline = _integrated(toy_scene, _config(120, ready_fraction=0.0,
                                              prior_fallback_confidence=0.0))
    baseline.train_steps(0)  # untrained field, published
    assert baseline.is_ready
    untrained_pq = _scene_pq(baseline, toy_scene)
    refined = _integrated(toy_scene, _config(120, prior_fallback_confidence=0.0))
    refined.finalize()
    trained_pq = _scene_pq(refined, toy_scene)
    assert untrained_pq < 20.0
    assert trained_pq > 60.0
    things = [i for i in refined.get_instances() if i.is_thing]
    assert {i.id for i in things} <= {101, 102, 103, 104}
    assert {i.label for i in things} >= {"table", "chair", "cabinet"}
    for inst in things:  # boxes turn about the up axis only, as the prior's do
        np.testing.assert_allclose(inst.bbox.R_world_box[:, 2], [0.0, 0.0, 1.0], atol=1e-9)


def test_save_load_resumes(toy_scene, tmp_path):
    refined = _integrated(toy_scene, _config(40, ready_fraction=0.25))
    refined.train_steps(12)
    assert refined.is_ready
    path = tmp_path / "refined.npz"
    refined.save(path)
    restored = RefinedPanopticMap(toy_scene.registry, _config(5), prior=ToyPriorMap(toy_scene))
    restored.load(path)
    assert restored.config.training.trainer.total_steps == 40
    assert restored.trainer.step_count == 12 and len(restored.store) == 16
    assert restored.is_ready
    np.testing.assert_array_equal(restored.get_mesh().label_ids, refined.get_mesh().label_ids)
    np.testing.assert_array_equal(restored.get_mesh().instance_ids,
                                  refined.get_mesh().instance_ids)
    points = toy_scene.mesh.vertices_m[::50]
    for a, b in zip(restored.query_labels(points), refined.query_labels(points)):
        np.testing.assert_array_equal(a, b)
    # both continue identically (same random state and optimiser moments)
    refined.train_steps(2)
    restored.train_steps(2)
    assert restored.progress().losses == pytest.approx(refined.progress().losses, rel=1e-4)
    with pytest.raises(DataFormatError):
        restored.load(tmp_path / "missing.npz")


def test_background_training_while_reading(toy_scene):
    refined = _integrated(toy_scene, _config(30, ready_fraction=0.1))
    refined.train_steps(3)
    errors = []

    def train():
        try:
            refined.train_steps(12)
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    frame = toy_scene.frames[3]
    while worker.is_alive():
        render = refined.render_labels(frame.T_world_cam, frame.intrinsics)
        labels, instances = refined.query_labels(toy_scene.mesh.vertices_m[:200])
        assert render.label_ids.shape == frame.depth_m.shape and labels.shape == (200,)
        refined.get_instances()
    worker.join()
    assert not errors
    assert refined.progress().step == 15


def test_query_validates_points_and_unknown_space(toy_scene):
    refined = _integrated(toy_scene, _config(10, ready_fraction=0.0))
    refined.train_steps(1)
    with pytest.raises(InvalidInputError):
        refined.query_labels(np.array([[np.nan, 0.0, 0.0]]))
    far = np.array([[50.0, 50.0, 50.0]])  # outside the field's box: the prior answers
    labels, _ = refined.query_labels(far)
    assert labels.tolist() == refined.prior.query_labels(far)[0].tolist()
    refined.prior.query_labels = lambda pts: (np.zeros(len(pts), np.int32),
                                              np.zeros(len(pts), np.int32))
    labels, instances = refined.query_labels(far)  # a prior that knows nothing there
    assert labels.tolist() == [0] and instances.tolist() == [0]


def test_refined_map_config_builds_refined_over_instant(label_registry):
    refined = RefinedPanopticMap.from_config(
        {"training": {"trainer": {"total_steps": 10}}, "min_keyframes": 2}, label_registry)
    assert refined.prior.method_name == "instant"
    assert refined.trainer.total_steps == 10 and refined.config.min_keyframes == 2


def test_the_distilled_prior_follows_the_growing_prior_mesh(toy_scene):
    """The prior keeps integrating while the field trains: its newer mesh replaces the
    distillation targets every ``prior_refresh_steps`` steps, with the same token ties."""
    prior = ToyPriorMap(toy_scene)
    full = prior.mesh
    half = full.num_vertices // 2
    prior.mesh = PanopticMesh(full.vertices_m[:half], np.zeros((0, 3), np.int32),
                              full.colors[:half], full.label_ids[:half],
                              full.instance_ids[:half])
    refined = _integrated(toy_scene, _config(20, prior_refresh_steps=2), prior=prior)
    refined.train_steps(1)
    assert len(refined.trainer.prior_targets.points_m) == half
    ties = refined.trainer.distillation.token_of_prior()
    prior.mesh = full  # the prior integrated more frames
    refined.train_steps(1)  # one step since the targets were set: not yet
    assert len(refined.trainer.prior_targets.points_m) == half
    refined.train_steps(1)
    assert len(refined.trainer.prior_targets.points_m) == full.num_vertices
    assert refined.trainer.distillation.token_of_prior() == ties
    off = _integrated(toy_scene, _config(20, prior_refresh_steps=0), prior=ToyPriorMap(toy_scene))
    off.train_steps(1)
    targets = off.trainer.prior_targets
    off.prior.mesh = PanopticMesh(full.vertices_m[:half], np.zeros((0, 3), np.int32),
                                  full.colors[:half], full.label_ids[:half],
                                  full.instance_ids[:half])
    off.train_steps(3)
    assert off.trainer.prior_targets is targets


def test_prior_seeds_tokens_and_distillation_targets(toy_scene):
    refined = _integrated(toy_scene, _config(20))
    refined.train_steps(2)
    trainer = refined.trainer
    assert trainer.field.tokens.num_tokens == 4  # one per prior thing instance
    targets = trainer.prior_targets
    assert targets is not None and len(targets.points_m) == toy_scene.mesh.num_vertices
    # prior instance 101 + k seeded token k + 1 (seed order), with its class
    table = toy_scene.mesh.instance_ids == 1
    assert set(trainer.distillation.token_ids[table]) == {1}
    classes = refined.classes
    assert trainer.distillation.token_classes[1] == int(classes.semantic_to_token_class(
        classes.label_to_semantic_class([11]))[0])
    assert "prior_distill" in trainer.last_losses


def test_merged_and_split_tokens_hand_over_their_prior_vertices(toy_scene, monkeypatch):
    from panoptic_mapper.core.field.token_manager import TokenChange

    refined = _integrated(toy_scene, _config(20))
    refined.train_steps(1)
    trainer = refined.trainer
    table_a = toy_scene.mesh.instance_ids == 1
    table_b = toy_scene.mesh.instance_ids == 2
    assert set(trainer.distillation.token_ids[table_a]) == {1}
    assert set(trainer.distillation.token_ids[table_b]) == {2}
    # token 2 was one object with token 1: table B's prior vertices now distil token 1
    monkeypatch.setattr(trainer.manager, "maintain",
                        lambda *args, **kwargs: TokenChange(step=1, merged={2: 1}))
    trainer._maintain_tokens()
    assert set(trainer.distillation.token_ids[table_a | table_b]) == {1}
    # token 1 then split: the masks show two objects where the prior has one, so neither
    # table's vertices are distilled into a token any more (classes still are)
    monkeypatch.setattr(trainer.manager, "maintain",
                        lambda *args, **kwargs: TokenChange(step=2, split={9: 1}))
    trainer._maintain_tokens()
    assert set(trainer.distillation.token_ids[table_a | table_b]) == {0}
    assert 1 in trainer.distillation.token_classes
    refined.train_steps(1)  # distillation runs without those vertices
    assert np.isfinite(trainer.last_losses["prior_distill"])


class _GrowingPrior(ToyPriorMap):
    """Confirms the cabinet only after the first training chunk."""

    hide_cabinet = True

    def get_instances(self):
        instances = super().get_instances()
        return [i for i in instances if not (self.hide_cabinet and i.label == "cabinet")]


def test_new_prior_instances_get_tokens(toy_scene):
    prior = _GrowingPrior(toy_scene)
    refined = _integrated(toy_scene, _config(20), prior)
    refined.train_steps(1)
    assert refined.trainer.field.tokens.num_tokens == 3
    prior.hide_cabinet = False
    refined.train_steps(1)
    tokens = refined.trainer.field.tokens
    assert tokens.num_tokens == 4 and tokens.ids_list()[-1] == 4
    np.testing.assert_allclose(tokens.means.data[-1].numpy(), [0.6, 2.45, 0.5], atol=0.01)


def test_mismatched_segmentation_is_not_kept(toy_scene):
    refined = RefinedPanopticMap(toy_scene.registry, _config(10), prior=ToyPriorMap(toy_scene))
    frame = toy_scene.frames[0]
    segmentation = toy_scene.segmentations[0]
    bad = type(segmentation)(segmentation.segment_ids[:10, :10], segmentation.segments)
    report = refined.integrate_frame(frame, bad)
    assert report.accepted and len(refined.store) == 0
    assert any("segmentation size" in w for w in report.warnings)


def test_update_mesh_relabels_only_after_training(toy_scene):
    refined = _integrated(toy_scene, _config(10, ready_fraction=0.0))
    assert refined.update_mesh().changed is False  # not trained yet: the prior's update
    refined.train_steps(2)
    assert refined.is_ready
    assert refined.update_mesh().changed is False  # already published at this step
    refined.train_steps(1)
    update = refined.update_mesh()
    assert update.changed and update.num_vertices == toy_scene.mesh.num_vertices


@pytest.mark.parametrize("mode", ["depth_guided", "volume"])
def test_training_runs_in_both_rendering_modes(toy_scene, mode):
    config = _config(40, ready_fraction=1.0)
    sampler = config.training.sampler
    config.training.sampler = sampler.replace(mode=mode, volume_uniform_samples=8,
                                              volume_band_samples=4, volume_importance_samples=4,
                                              segmentation_band_samples=3, far_m=5.0)
    config.training.trainer.geometry_rays_per_step = 128
    refined = _integrated(toy_scene, config)
    refined.train_steps(3)
    refined.trainer.step_count = 20  # jump to the panoptic phase
    progress = refined.train_steps(3)
    assert progress.phase == "panoptic"
    assert {"depth", "semantic", "panoptic", "instance_bce"} <= set(progress.losses)
    assert all(np.isfinite(v) for v in progress.losses.values())


def test_finalize_fits_the_schedule_into_its_time_budget(toy_scene):
    refined = _integrated(toy_scene, _config(100000, finalize_max_s=8.0))
    start = time.monotonic()
    refined.finalize()
    elapsed = time.monotonic() - start
    progress = refined.progress()
    assert progress.total_steps < 100000 and progress.done  # shrunk, then completed
    assert refined.is_ready and elapsed < 8.0 + 15.0  # training budget + publishing


def test_prior_fallback_where_the_field_is_unsure(toy_scene):
    refined = _integrated(toy_scene, _config(10, ready_fraction=0.0,
                                             prior_fallback_confidence=1.0))
    refined.train_steps(1)  # untrained: every vertex is "unsure"
    mesh, prior_mesh = refined.get_mesh(), toy_scene.mesh
    np.testing.assert_array_equal(mesh.label_ids, prior_mesh.label_ids)
    things = prior_mesh.instance_ids > 0
    np.testing.assert_array_equal(mesh.instance_ids[things], prior_mesh.instance_ids[things] + 100)
    labels, _ = refined.query_labels(prior_mesh.vertices_m[::97])
    known = labels > 0
    np.testing.assert_array_equal(labels[known], prior_mesh.label_ids[::97][known])
    pure = _integrated(toy_scene, _config(10, ready_fraction=0.0, prior_fallback_confidence=0.0))
    pure.train_steps(1)
    assert not np.array_equal(pure.get_mesh().label_ids, prior_mesh.label_ids)


def test_fragment_tokens_are_not_published(toy_scene):
    refined = RefinedPanopticMap(toy_scene.registry, _config(10, min_token_vertices=3),
                                 prior=ToyPriorMap(toy_scene))
    token_ids = np.array([0, 1, 1, 1, 2, 2, 3, 0])
    np.testing.assert_array_equal(refined.layer.labeller.fragment_vertices(token_ids),
                                  [False, False, False, False, True, True, True, False])
    # No token wins a million vertices: the prior labels the whole mesh, even with no fallback.
    everything = _integrated(toy_scene, _config(10, ready_fraction=0.0,
                                                prior_fallback_confidence=0.0,
                                                min_token_vertices=10**6))
    everything.train_steps(1)
    mesh, prior_mesh = everything.get_mesh(), toy_scene.mesh
    things = prior_mesh.instance_ids > 0
    np.testing.assert_array_equal(mesh.label_ids[things], prior_mesh.label_ids[things])
    np.testing.assert_array_equal(mesh.instance_ids[things], prior_mesh.instance_ids[things] + 100)


def test_outside_the_field_box_the_prior_answers(toy_scene, monkeypatch):
    # Points beyond the field's scene box (a robot explored there, and the box has not grown
    # yet): there the field only extrapolates, so mesh labels and queries come from the prior
    # (even with no fallback).
    refined = _integrated(toy_scene, _config(10, ready_fraction=0.0,
                                             prior_fallback_confidence=0.0))
    refined.train_steps(1)  # untrained: field labels differ from the prior's
    prior_mesh = toy_scene.mesh
    cut = float(np.median(prior_mesh.vertices_m[:, 0]))
    outside = prior_mesh.vertices_m[:, 0] > cut
    box_contains = SceneBox.contains
    monkeypatch.setattr(SceneBox, "contains",
                        lambda box, pts: box_contains(box, pts) & (pts[:, 0] <= cut))
    refined.train_steps(1)
    refined.update_mesh()
    mesh = refined.get_mesh()
    np.testing.assert_array_equal(mesh.label_ids[outside], prior_mesh.label_ids[outside])
    assert not np.array_equal(mesh.label_ids[~outside], prior_mesh.label_ids[~outside])
    things = outside & (prior_mesh.instance_ids > 0)
    np.testing.assert_array_equal(mesh.instance_ids[things], prior_mesh.instance_ids[things] + 100)
    points = prior_mesh.vertices_m[outside][::23]
    labels, _ = refined.query_labels(points)
    np.testing.assert_array_equal(labels, refined.prior.query_labels(points)[0])
