"""The gsplat appearance branch: skipped with a clear reason without CUDA, trains with it."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.appearance import (AppearanceConfig, GsplatAppearance,
                                                   appearance_unavailable_reason, ssim)
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import KeyframeConfig
from panoptic_mapper.core.field.keyframes import Keyframe
from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig, RefinedPanopticMap

sys.path.insert(0, str(Path(__file__).parent))
from field_toy_scene import ToyPriorMap, make_toy_scene  # noqa: E402
from field_toy_scene import one_torch_thread  # noqa: E402,F401 (autouse)

NO_GSPLAT = appearance_unavailable_reason()


def test_ssim_of_identical_and_different_images():
    a = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(a, 1.0 - a).item() < 0.5


@pytest.mark.skipif(NO_GSPLAT is None, reason="gsplat and CUDA are available here")
def test_without_cuda_the_branch_is_skipped_with_a_reason(caplog):
    assert "skipped" in NO_GSPLAT
    with pytest.raises(InvalidInputError, match="skipped"):
        GsplatAppearance(AppearanceConfig(enabled=True), [])
    scene = make_toy_scene(num_frames=4, width=32, height=24)
    config = RefinedMapConfig(appearance=AppearanceConfig(enabled=True), finalize_max_s=0.0)
    config.keyframes.min_translation_m = 0.0
    config.training.trainer.total_steps = 2
    refined = RefinedPanopticMap(scene.registry, config, prior=ToyPriorMap(scene))
    for frame, segmentation in zip(scene.frames, scene.segmentations):
        refined.integrate_frame(frame, segmentation)
    assert all(k.rgb is not None for k in refined.store.snapshot())
    with caplog.at_level("WARNING"):
        refined.finalize()
    assert refined.is_ready and refined.appearance is None
    assert any("skipped" in record.message for record in caplog.records)
    with pytest.raises(InvalidInputError, match="no appearance model"):
        refined.render_color(scene.frames[0].T_world_cam, scene.frames[0].intrinsics)


@pytest.mark.gpu
@pytest.mark.skipif(NO_GSPLAT is not None, reason=f"{NO_GSPLAT}")
def test_gsplat_branch_fits_a_keyframe():
    scene = make_toy_scene(num_frames=4, width=64, height=48)
    registry = scene.registry
    classes = ClassSpace.from_registry(registry)
    keyframes = [Keyframe.from_frame(f, s, classes, registry,
                                     KeyframeConfig(image_scale=1.0, keep_rgb=True))[0]
                 for f, s in zip(scene.frames, scene.segmentations)]
    model = GsplatAppearance(AppearanceConfig(steps=300, initial_points=20000), keyframes)
    first = model.train_steps(1)
    last = model.train_steps(300)
    assert last < first
    rgb, depth, _ = model.render(keyframes[0].T_world_cam, keyframes[0].intrinsics)
    valid = torch.from_numpy(keyframes[0].depth_m > 0).cuda()
    error = (depth[valid] - torch.from_numpy(keyframes[0].depth_m).cuda()[valid]).abs().median()
    assert float(error) < 0.1 and rgb.shape == (48, 64, 3)
    assert np.isfinite(last)
