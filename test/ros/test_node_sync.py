"""The stamp synchroniser and the keep-latest queue, driven by hand (no ROS, no spinning)."""
import threading
import time

import pytest

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.runtime.sync import (KeepLatestQueue, LatePartnerReport, StampSynchronizer,
                                      StreamSpec, SyncConfig)

MS = 1_000_000  # ns


class FakeClock:
    """Wall time that advances 10 s per reading: every wait condition holds at once."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


def make_sync(clock=None, **overrides) -> StampSynchronizer:
    config = SyncConfig(**{"pose_tolerance_s": 0.02, "max_wait_s": 1.0, **overrides})
    return StampSynchronizer.for_rgbd(config, clock=clock or FakeClock())


def feed_frame(sync, stamp_ns, skip=(), pose_stamp_ns=None):
    """Offer every stream of one frame (except ``skip``); returns all results' frames/drops."""
    frames, drops = [], []
    for stream in ("camera_info", "segmentation", "depth", "rgb", "pose"):
        if stream in skip:
            continue
        stamp = pose_stamp_ns if stream == "pose" and pose_stamp_ns is not None else stamp_ns
        result = sync.add(stream, stamp, f"{stream}@{stamp}")
        frames += result.frames
        drops += result.drops
    return frames, drops


def test_exact_frame_is_emitted_once_whatever_the_arrival_order():
    sync = make_sync()
    order = ["pose", "rgb", "segmentation", "camera_info", "depth"]
    emitted = []
    for stream in order:
        result = sync.add(stream, 100 * MS, stream)
        assert not result.drops
        emitted += result.frames
    assert len(emitted) == 1
    frame = emitted[0]
    assert frame.stamp_ns == 100 * MS
    assert frame.items == {s: s for s in order}
    assert frame.stamps_ns["pose"] == 100 * MS


def test_nearest_pose_within_tolerance_waits_for_a_pose_at_or_after_the_frame():
    sync = make_sync(pose_tolerance_s=0.02)
    for stream in ("rgb", "depth", "segmentation", "camera_info"):
        assert not sync.add(stream, 114 * MS, stream).frames
    assert not sync.add("pose", 100 * MS, "p100").frames
    assert not sync.add("pose", 110 * MS, "p110").frames  # 4 ms away, but 120 may be closer
    result = sync.add("pose", 120 * MS, "p120")            # 6 ms away: 110 wins
    assert [f.items["pose"] for f in result.frames] == ["p110"]
    assert result.frames[0].stamps_ns["pose"] == 110 * MS


def test_pose_outside_tolerance_drops_the_frame_as_missing_pose():
    sync = make_sync(pose_tolerance_s=0.005)
    frames, drops = feed_frame(sync, 100 * MS, pose_stamp_ns=150 * MS)
    assert frames == []
    assert [(d.kind, d.stamp_ns) for d in drops] == [("missing_pose", 100 * MS)]


def test_frames_without_segmentation_are_dropped_when_a_later_segmentation_arrives():
    sync = make_sync()
    frames1, drops1 = feed_frame(sync, 100 * MS, skip=("segmentation",))
    assert frames1 == [] and drops1 == []  # still waiting for a segmentation
    frames2, drops2 = feed_frame(sync, 200 * MS)
    assert [f.stamp_ns for f in frames2] == [200 * MS]
    assert [(d.kind, d.stamp_ns) for d in drops2] == [("missing_segmentation", 100 * MS)]


def test_missing_camera_info_expires_after_max_wait():
    sync = make_sync(max_wait_s=1.0)
    drops = []
    for i in range(4):  # 0.0, 0.5, 1.0, 1.5 s
        frames, d = feed_frame(sync, 10 * MS + i * 500 * MS, skip=("camera_info",))
        assert frames == []
        drops += d
    # only the first frame is more than 1 s behind the newest RGB stamp (1.51 s)
    assert [(d.kind, d.stamp_ns) for d in drops] == [("missing_camera_info", 10 * MS)]
    result = sync.add("camera_info", 0, "ci")  # the latest camera info serves every frame
    assert [f.stamp_ns for f in result.frames] == [510 * MS, 1010 * MS, 1510 * MS]


def test_stale_and_duplicate_stamps_are_reported():
    sync = make_sync()
    frames, _ = feed_frame(sync, 500 * MS)
    assert len(frames) == 1
    result = sync.add("rgb", 400 * MS, "old")
    assert [d.kind for d in result.drops] == ["stale_stamp"]
    assert "0.100 s older" in result.drops[0].detail
    result = sync.add("depth", 500 * MS, "again")
    assert [d.kind for d in result.drops] == ["stale_stamp"]
    assert "not newer than the previous item" in result.drops[0].detail


def test_time_jump_back_resets_and_keeps_working():
    sync = make_sync(max_wait_s=1.0, time_jump_back_s=5.0)
    frames, _ = feed_frame(sync, 60_000 * MS)
    assert len(frames) == 1
    frames, drops = feed_frame(sync, 1_000 * MS)  # a bag loop restarts at an early stamp
    assert [d.kind for d in drops] == ["time_jump_back"]
    assert [f.stamp_ns for f in frames] == [1_000 * MS]


def test_orphan_depth_is_reported_as_missing_rgb_after_max_wait():
    sync = make_sync(max_wait_s=1.0)
    assert not sync.add("depth", 100 * MS, "lonely").drops
    drops = []
    for i in range(1, 4):
        _, d = feed_frame(sync, 100 * MS + i * 600 * MS)
        drops += d
    assert ("missing_rgb", "depth", 100 * MS) in [(d.kind, d.stream, d.stamp_ns) for d in drops]


def test_late_callbacks_do_not_lose_frames_while_wall_time_is_short():
    wall = [0.0]
    sync = make_sync(clock=lambda: wall[0], max_wait_s=1.0)
    drops = []
    for i in range(4):  # 1.5 s of message time without the pose stream, in 0.1 s of wall time
        frames, d = feed_frame(sync, 10 * MS + i * 500 * MS, skip=("pose",))
        drops += d
        wall[0] += 0.03
    assert drops == []  # message time alone does not expire a frame
    frames = sync.add("pose", 10 * MS, "late pose").frames
    assert [f.stamp_ns for f in frames] == [10 * MS]
    wall[0] += 5.0  # now the other frames have waited long enough too
    result = sync.add("rgb", 2100 * MS, "rgb")
    assert sorted(d.kind for d in result.drops) == ["missing_pose"] * 2


def test_pending_frames_are_bounded():
    sync = StampSynchronizer([StreamSpec("rgb", "key"), StreamSpec("depth", "nearest")],
                             max_wait_s=100.0, max_pending=3, time_jump_back_s=200.0,
                             clock=FakeClock())
    drops = []
    for i in range(5):
        drops += sync.add("rgb", (i + 1) * MS, i).drops
    assert [(d.kind, d.stamp_ns) for d in drops] == [("overflow", 1 * MS), ("overflow", 2 * MS)]
    result = sync.add("depth", 5 * MS, "d5")
    assert [f.stamp_ns for f in result.frames] == [5 * MS]
    assert sorted(d.kind for d in result.drops) == ["missing_depth", "missing_depth"]


def test_generic_exact_matching_of_ground_truth_streams():
    sync = StampSynchronizer([StreamSpec("rgb", "key"), StreamSpec("labels", "nearest"),
                              StreamSpec("instances", "nearest")])
    assert not sync.add("labels", 7, "L").frames
    assert not sync.add("rgb", 7, "R").frames
    frames = sync.add("instances", 7, "I").frames
    assert frames[0].items == {"rgb": "R", "labels": "L", "instances": "I"}


def test_config_and_stream_errors_name_the_field():
    with pytest.raises(ConfigError, match="time_jump_back_s"):
        SyncConfig(max_wait_s=3.0, time_jump_back_s=2.0)
    with pytest.raises(ConfigError, match="streams"):
        StampSynchronizer([StreamSpec("a", "nearest")])
    with pytest.raises(ConfigError, match="stream"):
        make_sync().add("thermal", 0, None)


def feed_slow_segmenter(sync, wall, num_frames=51, seg_delay_frames=50):
    """10 Hz frames (stamp (i + 1) * 100 ms, arriving at wall time i * 0.1 s) whose other inputs
    come at once, and the segmentation of frame 0 then 1 only ``seg_delay_frames`` frames
    later, as from a segmenter that takes 5 s per image. Returns (frames, drops)."""
    frames, drops = [], []
    for i in range(num_frames):
        wall[0] = i * 0.1
        out, d = feed_frame(sync, (i + 1) * 100 * MS, skip=("segmentation",))
        frames += out
        drops += d
    for j in range(2):
        wall[0] = (seg_delay_frames + j) * 0.1
        result = sync.add("segmentation", (j + 1) * 100 * MS, f"seg{j}")
        frames += result.frames
        drops += result.drops
    return frames, drops


def test_a_partner_later_than_max_wait_is_reported_as_late_with_its_delay():
    wall = [0.0]
    sync = make_sync(clock=lambda: wall[0], max_wait_s=1.0)
    frames, drops = feed_slow_segmenter(sync, wall)
    assert frames == []
    late = [d for d in drops if d.kind.startswith("late_")]
    assert [(d.kind, d.stream, d.stamp_ns) for d in late] == [
        ("late_segmentation", "segmentation", 100 * MS),
        ("late_segmentation", "segmentation", 200 * MS)]
    # frame 0 came at wall 0.0 s, its segmentation at 5.0 s, after 50 more RGB images
    assert late[0].delay_s == pytest.approx(5.0)
    assert late[0].frames_behind == 50
    assert late[1].delay_s == pytest.approx(5.0) and late[1].frames_behind == 49
    assert "max_wait_s (1 s)" in late[0].detail and "max_pending (60 frames)" in late[0].detail
    # the frames themselves expired as missing their segmentation; nothing else is reported
    assert {d.kind for d in drops} == {"missing_segmentation", "late_segmentation"}


def test_limits_above_the_measured_delay_keep_the_frames():
    wall = [0.0]
    sync = make_sync(clock=lambda: wall[0], max_wait_s=6.0, time_jump_back_s=10.0)
    frames, drops = feed_slow_segmenter(sync, wall)
    assert [f.stamp_ns for f in frames] == [100 * MS, 200 * MS]
    assert drops == []


def test_only_the_streams_a_dropped_frame_waited_for_count_as_late():
    wall = [0.0]
    sync = StampSynchronizer([StreamSpec("rgb", "key"), StreamSpec("depth", "nearest"),
                              StreamSpec("seg", "nearest")],
                             max_wait_s=1.0, max_pending=2, time_jump_back_s=5.0,
                             clock=lambda: wall[0])
    for i in range(4):  # depth at once, no segmentation: frames 0 and 1 overflow
        sync.add("rgb", (i + 1) * MS, i)
        sync.add("depth", (i + 1) * MS, i)
    wall[0] = 0.5
    result = sync.add("seg", 1 * MS, "s0")
    assert [(d.kind, d.frames_behind) for d in result.drops] == [("late_seg", 3)]
    assert result.drops[0].delay_s == pytest.approx(0.5)
    result = sync.add("seg", 3 * MS, "s2")  # frame 2 still waits: it leaves normally
    assert [f.stamp_ns for f in result.frames] == [3 * MS]
    assert [d.kind for d in result.drops] == []
    assert [d.kind for d in sync.add("depth", 4 * MS, "again").drops] == ["stale_stamp"]


def test_late_partner_report_names_the_limits_and_is_rate_limited():
    wall = [0.0]
    sync = make_sync(clock=lambda: wall[0], max_wait_s=1.0)
    _, drops = feed_slow_segmenter(sync, wall)
    late = [d for d in drops if d.kind.startswith("late_")]
    now = [100.0]
    report = LatePartnerReport(SyncConfig(max_wait_s=1.0), period_s=30.0, clock=lambda: now[0])
    warning = report.record(late[0])
    assert warning is not None
    for text in ("segmentation arrives too late", "the frame at 0.100 s", "came 5.0 s and 50",
                 "sync.max_wait_s = 1 s", "sync.max_pending = 60", "1 late so far",
                 "raise sync.max_wait_s above 5.0 s (and sync.time_jump_back_s above that) and "
                 "sync.max_pending above 50"):
        assert text in warning, text
    now[0] += 29.0
    assert report.record(late[1]) is None  # within the period: counted only
    assert report.counts == {"segmentation": 2}
    now[0] += 1.0
    assert "3 late so far: segmentation=3" in report.record(late[1])


def test_keep_latest_queue_drops_the_oldest_and_counts():
    queue = KeepLatestQueue[int](2)
    assert queue.put(1) is None and queue.put(2) is None
    assert queue.put(3) == 1
    assert (queue.num_put, queue.num_dropped, len(queue)) == (3, 1, 2)
    assert queue.get(0) == 2 and queue.get(0) == 3
    assert queue.get(0.01) is None
    queue.put(4)
    assert queue.clear() == 1 and queue.num_dropped == 2


def test_keep_latest_queue_close_wakes_a_waiting_consumer():
    queue = KeepLatestQueue[int](1)
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get(5.0)))
    worker.start()
    time.sleep(0.05)
    queue.close()
    worker.join(2.0)
    assert not worker.is_alive() and got == [None]
    with pytest.raises(RuntimeError):
        queue.put(1)
    with pytest.raises(ConfigError, match="queue_size"):
        KeepLatestQueue(0)
