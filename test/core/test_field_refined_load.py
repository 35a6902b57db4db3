"""Loading a refined map is atomic: a file corrupt in any part raises DataFormatError naming the
path and the part, and the map keeps answering exactly as before."""
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.mapping.refined_layer import RefinedLayer
from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig, RefinedPanopticMap

sys.path.insert(0, str(Path(__file__).parent))
from field_toy_scene import ToyPriorMap, make_toy_scene  # noqa: E402
from field_toy_scene import one_torch_thread  # noqa: E402,F401 (autouse)

SAVED_STEP = 12
CURRENT_STEP = 14
CURRENT_PRIOR_FRAMES = 99
"""The map's prior is set to this frame count after saving (the file's prior holds 16)."""


@pytest.fixture(scope="module")
def toy_scene():
    return make_toy_scene(num_frames=16, width=64, height=48)


@pytest.fixture(scope="module")
def saved(toy_scene, tmp_path_factory):
    """(the map, a file it saved at step 12); the map then trained on to step 14."""
    config = RefinedMapConfig(ready_fraction=0.25)
    config.keyframes.image_scale = 1.0
    config.keyframes.min_translation_m = 0.0
    config.training.trainer.total_steps = 40
    refined = RefinedPanopticMap(toy_scene.registry, config, prior=ToyPriorMap(toy_scene))
    for frame, segmentation in zip(toy_scene.frames, toy_scene.segmentations):
        refined.integrate_frame(frame, segmentation)
    refined.train_steps(SAVED_STEP)
    path = tmp_path_factory.mktemp("refined_load") / "refined.npz"
    refined.save(path)
    refined.train_steps(CURRENT_STEP - SAVED_STEP)
    refined.prior.frames = CURRENT_PRIOR_FRAMES
    return refined, path


def _answers(refined, points):
    mesh = refined.get_mesh()
    return {"mesh": mesh, "arrays": [a.copy() for a in (mesh.vertices_m, mesh.triangles,
                                                        mesh.label_ids, mesh.instance_ids)],
            "step": refined.progress().step, "keyframes": len(refined.store),
            "prior_frames": refined.prior.frames, "query": refined.query_labels(points),
            "instances": [(i.id, i.label, i.label_id, i.num_voxels, tuple(i.centroid_m))
                          for i in refined.get_instances()]}


def _assert_unchanged(refined, before, points):
    after = _answers(refined, points)
    assert after["mesh"] is before["mesh"]
    for a, b in zip(after["arrays"], before["arrays"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(after["query"], before["query"]):
        np.testing.assert_array_equal(a, b)
    assert after["step"] == before["step"] == CURRENT_STEP
    assert after["keyframes"] == before["keyframes"] == 16
    assert after["prior_frames"] == before["prior_frames"] == CURRENT_PRIOR_FRAMES
    assert after["instances"] == before["instances"] and after["instances"]


def _rewritten(path: Path, out: Path, change) -> Path:
    with np.load(path) as data:
        members = {name: data[name] for name in data.files}
    change(members)
    np.savez(out, **members)
    return out


def _set_meta(**values):
    def change(members):
        meta = json.loads(bytes(members["meta"]).decode())
        meta.update(values)
        members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return change


def _drop_meta(key):
    def change(members):
        meta = json.loads(bytes(members["meta"]).decode())
        del meta[key]
        members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return change


def _set_checkpoint(edit):
    def change(members):
        state = torch.load(io.BytesIO(bytes(members["field"])), weights_only=True)
        edit(state)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        members["field"] = np.frombuffer(buffer.getvalue(), np.uint8)
    return change


def _wrong_decoder_shape(state):
    state["field"]["sdf_decoder.0.weight"] = torch.zeros(3, 3)


CORRUPTIONS = {
    "meta not json": ("meta", lambda m: m.update(meta=np.frombuffer(b"{oops", np.uint8))),
    "meta bad config": ("meta", _set_meta(config={"no_such_key": 1})),
    "meta key missing": ("meta", _drop_meta("published")),
    "prior garbage": ("prior", lambda m: m.update(prior=np.frombuffer(b"garbage", np.uint8))),
    "keyframe member missing": ("keyframes", lambda m: m.pop("kf3_depth_m")),
    "keyframe wrong shape": ("keyframes",
                             lambda m: m.update(kf0_depth_m=np.zeros((2, 2), np.float32))),
    "checkpoint truncated": ("field checkpoint",
                             lambda m: m.update(field=m["field"][:len(m["field"]) // 2])),
    "checkpoint key missing": ("field checkpoint", _set_checkpoint(lambda s: s.pop("optimizer"))),
    "checkpoint wrong shape": ("field checkpoint", _set_checkpoint(_wrong_decoder_shape)),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_part_raises_and_keeps_the_map(saved, toy_scene, tmp_path, name):
    refined, path = saved
    points = toy_scene.mesh.vertices_m[::40]
    before = _answers(refined, points)
    part, change = CORRUPTIONS[name]
    bad = _rewritten(path, tmp_path / "bad.npz", change)
    with pytest.raises(DataFormatError, match=f"{part} part of the map file") as info:
        refined.load(bad)
    assert info.value.value == str(bad)
    _assert_unchanged(refined, before, points)


def test_truncated_file_and_wrong_version_keep_the_map(saved, toy_scene, tmp_path):
    refined, path = saved
    points = toy_scene.mesh.vertices_m[::40]
    before = _answers(refined, points)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="archive part|meta part|prior part"):
        refined.load(truncated)
    _assert_unchanged(refined, before, points)
    with pytest.raises(DataFormatError, match="version"):
        refined.load(_rewritten(path, tmp_path / "v99.npz", _set_meta(format_version=99)))
    _assert_unchanged(refined, before, points)


def test_failed_publish_restores_the_prior_then_a_good_file_loads(saved, toy_scene, tmp_path,
                                                                   monkeypatch):
    refined, path = saved
    points = toy_scene.mesh.vertices_m[::40]
    before = _answers(refined, points)

    def fail(self, trainer, prior=None):
        assert self.prior.map.frames == 16  # the file's prior was loaded when publishing began
        raise ValueError("no labels")

    with monkeypatch.context() as patch:
        patch.setattr(RefinedLayer, "_publish", fail)
        with pytest.raises(DataFormatError, match="publishing it.*no labels"):
            refined.load(path)
    _assert_unchanged(refined, before, points)
    refined.load(path)
    assert refined.progress().step == SAVED_STEP and refined.prior.frames == 16
    assert refined.is_ready and refined.get_mesh() is not before["mesh"]


def test_a_file_naming_a_removed_setting_loads(saved, toy_scene, tmp_path, caplog):
    _, path = saved

    def change(members):  # what a file written before trainer.torch_threads was removed holds
        meta = json.loads(bytes(members["meta"]).decode())
        meta["config"]["training"]["trainer"]["torch_threads"] = 1
        members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    old = _rewritten(path, tmp_path / "old.npz", change)
    fresh = RefinedPanopticMap(toy_scene.registry, RefinedMapConfig(),
                               prior=ToyPriorMap(toy_scene))
    with caplog.at_level("WARNING"):
        fresh.load(old)
    assert "training.trainer.torch_threads" in caplog.text and "ignored" in caplog.text
    assert fresh.progress().step == SAVED_STEP and fresh.is_ready
