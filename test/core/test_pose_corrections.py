"""Loop-closure corrections: the map follows the corrected poses and keeps its instance ids."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.mapping.base import create_map
from panoptic_mapper.core.mapping.frame_store import FrameStore, FrameStoreConfig
from panoptic_mapper.core.mapping.pose_corrections import (KeyframeCorrection, check_correction,
                                                           corrected_poses)
from panoptic_mapper.runtime.map_corrections import MapCorrector
from panoptic_mapper.runtime.map_session import MapSession

sys.path.insert(0, str(Path(__file__).parent))
from box_scene import NUM_FRAMES, Scene, drift, frame, pose  # noqa: E402

CONFIG = {"tsdf": {"block_count": 3000}}


@pytest.fixture(scope="module")
def scene(label_registry):
    return Scene(label_registry)


def views(scene, metres_per_frame, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(NUM_FRAMES):
        depth, rgb, labels, instances = scene.render(pose(k))
        f = frame(k, depth, rgb)
        f.T_world_cam = drift(k, metres_per_frame) @ pose(k)
        out.append((f, scene.segmentation(labels, instances, rng)))
    return out


def session_of(registry, frames, store_config=None):
    session = MapSession(lambda: create_map("instant", registry, CONFIG), registry,
                         frame_store=FrameStore(store_config or FrameStoreConfig(min_distance_m=0.0,
                                                                                 min_angle_deg=0.0)))
    for f, seg in frames:
        assert session.integrate(f, seg).accepted
    session.refresh(force=True)
    return session


def true_keyframes(stamp_ns=10**12, every=3):
    ks = list(range(0, NUM_FRAMES, every))
    return KeyframeCorrection(stamp_ns, np.array([k * 100_000_000 for k in ks], np.int64),
                              np.stack([pose(k) for k in ks]))


def surface_error_m(session, reference):
    a = session.snapshot.mesh.vertices_m
    b = reference.snapshot.mesh.vertices_m
    return float(np.median(cKDTree(b).query(a)[0]))


def things(session):
    return {i.id: i for i in session.snapshot.instances if i.is_thing}


def test_corrected_poses_interpolate_between_keyframes():
    old = np.stack([np.eye(4)] * 3)
    old[:, 0, 3] = [0.0, 1.0, 2.0]
    new = old.copy()
    new[:, 1, 3] = [0.0, 0.2, 0.4]  # the path was bent by 0.2 m per metre
    correction = KeyframeCorrection(5, np.array([0, 20]), new[[0, 2]])
    matched = check_correction(correction, np.array([0, 10, 20]), old)
    moved = corrected_poses(matched, np.array([0, 10, 20, 30]), np.concatenate([old, old[2:]]))
    np.testing.assert_allclose(moved[:, 1, 3], [0.0, 0.2, 0.4, 0.4], atol=1e-9)
    assert matched.max_shift_m == pytest.approx(0.4)


def test_a_correction_moves_the_fused_surface_and_keeps_the_ids(label_registry, scene):
    truth = session_of(label_registry, views(scene, 0.0))
    drifted = session_of(label_registry, views(scene, 0.02))
    before_error = surface_error_m(drifted, truth)
    ids_before = things(drifted)
    corrector = MapCorrector(drifted)
    report = corrector.apply(true_keyframes())
    drifted.refresh(force=True)
    after_error = surface_error_m(drifted, truth)
    assert report.frames_fused == NUM_FRAMES and report.frames_rejected == 0
    assert after_error < 0.5 * before_error and after_error < 0.02, (before_error, after_error)
    after = things(drifted)
    # the objects the truth map holds, once each, under ids the planner saw before
    assert len(after) == len(things(truth))
    assert set(after) <= set(ids_before)
    for i in after:
        assert after[i].label == ids_before[i].label
    assert corrector.stats.applied == 1 and corrector.stats.last_frames_fused == NUM_FRAMES


def test_objects_doubled_by_drift_are_merged_under_the_older_id(label_registry, scene):
    truth = session_of(label_registry, views(scene, 0.0))
    drifted = session_of(label_registry, views(scene, 0.05))
    doubled = things(drifted)
    assert len(doubled) > len(things(truth))  # the drift made second copies
    report = MapCorrector(drifted).apply(true_keyframes())
    drifted.refresh(force=True)
    after = things(drifted)
    assert len(after) == len(things(truth))
    assert set(after) <= set(doubled)
    for old, kept in report.ids.merged.items():
        assert kept < old and kept in after and old not in after
    # a merged id still resolves to the object it was merged into
    table = drifted.map.tracker.table
    for old, kept in report.ids.merged.items():
        assert table.resolve(np.array([old]))[0] == kept


def test_bad_corrections_are_refused_and_leave_the_map_unchanged(label_registry, scene):
    session = session_of(label_registry, views(scene, 0.02)[:12])
    corrector = MapCorrector(session)
    live = session.map
    good = true_keyframes()
    broken = np.stack([pose(0)] * 2)
    broken[1, :3, :3] *= 1.5
    cases = {
        "not a rigid": KeyframeCorrection(good.stamp_ns, np.array([0, 100_000_000]), broken),
        "increase": KeyframeCorrection(good.stamp_ns, np.array([100_000_000, 0]),
                                       np.stack([pose(1), pose(0)])),
        "matches a fused frame": KeyframeCorrection(good.stamp_ns, np.array([50_000_000, 50_000_007]),
                                                    np.stack([pose(0), pose(1)])),
        "K >= 1": KeyframeCorrection(good.stamp_ns, np.zeros(0, np.int64), np.zeros((0, 4, 4))),
    }
    for words, correction in cases.items():
        with pytest.raises(InvalidInputError, match=words):
            corrector.submit(correction)
    assert session.map is live and corrector.stats.rejected == len(cases)
    corrector.apply(KeyframeCorrection(good.stamp_ns, good.keyframe_stamps_ns[:4],
                                       good.T_world_keyframe[:4]))
    swapped = session.map
    with pytest.raises(InvalidInputError, match="out of order"):
        corrector.apply(KeyframeCorrection(good.stamp_ns - 1, good.keyframe_stamps_ns[:4],
                                           good.T_world_keyframe[:4]))
    assert session.map is swapped


def test_a_loaded_map_refuses_corrections(label_registry, scene, tmp_path):
    session = session_of(label_registry, views(scene, 0.0)[:6])
    session.save(tmp_path / "m.npz")
    session.load(tmp_path / "m.npz")
    with pytest.raises(InvalidInputError, match="loaded from a file"):
        MapCorrector(session).submit(true_keyframes())


def test_frames_that_arrive_during_a_correction_are_kept(label_registry, scene):
    frames = views(scene, 0.02)
    session = session_of(label_registry, frames[:24])
    corrector = MapCorrector(session)
    corrector.worker.start()
    try:
        corrector.submit(true_keyframes(every=6))
        for f, seg in frames[24:]:  # integrated while the worker rebuilds
            f.T_world_cam = pose(f.index)  # the live poses are corrected from now on
            assert session.integrate(f, seg).accepted
        deadline = threading.Event()
        for _ in range(600):
            if corrector.stats.applied:
                break
            deadline.wait(0.1)
    finally:
        corrector.worker.stop()
    assert corrector.stats.applied == 1, corrector.stats.last_error
    assert session.frame_store.num_frames == NUM_FRAMES
    stamps, poses = session.frame_store.get_pose_history()
    np.testing.assert_allclose(poses[-1], pose(NUM_FRAMES - 1), atol=1e-9)  # not moved again
    assert corrector.stats.last_frames_fused == NUM_FRAMES


def test_the_store_keeps_frames_by_motion_and_bounds_its_memory(label_registry, scene):
    store = FrameStore(FrameStoreConfig(min_distance_m=0.5, min_angle_deg=90.0, max_frames=4))
    kept = [store.add(f, seg, None) for f, seg in views(scene, 0.0)]
    assert kept[0] and not all(kept)
    assert store.get_pose_history()[0].size == NUM_FRAMES
    assert store.num_frames <= 4
    frames, poses = store.get_frames()
    assert frames[0].rgb.shape == (120, 160, 3)  # colour at half resolution
    restored = frames[0].to_frame(poses[0])
    original, segmentation = views(scene, 0.0)[0]
    assert restored.rgb.shape == original.rgb.shape
    np.testing.assert_allclose(restored.depth_m, original.depth_m, atol=5e-4)  # millimetres
    np.testing.assert_array_equal(frames[0].segmentation.segment_ids,
                                  segmentation.segment_ids)  # segments kept whole
    assert store.nbytes > 0


def test_ids_the_live_map_creates_during_a_rebuild_never_collide(label_registry, scene,
                                                                  monkeypatch):
    """Regression (graph benchmark): the live map went on creating ids while the rebuild ran,
    the rebuilt map had allocated the same numbers, and renaming to one of them failed."""
    from panoptic_mapper.core.mapping import map_rebuild
    from panoptic_mapper.core.tracking.instances import InstanceStatus

    monkeypatch.setattr(map_rebuild, "ID_HEADROOM", 0)  # force the collision
    session = session_of(label_registry, views(scene, 0.0))
    old = session.map
    frames, poses = session.frame_store.get_frames()
    rebuilt = session.new_map()
    _, votes = map_rebuild.rebuild_map(rebuilt, frames, poses, old)
    clash = min(r.id for r in rebuilt.tracker.table.alive(things_only=True))
    while old.tracker.table.next_id <= clash:  # the live map's new objects meanwhile
        record = old.tracker.table.create(True, 0, status=InstanceStatus.CONFIRMED)
    # ... one of which the kept frames' segments voted for
    segment, _, samples = frames[-1].instance_votes[0]
    frames[-1].instance_votes = np.vstack([frames[-1].instance_votes,
                                           [[segment, record.id, 100 * samples]]])
    ids = map_rebuild.inherit_instance_ids(old, rebuilt, frames, votes)
    assert clash not in ids.kept and clash not in ids.merged
    table = rebuilt.tracker.table  # the rebuilt instance numbered ``clash`` still resolves
    assert table.get(int(table.resolve(np.array([clash]))[0])).alive


def test_the_rebuild_waits_while_live_frames_queue_up(label_registry, scene):
    session = session_of(label_registry, views(scene, 0.02)[:8])
    backlog = iter([3, 2, 1])  # live frames waiting: the first rebuilt frame waits 3 polls
    polls = []

    def frames_waiting():
        polls.append(1)
        return next(backlog, 0)

    corrector = MapCorrector(session, frames_waiting=frames_waiting)
    report = corrector.apply(true_keyframes())
    assert report.frames_fused == 8
    assert len(polls) == 8 + 3  # one look per frame, plus the three while the backlog lasted
