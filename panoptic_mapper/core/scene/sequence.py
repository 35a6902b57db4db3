"""Frame streams of synthetic scenes: a trajectory rendered (and segmented) as dataset samples.

:func:`render_sequence` yields :class:`DatasetSample`\\ s in trajectory order, computed in this
process or, with ``workers > 1``, in worker processes (each builds its own ray-casting scene; at
most two batches per worker are in flight, so memory stays bounded when the consumer, e.g. a
dataset writer, is slower). The output does not depend on ``workers``: every random draw is keyed
by the seed and the frame index (renderer) or stamp (emulator).

Owns: :func:`render_sequence` and its worker-process plumbing.
Does not own: rendering (``renderer``), emulation (``core/segmentation/emulator``), writing.
"""
from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from typing import Iterator

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.scene.generator import SyntheticScene
from panoptic_mapper.core.scene.renderer import RenderConfig, SceneRenderer
from panoptic_mapper.core.scene.trajectory import CameraTrajectory
from panoptic_mapper.core.segmentation.base import SegmentationRequest, SegmenterBackend
from panoptic_mapper.core.types import DatasetSample, RgbdFrame


def render_sequence(scene: SyntheticScene, trajectory: CameraTrajectory,
                    config: RenderConfig | None = None,
                    segmenter: SegmenterBackend | None = None,
                    workers: int = 1) -> Iterator[DatasetSample]:
    """Render every pose of a trajectory as a dataset sample (no disk involved).

    Args:
        scene: the scene to render.
        trajectory: camera poses and stamps.
        config: rendering parameters (default: 640x480, depth noise on).
        segmenter: when given (e.g. the Grounded-SAM emulator), each sample carries its 2D
            panoptic segmentation of the frame, computed from the frame's ground truth. With
            ``workers > 1`` it must be picklable.
        workers: processes that render (and segment) in parallel; 1 = this process.

    Yields:
        :class:`DatasetSample` with ``frame`` (RGB, sensor depth, pose, stamp, index),
        ``ground_truth`` and, with a segmenter, ``segmentation``.
    """
    if int(workers) < 1:
        raise InvalidInputError("workers", workers, "must be >= 1", kind="config")
    config = config or RenderConfig()
    batches = [list(range(start, min(start + config.frames_per_batch, len(trajectory))))
               for start in range(0, len(trajectory), config.frames_per_batch)]
    jobs = [(b, trajectory.T_world_cam[b], trajectory.stamps_ns[b]) for b in batches]
    if workers == 1:
        renderer = SceneRenderer(scene, config)
        for job in jobs:
            yield from _render_batch(renderer, segmenter, *job)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe with threaded libraries
    with context.Pool(workers, initializer=_init_worker,
                      initargs=(scene, config, segmenter)) as pool:
        queue = iter(jobs)
        pending = deque(pool.apply_async(_worker_batch, job)
                        for job in itertools.islice(queue, 2 * workers))
        while pending:
            samples = pending.popleft().get()
            job = next(queue, None)
            if job is not None:
                pending.append(pool.apply_async(_worker_batch, job))
            yield from samples


def _render_batch(renderer: SceneRenderer, segmenter: SegmenterBackend | None,
                  indices: list[int], poses: np.ndarray, stamps: np.ndarray
                  ) -> list[DatasetSample]:
    views = renderer.render_batch(list(poses), indices)
    samples = []
    for i, T, stamp, view in zip(indices, poses, stamps, views):
        frame = RgbdFrame(stamp_ns=int(stamp), rgb=view.rgb, depth_m=view.depth_m,
                          T_world_cam=T, intrinsics=renderer.intrinsics, index=i)
        gt = view.ground_truth
        seg = None
        if segmenter is not None:
            seg = segmenter.segment(SegmentationRequest(rgb=view.rgb, stamp_ns=int(stamp),
                                                        depth_m=view.depth_m, ground_truth=gt))
        samples.append(DatasetSample(frame=frame, segmentation=seg, ground_truth=gt))
    return samples


_WORKER: dict = {}
"""Per-process state of a worker: its renderer and segmenter."""


def _init_worker(scene: SyntheticScene, config: RenderConfig,
                 segmenter: SegmenterBackend | None) -> None:
    _WORKER["renderer"] = SceneRenderer(scene, config)
    _WORKER["segmenter"] = segmenter


def _worker_batch(indices: list[int], poses: np.ndarray, stamps: np.ndarray
                  ) -> list[DatasetSample]:
    return _render_batch(_WORKER["renderer"], _WORKER["segmenter"], indices, poses, stamps)
