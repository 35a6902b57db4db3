"""The ROS-free runtime: a refresh never blocks integration, workers keep their CPU share and
survive failing items, and the offline refined map runs the nodes' loop (background training
beside the stream) so that ``eval --method refined`` measures what is deployed."""
from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from panoptic_mapper.core.eval.runner import EvalSource, MethodSpec, evaluate
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate, create_map
from panoptic_mapper.core.types import DatasetSample, PanopticMesh
from panoptic_mapper.runtime.map_session import MapSession
from panoptic_mapper.runtime.prior_sources import SessionPrior
from panoptic_mapper.runtime.streamed_refined import StreamedRefinedMap
from panoptic_mapper.runtime.sync import KeepLatestQueue
from panoptic_mapper.runtime.workers import PeriodicWorker, QueueWorker

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from field_toy_scene import make_toy_scene, one_torch_thread  # noqa: E402,F401 (autouse)


class SlowMeshMap:
    """A stand-in map whose mesh update waits until a frame was integrated meanwhile: if the
    refresh held the session's write lock, integration would wait for it and neither could
    finish."""

    def __init__(self):
        self.integrated = threading.Event()
        self.updating = threading.Event()
        self.num_frames = 0

    def integrate_frame(self, frame, segmentation):
        self.num_frames += 1
        self.integrated.set()
        return IntegrationReport(accepted=True)

    def update_mesh(self):
        self.updating.set()
        assert self.integrated.wait(10.0), "integration was blocked by the refresh"
        return MeshUpdate(changed=True)

    def get_mesh(self):
        return PanopticMesh.empty()

    def get_instances(self):
        return []


def test_a_refresh_never_blocks_integration(label_registry):
    session = MapSession(SlowMeshMap, label_registry)
    refreshed = []
    refresher = threading.Thread(target=lambda: refreshed.append(session.refresh(force=True)))
    refresher.start()
    assert session.map.updating.wait(10.0)  # the refresh is in the middle of the mesh update
    frame = make_toy_scene(num_frames=1, width=16, height=12).frames[0]
    assert session.integrate(frame, None).accepted  # not queued behind the refresh
    refresher.join(10.0)
    assert refreshed and refreshed[0] is not None
    # the snapshot covers what was integrated when the refresh began (nothing); the next one
    # the frame
    assert refreshed[0].num_frames == 0 and session.refresh().num_frames == 1


class SameMeshMap(SlowMeshMap):
    """A map whose mesh never changes (frames that add nothing new to the surface)."""

    MESH = PanopticMesh.empty()

    def update_mesh(self):
        return MeshUpdate(changed=False)

    def get_mesh(self):
        return self.MESH


def test_a_colocated_prior_follows_frames_that_leave_the_mesh_as_it_was(label_registry):
    """Regression (a CI failure): the mapper served 5 of 6 integrated frames because the
    co-located prior's version followed the instant mesh only."""
    session = MapSession(SameMeshMap, label_registry)
    prior = SessionPrior(session)
    frame = make_toy_scene(num_frames=1, width=16, height=12).frames[0]
    seen = []
    for _ in range(2):
        assert session.integrate(frame, None).accepted
        session.refresh()
        seen.append(prior.get_prior_snapshot())
    assert [s.num_frames for s in seen] == [1, 2]
    assert seen[1].version > seen[0].version  # so the mapper serves the second frame too


def test_periodic_worker_keeps_within_its_share():
    starts = []

    def task():
        starts.append(time.monotonic())
        time.sleep(0.1)

    worker = PeriodicWorker("share", period_s=0.01, max_share=0.25, task=task)
    worker.start()
    try:
        deadline = time.monotonic() + 20.0
        while len(starts) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    gaps = np.diff(starts)
    assert len(gaps) >= 3
    # a 0.1 s task at a 25 % share starts at most every 0.4 s (a loaded machine only adds)
    assert gaps.min() >= 0.38, gaps


def test_periodic_worker_puts_a_run_off_while_told_but_not_forever():
    starts = []
    backlog = threading.Event()
    backlog.set()
    worker = PeriodicWorker("defer", period_s=0.01, max_share=1.0,
                            task=lambda: starts.append(time.monotonic()),
                            defer=backlog.is_set, max_defer_s=0.5)
    began = time.monotonic()
    worker.start()
    try:
        deadline = time.monotonic() + 20.0
        while len(starts) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(starts) >= 2
        # every run waited for the backlog, at most max_defer_s (a loaded machine only adds)
        assert starts[0] - began >= 0.5 and starts[1] - starts[0] >= 0.5
        backlog.clear()
        count = len(starts)
        deadline = time.monotonic() + 20.0
        while len(starts) < count + 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(starts) >= count + 5  # no backlog: runs every period again
    finally:
        worker.stop()


def test_queue_worker_reports_a_failing_item_and_goes_on():
    queue = KeepLatestQueue(4)
    handled, errors = [], []

    def handle(item):
        if item == 1:
            raise ValueError("bad item")
        handled.append(item)

    worker = QueueWorker("items", queue, handle, lambda name, exc: errors.append((name, exc)),
                         poll_s=0.01)
    worker.start()
    try:
        for item in range(3):
            queue.put(item)
        deadline = time.monotonic() + 10.0
        while len(handled) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert handled == [0, 2] and errors[0][0] == "items" and "bad item" in str(errors[0][1])
    assert not worker.pending and worker.busy_s > 0


def test_eval_of_the_refined_map_runs_the_node_loop(label_registry):
    """``create_map("refined")`` is the streamed map: the field trains in the background while
    frames are integrated once into the instant map, and the evaluation scores what it serves
    after the step budget (the instant map of the same run beside it)."""
    scene = make_toy_scene(num_frames=16, width=64, height=48)
    samples = [DatasetSample(dataclasses.replace(f, stamp_ns=f.index * 500_000_000), s, gt)
               for f, s, gt in zip(scene.frames, scene.segmentations, scene.ground_truth)]
    config = {"training": {"trainer": {"total_steps": 8}}, "min_keyframes": 2,
              "keyframes": {"min_translation_m": 0.0, "image_scale": 1.0},
              "streaming": {"pace": "none", "training": {"chunk_steps": 4}}}
    made = []

    def refined(registry):
        made.append(create_map("refined", registry, config))
        return made[-1]

    result = evaluate(EvalSource("toy", samples, label_registry, len(samples)),
                      [MethodSpec("instant"), MethodSpec("refined", factory=refined)])
    streamed = made[0]
    assert isinstance(streamed, StreamedRefinedMap)
    status = streamed.training.status()
    assert status.ready and status.progress.step == 8  # trained to the end of its budget
    assert streamed.instant.stats.frames_accepted == 16  # integrated once, into the prior
    assert len(streamed.session.layer.store) == 16
    assert streamed.session.serves_field
    for name in ("instant", "refined"):
        assert result.methods[name].panoptic is not None
        assert result.methods[name].frames_rejected == 0
