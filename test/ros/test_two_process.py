"""Our interfaces across two processes over DDS: topics (PanopticSegmentation, MapInstance) and
the QueryObjects service. The peer is ``two_process_peer.py``; conftest puts both processes in
the same random ROS domain on localhost (the child inherits the environment).
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

from panoptic_mapper.msg import MapInstance as MapInstanceMsg
from panoptic_mapper.msg import PanopticSegmentation
from panoptic_mapper.ros import panoptic_conversions as pconv
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS, SENSOR_QOS
from panoptic_mapper.srv import QueryObjects

pytestmark = pytest.mark.ros

PEER_SCRIPT = Path(__file__).with_name("two_process_peer.py")
STARTUP_TIMEOUT_S = 30.0
DISCOVERY_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def peer():
    """The peer process; ended (stdin closed, then terminate, then kill) even on failure."""
    prefix = f"/pm_two_process_{os.getpid()}"
    process = subprocess.Popen([sys.executable, str(PEER_SCRIPT), "--prefix", prefix],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    try:
        try:
            first = lines.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            first = ""
        if first.strip() != "READY":
            process.kill()
            pytest.fail(f"peer did not start (rc={process.wait()}):\n{process.stderr.read()}")
        yield prefix
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def ros():
    """A node of our own in a private rclpy context, with an executor to spin it."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("two_process_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def spin_until(executor, condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_topics_across_processes(peer, ros, label_registry):
    node, executor = ros
    segmentations, instances = [], []
    node.create_subscription(PanopticSegmentation, f"{peer}/segmentation", segmentations.append,
                             SENSOR_QOS)
    # Subscribed after the peer's single publication: arrives only thanks to TRANSIENT_LOCAL.
    node.create_subscription(MapInstanceMsg, f"{peer}/instance", instances.append,
                             LATCHED_MAP_QOS)
    assert spin_until(executor, lambda: len(segmentations) >= 3 and instances,
                      DISCOVERY_TIMEOUT_S), \
        f"received {len(segmentations)} segmentations, {len(instances)} instances"

    stamps = [pconv.segmentation_from_msg(m).stamp_ns for m in segmentations]
    assert all(s % 50_000_000 == 0 for s in stamps) and stamps == sorted(stamps)
    seg = pconv.segmentation_from_msg(segmentations[-1], label_registry, image_shape=(2, 3))
    np.testing.assert_array_equal(seg.segment_ids, [[0, 1, 1], [2, 2, 0]])
    assert [(s.id, s.label, s.label_id, s.is_thing, s.phrase) for s in seg.segments] == \
        [(1, "chair", 10, True, "office chair"), (2, "wall", 1, False, "")]
    assert segmentations[-1].header.frame_id == "camera"

    instance = pconv.map_instance_from_msg(instances[0])
    assert (instance.id, instance.label, instance.num_observations) == (7, "chair", 70)
    np.testing.assert_allclose(instance.bbox.center_m, [7.0, 0.0, 0.5])
    np.testing.assert_allclose(instance.bbox.size_m, [0.5, 0.5, 1.0])


def _call(node, executor, client, **fields) -> QueryObjects.Response:
    future = client.call_async(QueryObjects.Request(**fields))
    assert spin_until(executor, future.done, DISCOVERY_TIMEOUT_S), f"no answer to {fields}"
    return future.result()


def test_query_objects_service_across_processes(peer, ros):
    node, executor = ros
    client = node.create_client(QueryObjects, f"{peer}/query_objects")
    assert client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S), "service not discovered"

    chairs = _call(node, executor, client, query="chair")
    assert chairs.success
    assert [(i.id, i.label) for i in chairs.instances] == [(7, "chair"), (8, "chair")]
    assert [i.score for i in chairs.instances] == pytest.approx([0.9, 0.6])

    best = _call(node, executor, client, query="chair", max_results=1)
    assert [i.id for i in best.instances] == [7]
    confident = _call(node, executor, client, query="chair", min_score=0.7)
    assert [i.id for i in confident.instances] == [7]
    none = _call(node, executor, client, query="sofa")
    assert none.success and list(none.instances) == []

    empty = _call(node, executor, client, query="  ")
    assert not empty.success and empty.message == "query is empty"
