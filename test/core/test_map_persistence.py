"""Every state a map can be in survives save and load (issue 16: a saved empty map could not be
loaded): empty, one frame, after a reset, after a load, for every map method; the refined map
also with its field not started, in training and trained, as the stand-alone map and as the
runtime's streamed map. A truly unreadable file keeps its clear error."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.mapping.base import MAP_METHODS, create_map
from panoptic_mapper.core.mapping.refined_map import RefinedPanopticMap

sys.path.insert(0, str(Path(__file__).parent))
from field_toy_scene import make_toy_scene, one_torch_thread  # noqa: E402,F401 (autouse)
from field_toy_scene import refined_config  # noqa: E402

GRID_METHODS = [m for m in MAP_METHODS if m != "refined"]


@pytest.fixture(scope="module")
def toy_scene():
    return make_toy_scene(num_frames=16, width=64, height=48)


def answers(the_map) -> dict:
    """What a planner reads of a map: frames, mesh size and labels, instances."""
    the_map.update_mesh()
    mesh = the_map.get_mesh()
    return {"frames": getattr(the_map, "num_frames", None), "vertices": mesh.num_vertices,
            "labels": np.bincount(mesh.label_ids, minlength=1).tolist(),
            "instances": sorted((i.id, i.label_id, i.is_thing) for i in the_map.get_instances())}


def round_trip(make, the_map, tmp_path: Path, name: str):
    """Save ``the_map``, load the file into a fresh map, and return that map."""
    path = tmp_path / f"{name}.npz"
    the_map.save(path)
    restored = make()
    restored.load(path)
    return restored


def integrate(the_map, scene, count: int) -> None:
    """The first ``count`` frames of the toy room, 0.5 s apart (its camera circles the room
    in 16 frames: at 10 Hz that would be 4.7 m/s, a pose jump)."""
    for frame, segmentation in zip(scene.frames[:count], scene.segmentations[:count]):
        frame = dataclasses.replace(frame, stamp_ns=frame.index * 500_000_000)
        assert the_map.integrate_frame(frame, segmentation).accepted


@pytest.mark.parametrize("method", GRID_METHODS)
def test_grid_maps_round_trip_every_state(method, toy_scene, label_registry, tmp_path):
    def make():
        return create_map(method, label_registry)

    the_map = make()
    for state in ("empty", "one_frame", "after_reset", "after_load"):
        if state == "one_frame":
            integrate(the_map, toy_scene, 1)
        elif state == "after_reset":
            integrate(the_map, toy_scene, 3)
            the_map.reset()
        elif state == "after_load":
            integrate(the_map, toy_scene, 4)
            the_map = round_trip(make, the_map, tmp_path, f"{state}_first")
        expected = answers(the_map)
        restored = round_trip(make, the_map, tmp_path, state)
        assert answers(restored) == expected, state
        # a restored map goes on integrating
        integrate(restored, toy_scene, 1)
        assert restored.num_frames == expected["frames"] + 1


def test_refined_map_round_trips_every_state(toy_scene, label_registry, tmp_path):
    config = refined_config(total_steps=6, min_keyframes=2, ready_fraction=0.5)

    def make():
        return RefinedPanopticMap(label_registry, config)

    the_map = make()
    states = []
    for state in ("empty", "one_frame", "after_reset", "field_not_started", "training",
                  "trained", "after_load"):
        if state == "one_frame":
            integrate(the_map, toy_scene, 1)
        elif state == "after_reset":
            the_map.reset()
        elif state == "field_not_started":
            integrate(the_map, toy_scene, 4)
        elif state == "training":
            the_map.train_steps(2)
        elif state == "trained":
            the_map.train_steps(10)
            assert the_map.progress().done and the_map.is_ready
        elif state == "after_load":
            the_map = round_trip(make, the_map, tmp_path, "reloaded")
        expected = answers(the_map)
        progress = the_map.progress()
        restored = round_trip(make, the_map, tmp_path, state)
        assert answers(restored) == expected, state
        assert restored.progress().step == progress.step, state
        assert len(restored.store) == len(the_map.store), state
        assert restored.is_ready == the_map.is_ready, state
        states.append(state)
    assert len(states) == 7


def test_streamed_refined_map_round_trips_empty_and_trained(toy_scene, label_registry,
                                                            tmp_path):
    config = {"training": {"trainer": {"total_steps": 6}}, "min_keyframes": 2,
              "ready_fraction": 0.5, "keyframes": {"min_translation_m": 0.0,
                                                  "image_scale": 1.0},
              "streaming": {"pace": "none", "training": {"chunk_steps": 3}}}

    def make():
        return create_map("refined", label_registry, config)

    empty = make()
    try:
        restored = round_trip(make, empty, tmp_path, "empty")
        assert answers(restored) == answers(empty)
        restored.close()
    finally:
        empty.close()
    trained = make()
    integrate(trained, toy_scene, 4)
    trained.finalize()  # waits for the background training, as the node does after a bag
    status = trained.training.status()
    assert status.ready and status.progress.step == 6
    restored = round_trip(make, trained, tmp_path, "trained")
    try:
        assert answers(restored) == answers(trained)
        assert restored.session.layer.progress().step == 6
    finally:
        restored.close()


def test_unreadable_files_keep_their_clear_error(label_registry, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a map")
    for method in GRID_METHODS:
        with pytest.raises(DataFormatError, match="not a readable map file"):
            create_map(method, label_registry).load(bad)
    with pytest.raises(DataFormatError, match="archive part of the map file"):
        RefinedPanopticMap(label_registry).load(bad)
    with pytest.raises(DataFormatError, match="map file not found"):
        create_map("instant", label_registry).load(tmp_path / "missing.npz")
