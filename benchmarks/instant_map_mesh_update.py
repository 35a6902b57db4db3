"""Cost of ``update_mesh`` while the instant map grows, and how much it stalls integration.

Replays ``shared/data/7scenes_redkitchen_stride4`` (250 real frames, 640x480, 2 cm voxels) with
the synthetic world-consistent 2D input of ``instant_map_speed.py`` (built before each frame's
timing starts), through the public map API only, so the same script measures any version of
the map code (run it with ``PYTHONPATH`` pointing at another checkout for a before/after).

* ``--mode sequential`` (what the ROS node's worker does: one thread integrates and, every
  ``--every`` frames, refreshes): per-call ``update_mesh`` time, first call (a full meshing)
  apart, plus one final ``update_mesh`` after the last frame.
* ``--mode threaded``: a writer thread integrates every frame back to back while a second
  thread calls ``update_mesh`` every ``--period`` seconds; reports the writer's per-frame
  ``integrate_frame`` time over frames that overlapped a mesh update and over frames that did
  not (a stall shows as the difference), and the mesh update times.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/instant_map_mesh_update.py \\
      [--mode sequential|threaded] [--every 8] [--period 1.0] [--frames 250]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instant_map_speed import DEFAULT_DATA, synthetic_segmentation  # noqa: E402


def load_inputs(data: str, frames: int, registry):
    """(frame, segmentation) pairs, decoded and built one at a time (not timed)."""
    from panoptic_mapper.core.io.datasets import open_dataset

    rng = np.random.default_rng(0)
    for sample in open_dataset(data, max_frames=frames):
        yield sample.frame, synthetic_segmentation(sample.frame, registry, rng)


def stats(values_s: list[float]) -> str:
    v = np.asarray(values_s) * 1e3
    if v.size == 0:
        return "n/a"
    return (f"median {np.median(v):6.1f} ms  p95 {np.percentile(v, 95):6.1f} ms  "
            f"max {v.max():6.1f} ms  (n={v.size})")


def sequential(inputs, mapper, every: int) -> None:
    integrate, updates, first = [], [], None
    for i, (frame, seg) in enumerate(inputs):
        t0 = time.perf_counter()
        mapper.integrate_frame(frame, seg)
        integrate.append(time.perf_counter() - t0)
        if i % every == every - 1:
            t0 = time.perf_counter()
            update = mapper.update_mesh()
            took = time.perf_counter() - t0
            if first is None:
                first = took
            else:
                updates.append(took)
    t0 = time.perf_counter()
    update = mapper.update_mesh()
    final = time.perf_counter() - t0
    print(f"integrate_frame           {stats(integrate)}")
    print(f"first update_mesh (all blocks) {first * 1e3:.1f} ms")
    print(f"update_mesh every {every} frames {stats(updates)}")
    print(f"final update_mesh         {final * 1e3:.1f} ms ({update.num_vertices} vertices, "
          f"{update.num_triangles} triangles)")


def threaded(inputs, mapper, period_s: float) -> None:
    windows: list[tuple[float, float]] = []
    frames: list[tuple[float, float]] = []
    done = threading.Event()

    def mesh_loop() -> None:
        while not done.wait(period_s):
            t0 = time.perf_counter()
            mapper.update_mesh()
            windows.append((t0, time.perf_counter()))

    reader = threading.Thread(target=mesh_loop)
    reader.start()
    for frame, seg in inputs:
        t0 = time.perf_counter()
        mapper.integrate_frame(frame, seg)
        frames.append((t0, time.perf_counter()))
    done.set()
    reader.join()
    starts = np.array([w[0] for w in windows])
    ends = np.array([w[1] for w in windows])
    overlapped, alone = [], []
    for t0, t1 in frames:
        hit = np.any((starts < t1) & (ends > t0)) if windows else False
        (overlapped if hit else alone).append(t1 - t0)
    print(f"integrate_frame, no mesh update running  {stats(alone)}")
    print(f"integrate_frame, overlapping an update   {stats(overlapped)}")
    print(f"update_mesh every {period_s:.1f} s (from a second thread) "
          f"{stats([e - s for s, e in windows])}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--mode", choices=("sequential", "threaded"), default="sequential")
    parser.add_argument("--every", type=int, default=8,
                        help="sequential: frames between mesh updates (8 = 1 Hz at 7.5 Hz)")
    parser.add_argument("--period", type=float, default=1.0,
                        help="threaded: seconds between mesh updates")
    args = parser.parse_args(argv)

    from panoptic_mapper.core.labels import LabelRegistry
    from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap

    print("load average at start (1, 5, 15 min): %.1f %.1f %.1f" % os.getloadavg())
    registry = LabelRegistry.default()
    inputs = load_inputs(args.data, args.frames, registry)
    mapper = InstantPanopticMap.from_config({"tsdf": {"block_count": 4000}}, registry)
    code = Path(sys.modules[type(mapper).__module__].__file__).parents[3]
    print(f"up to {args.frames} frames of {args.data}; map code from {code}")
    if args.mode == "sequential":
        sequential(inputs, mapper, args.every)
    else:
        threaded(inputs, mapper, args.period)
    print("load average at end (1, 5, 15 min): %.1f %.1f %.1f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
