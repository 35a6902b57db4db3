"""Convert an RGB-D dataset folder (7-Scenes, NICE-SLAM Replica, ScanNet layout) to a ROS 2 bag.

Writes colour (rgb8), depth, camera info and camera pose topics, plus the 2D panoptic
segmentation and ground-truth topics when the dataset has them (names: docs/dataset_format.md).
A scene with a simulated SLAM estimate (``make-scene --pose-drift``) gets the estimate on the pose
topic and its loop corrections as ``nav_msgs/Path``, as make-scene's own bag.
Frames that cannot be read (e.g. ScanNet frames with an invalid pose) are left out and listed
on stderr. Exit status: 0 on success, 1 when the dataset or the bag cannot be used.

Example:
  panoptic-mapper bag-from-dataset ../shared/data/7scenes_redkitchen_stride4 kitchen.bag \\
      --storage mcap --max-frames 100
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset folder")
    parser.add_argument("out", help="output bag folder (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="bag storage format (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=1, help="keep every N-th frame")
    parser.add_argument("--start", type=int, default=0, help="first frame kept (position)")
    parser.add_argument("--max-frames", type=int, default=None, help="keep at most N frames")
    parser.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1",
                        help="16UC1 millimetres or 32FC1 metres (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import InvalidInputError
    from panoptic_mapper.core.io.bag import write_bag
    from panoptic_mapper.core.io.datasets import open_dataset

    try:
        dataset = open_dataset(args.dataset, stride=args.stride, max_frames=args.max_frames,
                               start=args.start)
        print(f"{dataset.name}: {len(dataset)} frames ({dataset.layout} layout, "
              f"{dataset.intrinsics.width}x{dataset.intrinsics.height}, segmentation: "
              f"{dataset.has_segmentation}, ground truth: {dataset.has_ground_truth})")
        report = write_bag(args.out, dataset, dataset.intrinsics, storage=args.storage,
                           depth_encoding=args.depth_encoding, progress=not args.no_progress,
                           slam_estimate=dataset.slam_estimate)
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for skipped in dataset.skipped:
        print(f"skipped frame {skipped.name}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {report.num_frames} frames to {report.path} ({report.storage})")
    for topic, count in sorted(report.message_counts.items()):
        print(f"  {topic}: {count} messages")
    return 0
