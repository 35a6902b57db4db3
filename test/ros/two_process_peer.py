"""The other process of ``test_two_process.py``: publishes panoptic messages, serves QueryObjects.

Usage: ``python two_process_peer.py --prefix /pm_test_123``. Prints ``READY`` once its publishers
and service exist, then runs until its stdin closes (the test's way of ending it), it receives
SIGTERM/SIGINT, or ``--timeout`` seconds pass (so it never outlives a crashed test).

What it sends (the test checks these values):
  * ``<prefix>/segmentation`` (PanopticSegmentation, SENSOR_QOS) at 20 Hz: a 2x3 id image
    ``[[0, 1, 1], [2, 2, 0]]``, segments 1 = chair (10, thing, 0.9, "office chair") and
    2 = wall (1, stuff, 0.5, "wall"); message ``k`` has stamp ``k * 50 ms``, frame ``camera``.
  * ``<prefix>/instance`` (MapInstance, LATCHED_MAP_QOS) once: chair id 7 (see ``INSTANCES``).
  * ``<prefix>/query_objects`` (QueryObjects): instances whose label or phrase equals the query,
    score = confidence, best first, then ``min_score`` and ``max_results`` applied.
"""
from __future__ import annotations

import argparse
import sys
import threading

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException

from panoptic_mapper.core.types import (MapInstance, OrientedBox, PanopticSegmentation2D,
                                        Segment)
from panoptic_mapper.msg import MapInstance as MapInstanceMsg
from panoptic_mapper.msg import PanopticSegmentation
from panoptic_mapper.ros import panoptic_conversions as pconv
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS, SENSOR_QOS
from panoptic_mapper.srv import QueryObjects


def _instance(instance_id: int, label: str, label_id: int, confidence: float) -> MapInstance:
    return MapInstance(id=instance_id, label=label, label_id=label_id, is_thing=True,
                       confidence=confidence, centroid_m=[instance_id, 0.0, 0.5],
                       bbox=OrientedBox([instance_id, 0.0, 0.5], np.eye(3), [0.5, 0.5, 1.0]),
                       num_observations=instance_id * 10)


INSTANCES = (_instance(7, "chair", 10, 0.9), _instance(8, "chair", 10, 0.6),
             _instance(9, "mug", 18, 0.8))


def segmentation(index: int) -> PanopticSegmentation2D:
    return PanopticSegmentation2D(
        np.array([[0, 1, 1], [2, 2, 0]]),
        (Segment(1, "chair", 10, True, 0.9, "office chair"), Segment(2, "wall", 1, False, 0.5)),
        stamp_ns=index * 50_000_000)


def answer_query(request: QueryObjects.Request,
                 response: QueryObjects.Response) -> QueryObjects.Response:
    query = request.query.strip().lower()
    if not query:
        response.success, response.message = False, "query is empty"
        return response
    hits = sorted((i for i in INSTANCES if i.label == query), key=lambda i: -i.confidence)
    hits = [i for i in hits if i.confidence >= request.min_score]
    if request.max_results:
        hits = hits[:request.max_results]
    messages = []
    for instance in hits:
        msg = pconv.map_instance_msg_from_core(instance)
        msg.score = instance.confidence
        messages.append(msg)
    response.success, response.message, response.instances = True, "", messages
    return response


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("two_process_peer")
    seg_pub = node.create_publisher(PanopticSegmentation, f"{args.prefix}/segmentation",
                                    SENSOR_QOS)
    inst_pub = node.create_publisher(MapInstanceMsg, f"{args.prefix}/instance", LATCHED_MAP_QOS)
    node.create_service(QueryObjects, f"{args.prefix}/query_objects", answer_query)
    inst_pub.publish(pconv.map_instance_msg_from_core(INSTANCES[0]))
    counter = iter(range(1, 1_000_000))
    node.create_timer(
        0.05, lambda: seg_pub.publish(pconv.segmentation_msg_from_core(
            segmentation(next(counter)), "camera")))

    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the test closed our stdin or died
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    deadline = node.get_clock().now().nanoseconds + int(args.timeout * 1e9)
    print("READY", flush=True)
    try:
        while not stop.is_set() and node.get_clock().now().nanoseconds < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
