"""Parts of the detector backend on constructed inputs: SSD anchors and decoding, class mapping,
masks from depth, GrabCut, the geometric stuff labeller, the model catalogue and its checks."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError, DataFormatError
from panoptic_mapper.core.geometry.camera import world_rays
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation import detector_models as dm
from panoptic_mapper.core.segmentation.box_masks import (BoxMaskConfig, cut_masks,
                                                         depth_box_masks, grabcut_refine)
from panoptic_mapper.core.segmentation.detector_classes import (map_detector_classes,
                                                                parse_overrides)
from panoptic_mapper.core.segmentation.detections import per_class_nms
from panoptic_mapper.core.segmentation.ssd_detector import decode_boxes, ssd_anchors
from panoptic_mapper.core.segmentation.stuff_labeller import StuffLabeller, StuffLabellerConfig
from panoptic_mapper.core.types import CameraIntrinsics


# ---- SSD ------------------------------------------------------------------------------------
def test_anchor_layout_matches_the_model_outputs():
    anchors = ssd_anchors()
    assert anchors.shape == (1917, 4)  # = the model's box-encoding rows
    # lowest layer: 19x19 cells x 3 anchors, the first centred in the first 16-px cell
    np.testing.assert_allclose(anchors[0, :2], [0.5 / 19, 0.5 / 19], atol=1e-6)
    np.testing.assert_allclose(anchors[:3, 2] * anchors[:3, 3], [0.01, 0.04, 0.04], atol=1e-6)
    assert anchors[-1, 0] == pytest.approx(0.5) and anchors[-1, 1] == pytest.approx(0.5)
    assert (anchors[:, 2:] > 0).all()


def test_zero_encoding_decodes_to_the_anchor_and_offsets_scale():
    anchors = np.array([[0.5, 0.25, 0.2, 0.4]], np.float32)
    box = decode_boxes(np.zeros((1, 4)), anchors)[0]
    np.testing.assert_allclose(box, [0.05, 0.4, 0.45, 0.6], atol=1e-6)
    moved = decode_boxes(np.array([[10.0, 10.0, 0.0, 5.0]]), anchors)[0]  # one anchor size, e x w
    np.testing.assert_allclose((moved[0] + moved[2]) / 2, 0.25 + 0.4, atol=1e-6)
    np.testing.assert_allclose(moved[2] - moved[0], 0.4 * np.e, atol=1e-5)


def test_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([1, 1, 2, 1])
    assert per_class_nms(boxes, scores, classes, 0.5, 10).tolist() == [0, 2, 3]
    assert per_class_nms(boxes, scores, classes, 0.5, 2).tolist() == [0, 2]


# ---- class mapping ------------------------------------------------------------------------------
class FakeEmbedder:
    """Unit vectors from a fixed table of words (anything else is orthogonal to all)."""

    VECTORS = {"coffee cup": [1, 0.1, 0], "mug": [1, 0, 0], "coffee mug": [1, 0.05, 0],
               "monitor": [0, 1, 0], "laptop": [0, 0.6, 0.8], "teacup": [1, 1, 0]}

    def encode(self, texts):
        out = np.array([self.VECTORS.get(text, [0, 0, 0]) for text in texts], float)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_classes_map_by_name_override_and_text(label_registry):
    mapping = map_detector_classes(
        ["Chair", "dining table", "Coffee cup", "Laptop", "Teacup", "Cattle", "Desk"],
        label_registry, overrides=parse_overrides(["Desk=table"]), embedder=FakeEmbedder())
    by = {name: (m.label_id and label_registry.by_id(m.label_id).name, m.source)
          for name, m in mapping.items()}
    assert by["Chair"] == ("chair", "exact")
    assert by["dining table"] == ("table", "exact")  # a registry phrase
    assert by["Desk"] == ("table", "override")
    assert by["Coffee cup"] == ("mug", "text") and mapping["Coffee cup"].similarity > 0.9
    assert mapping["Coffee cup"].phrase == "coffee mug"
    assert by["Laptop"] == (None, "dropped")  # 0.6 to monitor: below min_similarity
    assert by["Teacup"] == (None, "dropped")  # 0.71 to mug and to monitor: no margin
    assert by["Cattle"] == (None, "dropped")
    without_text = map_detector_classes(["Coffee cup"], label_registry, embedder=None)
    assert without_text["Coffee cup"].source == "dropped"


def test_unknown_needs_a_registry_label_and_overrides_are_checked(label_registry):
    with pytest.raises(ConfigError, match="unknown"):
        map_detector_classes(["Cattle"], label_registry, unmapped="unknown")
    data = label_registry.to_dict()
    data["labels"].append({"id": 99, "name": "unknown", "is_thing": True, "color": [9, 9, 9]})
    registry = LabelRegistry.from_dict(data)
    mapping = map_detector_classes(["Cattle", "Chair"], registry, unmapped="unknown")
    assert mapping["Cattle"].label_id == 99 and mapping["Cattle"].source == "unknown"
    with pytest.raises(ConfigError, match="not a class of the detector"):
        map_detector_classes(["Chair"], label_registry, overrides={"sofa bed": "sofa"})
    with pytest.raises(ConfigError, match="not a label"):
        map_detector_classes(["Chair"], label_registry, overrides={"chair": "throne"})
    with pytest.raises(ConfigError, match="="):
        parse_overrides(["Chair->sofa"])
    assert map_detector_classes(["Chair"], label_registry,
                                overrides={"chair": ""})["Chair"].source == "dropped"


# ---- masks from boxes ---------------------------------------------------------------------------
def _object_on_wall(height=120, width=160):
    """A 2 m wall with a 40x40 px object 0.8 m in front of it (a hole of invalid depth in the
    object's corner), and its box with 10 px of wall around it."""
    depth = np.full((height, width), 2.0, np.float32)
    depth[40:80, 60:100] = 1.2
    depth[40:44, 60:64] = 0.0
    truth = depth == 1.2
    return depth, truth, (50.0, 30.0, 110.0, 90.0)


def test_depth_mask_takes_the_object_not_the_background():
    depth, truth, box = _object_on_wall()
    masks = depth_box_masks(depth, [box], BoxMaskConfig(), fx=150.0)
    assert masks.shape == (1, *depth.shape)
    np.testing.assert_array_equal(masks[0], truth)


def test_depth_mask_keeps_one_component_and_respects_exclusions():
    depth, truth, box = _object_on_wall()
    depth[85:88, 52:56] = 1.2  # same depth, not connected to the object, inside the box
    exclude = np.zeros_like(truth)
    exclude[70:80, :] = True  # e.g. floor pixels
    mask = depth_box_masks(depth, [box], BoxMaskConfig(), fx=150.0, exclude=exclude)[0]
    np.testing.assert_array_equal(mask, truth & ~exclude)


def test_no_depth_at_the_object_gives_an_empty_mask_and_box_method_fills_the_box():
    depth, _, box = _object_on_wall()
    depth[30:90, 50:110] = 0.0
    assert not depth_box_masks(depth, [box], BoxMaskConfig(), fx=150.0).any()
    rgb = np.zeros((*depth.shape, 3), np.uint8)
    filled = cut_masks(rgb, None, [box], BoxMaskConfig(method="box"), fx=150.0)[0]
    assert filled.sum() == 60 * 60 and filled[30:90, 50:110].all()
    with pytest.raises(Exception, match="depth"):
        cut_masks(rgb, None, [box], BoxMaskConfig(), fx=150.0)


def test_grabcut_recovers_a_coloured_object_from_a_rough_seed():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 60, (120, 160, 3)).astype(np.uint8)  # dark textured background
    rgb[40:80, 60:100] = [220, 30, 30] + rng.integers(0, 20, (40, 40, 3))  # a red object
    truth = np.zeros((120, 160), bool)
    truth[40:80, 60:100] = True
    seed = np.zeros_like(truth)
    seed[45:85, 62:104] = True  # shifted by a few pixels, as with unregistered depth
    box = (50.0, 30.0, 110.0, 90.0)
    refined = grabcut_refine(rgb, [box], seed[None], BoxMaskConfig(method="depth_grabcut"))[0]
    iou = (refined & truth).sum() / (refined | truth).sum()
    seed_iou = (seed & truth).sum() / (seed | truth).sum()
    assert iou > 0.9 and iou > seed_iou


# ---- stuff labeller -----------------------------------------------------------------------------
def _room_view(pitch_deg=15.0, ceiling_m=None):
    """A camera 1.5 m above a floor (z = 0), looking along +y and 15 deg down, a wall at
    y = 3 m. Depth ray-cast analytically; returns depth, intrinsics, T_world_cam, truth."""
    k = CameraIntrinsics(160, 120, 120.0, 120.0, 79.5, 59.5)
    pitch = np.radians(pitch_deg)
    # camera axes in world: x right = +x, z forward = (0, cos, -sin), y down = z x x
    z_axis = np.array([0, np.cos(pitch), -np.sin(pitch)])
    x_axis = np.array([1.0, 0, 0])
    y_axis = np.cross(z_axis, x_axis)
    T = np.eye(4)
    T[:3, :3] = np.stack([x_axis, y_axis, z_axis], 1)
    T[:3, 3] = [0, 0, 1.5]
    v, u = np.mgrid[0:120, 0:160]
    rays = world_rays(T, k, u, v, unit=False)[1]  # camera z = 1: a hit parameter is z-depth
    t_floor = np.where(rays[..., 2] < -1e-6, -1.5 / np.minimum(rays[..., 2], -1e-6), np.inf)
    t_wall = np.where(rays[..., 1] > 1e-6, 3.0 / np.maximum(rays[..., 1], 1e-6), np.inf)
    top = 4.0 if ceiling_m is None else ceiling_m  # the wall's height
    t_ceiling = np.where(rays[..., 2] > 1e-6, (top - 1.5) / np.maximum(rays[..., 2], 1e-6),
                         np.inf) if ceiling_m is not None else np.full(t_floor.shape, np.inf)
    depth = np.minimum(np.minimum(t_floor, t_wall), t_ceiling)  # z-depth: camera z = 1 on the rays
    floor = t_floor <= depth
    ceiling = t_ceiling <= depth
    hits = T[:3, 3] + rays * depth[..., None]
    depth = np.where(hits[..., 2] <= top + 1e-6, depth, 0.0).astype(np.float32)
    if ceiling_m is not None:
        return depth, k, T, ceiling & (depth > 0)
    return depth, k, T, floor & (depth > 0), ~floor & (depth > 0)


def test_floor_and_wall_from_depth_and_gravity(label_registry):
    depth, k, T, floor, wall = _room_view()
    labeller = StuffLabeller(StuffLabellerConfig(grid_step_px=2), label_registry)
    result = labeller.label(depth, k, T)
    floor_id, wall_id = label_registry.by_name("floor").id, label_registry.by_name("wall").id
    for truth, label_id in ((floor, floor_id), (wall, wall_id)):
        predicted = result.label_ids == label_id
        assert (predicted & truth).sum() / (predicted | truth).sum() > 0.85
    assert result.floor_height_m == pytest.approx(0.0, abs=0.02)
    # without the pose a level camera is assumed: the floor is tilted by the 15 deg pitch and
    # its height is taken from the camera, so less of it is found
    level = StuffLabeller(StuffLabellerConfig(grid_step_px=2), label_registry).label(depth, k)
    assert 0 < (level.label_ids == floor_id).sum() < (result.label_ids == floor_id).sum()
    # the floor height is remembered: a frame that sees only a table top keeps the floor
    table = depth.copy()
    table[:] = np.where(floor, depth * (1.5 - 0.75) / 1.5, 0.0)  # a plane 0.75 m up
    after = labeller.label(table.astype(np.float32), k, T)
    assert after.floor_height_m == pytest.approx(0.0, abs=0.02)
    assert not (after.label_ids == floor_id).any()


def test_ceiling_is_a_large_down_facing_region_above_the_camera(label_registry):
    depth, k, T, ceiling = _room_view(pitch_deg=-20.0, ceiling_m=2.6)  # looking up
    ceiling_id = label_registry.by_name("ceiling").id
    result = StuffLabeller(StuffLabellerConfig(grid_step_px=2), label_registry).label(depth, k, T)
    predicted = result.label_ids == ceiling_id
    assert ceiling.mean() > 0.2
    assert (predicted & ceiling).sum() / (predicted | ceiling).sum() > 0.85
    small_only = StuffLabellerConfig(grid_step_px=2, min_ceiling_area_fraction=0.95)
    assert not (StuffLabeller(small_only, label_registry).label(depth, k, T).label_ids
                == ceiling_id).any()


def test_stuff_labels_must_exist(label_registry):
    with pytest.raises(ConfigError, match="floor_label"):
        StuffLabeller(StuffLabellerConfig(floor_label="ground"), label_registry)
    labeller = StuffLabeller(StuffLabellerConfig(wall_label="", ceiling_label=""), label_registry)
    assert set(labeller.label_ids) == {"floor"}
    with pytest.raises(ConfigError, match="gravity_in_map"):
        StuffLabellerConfig(gravity_in_map=(0.0, 0.0, 0.0))


# ---- model catalogue ----------------------------------------------------------------------------
def _fake_objectron_tarball(path, model=b"TFL3 model bytes", labels=b"???\nChair\n"):
    blob = labels + model
    loader = ('var x = {"files": [{"filename": "/object_detection_oidv4_labelmap.txt", "start": 0, '
              f'"end": {len(labels)}}}, {{"filename": "/third_party/mediapipe/modules/objectron/'
              'object_detection_ssd_mobilenetv2_oidv4_fp16.tflite", "start": '
              f'{len(labels)}, "end": {len(blob)}}}], "remote_package_size": {len(blob)}}};')
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("package/objectron_solution_packed_assets.data", blob),
                           ("package/objectron_solution_packed_assets_loader.js",
                            loader.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_install_extracts_and_checks_hashes(tmp_path):
    tarball = tmp_path / "objectron.tgz"
    digest = _fake_objectron_tarball(tarball)
    spec = replace(dm.SSD_OIDV4, tarball_sha256=digest, files={
        "model.tflite": hashlib.sha256(b"TFL3 model bytes").hexdigest(),
        "labels.txt": hashlib.sha256(b"???\nChair\n").hexdigest()})
    folder = dm.install_from_tarball(spec, tarball, tmp_path / "models")
    assert (folder / "model.tflite").read_bytes() == b"TFL3 model bytes"
    assert dm.require_model_files(spec, folder) == folder
    (folder / "labels.txt").write_bytes(b"tampered")
    with pytest.raises(DataFormatError, match="make models"):
        dm.require_model_files(spec, folder)
    with pytest.raises(DataFormatError, match="sha256"):
        dm.install_from_tarball(replace(spec, tarball_sha256="0" * 64), tarball, folder)
    wrong_file = replace(spec, files={**spec.files, "model.tflite": "1" * 64})
    with pytest.raises(DataFormatError, match="pinned"):
        dm.install_from_tarball(wrong_file, tarball, tmp_path / "other")
    assert not (tmp_path / "other" / "model.tflite").exists()


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(dm.MODEL_DIR_ENV, str(tmp_path / "m"))
    assert dm.model_dir(dm.SSD_OIDV4) == tmp_path / "m" / dm.SSD_OIDV4.name
    monkeypatch.delenv(dm.MODEL_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert dm.model_cache_root() == tmp_path / "c" / "panoptic_mapper" / "models"
    assert dm.SSD_OIDV4.tarball_name == "mediapipe-objectron-0.4.1675468480.tgz"
    assert "Apache-2.0" in dm.SSD_OIDV4.licence
    json.dumps(dm.SSD_OIDV4.files)  # plain data
