"""Demo (temporary, until the ROS mapping graph exists): dataset -> mcap bag -> frames, checked.

Converts the first frames of the real 7-Scenes ``redkitchen`` sequence (read in place from
``../shared/data/7scenes_redkitchen_stride4``, or from $PANOPTIC_MAPPER_SHARED_DATA) to an mcap
bag, reads the bag back and checks that images, depth, poses and stamps equal the source.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

SCENE = "7scenes_redkitchen_stride4"
ENV_VAR = "PANOPTIC_MAPPER_SHARED_DATA"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "panoptic_mapper_demo"),
                        help="folder for the outputs; a bag left there by an earlier demo run "
                             "is replaced (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=20, help="frames to convert (default: "
                        "%(default)s)")


def find_shared_data() -> Path | None:
    """The shared data folder: $PANOPTIC_MAPPER_SHARED_DATA, else ``../shared/data`` next to the
    source checkout or the current directory."""
    if os.environ.get(ENV_VAR):
        candidates = [Path(os.environ[ENV_VAR])]
    else:
        candidates = [Path(__file__).resolve().parents[2].parent / "shared" / "data",
                      Path.cwd().parent / "shared" / "data"]
    return next((c for c in candidates if (c / SCENE).is_dir()), None)


def remove_previous_bag(bag_path: Path) -> None:
    """Delete the bag of an earlier demo run (only a folder holding just a bag's files)."""
    if not bag_path.is_dir():
        return
    files = list(bag_path.iterdir())
    if all(f.is_file() and (f.name == "metadata.yaml" or f.suffix == ".mcap") for f in files):
        shutil.rmtree(bag_path)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from panoptic_mapper.core.errors import InvalidInputError
    from panoptic_mapper.core.io.bag import read_bag, write_bag
    from panoptic_mapper.core.io.datasets import open_dataset

    shared = find_shared_data()
    if shared is None:
        print(f"error: the demo data '{SCENE}' was not found. Set {ENV_VAR} to the folder that "
              f"contains it (looked next to the repository and in ../shared/data).",
              file=sys.stderr)
        return 1
    if args.frames < 1:
        print("error: --frames must be >= 1", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    bag_path = out_dir / "redkitchen_demo_bag"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_previous_bag(bag_path)
        dataset = open_dataset(shared / SCENE, max_frames=args.frames)
        print(f"source : {dataset.root} ({len(dataset)} frames, {dataset.layout} layout)")
        started = time.perf_counter()
        report = write_bag(bag_path, dataset, dataset.intrinsics, storage="mcap")
        written_s = time.perf_counter() - started
        started = time.perf_counter()
        frames = read_bag(bag_path)
        read_back = list(frames)
        read_s = time.perf_counter() - started
    except (InvalidInputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    source = list(dataset)
    problems = [f"skipped: {s.reason}" for s in dataset.skipped + frames.skipped]
    if len(source) != len(read_back):
        problems.append(f"{len(source)} frames written, {len(read_back)} read back")
    for a, b in zip(source, read_back):
        fa, fb = a.frame, b.frame
        if not (fa.stamp_ns == fb.stamp_ns and np.array_equal(fa.rgb, fb.rgb)
                and np.array_equal(fa.depth_m, fb.depth_m)
                and np.allclose(fa.T_world_cam, fb.T_world_cam, rtol=0.0, atol=1e-12)
                and fa.intrinsics == fb.intrinsics):
            problems.append(f"frame at stamp {fa.stamp_ns} ns differs after the round trip")
    print(f"bag    : {report.path} ({report.num_frames} frames, "
          f"{sum(report.message_counts.values())} messages; written in {written_s:.2f} s, "
          f"read back in {read_s:.2f} s)")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"check  : {len(read_back)} frames read back equal to the source "
          "(rgb, depth, pose, stamp, camera)")
    print(f"outputs: {bag_path}")
    return 0
