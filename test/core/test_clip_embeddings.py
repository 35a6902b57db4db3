"""Optional CLIP path: PE3R mask crops, a tiny random CLIPModel, order-independent fusion.

The model has random weights (no CLIP weights exist offline): only plumbing, shapes, the crop
rule, the fusion arithmetic and the relevancy formula are checked.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError  # noqa: E402
from panoptic_mapper.core.query import RegistryQueryEngine  # noqa: E402
from panoptic_mapper.core.query.clip_embeddings import (ClipConfig, ClipEmbedder,  # noqa: E402
                                                        ClipVisualScorer,
                                                        InstanceEmbeddingBank, mask_crop,
                                                        relevancy)
from panoptic_mapper.core.types import MapInstance, OrientedBox  # noqa: E402


def _byte_level_vocab() -> dict[str, int]:
    """The first 514 entries of a CLIP BPE vocabulary: every byte symbol, alone and word-final,
    plus the two special tokens (no merges: every character is one token)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in codes]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    return vocab


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("clip")
    (root / "vocab.json").write_text(json.dumps(_byte_level_vocab()))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"))
    config = CLIPConfig(
        text_config=dict(vocab_size=514, hidden_size=32, intermediate_size=37,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=512, eos_token_id=513, pad_token_id=513),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16)
    torch.manual_seed(0)
    model_dir = root / "model"
    CLIPModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def embedder(clip_dir):
    return ClipEmbedder(ClipConfig(weights_dir=str(clip_dir), device="cpu", batch_size=2))


def _rect(h, w, y0, y1, x0, x1):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_mask_crop_black_background_when_the_mask_fills_its_box():
    rgb = np.full((10, 12, 3), 200, np.uint8)
    mask = _rect(10, 12, 2, 6, 3, 11)        # 4 x 8 box, full
    mask[2, 3] = False                        # 31/32 = 0.97 >= 0.8
    crop = mask_crop(rgb, mask, 0.8, np.random.default_rng(0))
    assert crop.shape == (8, 8, 3)
    # 4 rows of content centred in 8: rows 2..5; outside the mask black, padding black.
    assert (crop[2:6] == 200).sum() == 31 * 3
    assert crop[:2].max() == 0 and crop[6:].max() == 0
    assert crop[2, 0].max() == 0


def test_mask_crop_noise_background_for_sparse_masks():
    rgb = np.full((10, 10, 3), 7, np.uint8)
    mask = np.eye(10, dtype=bool)             # diagonal: 10 of 100 box pixels
    crop = mask_crop(rgb, mask, 0.8, np.random.default_rng(0))
    assert crop.shape == (10, 10, 3)
    np.testing.assert_array_equal(crop[mask], 7)
    assert crop[~mask].std() > 50             # uniform noise, not a flat fill
    with pytest.raises(InvalidInputError, match="empty mask"):
        mask_crop(rgb, np.zeros((10, 10), bool), 0.8, np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="mask"):
        mask_crop(rgb, np.ones((5, 5), bool), 0.8, np.random.default_rng(0))


def test_embedder_shapes_units_and_batching(embedder):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    masks = np.stack([_rect(24, 30, 0, 10, 0, 10), _rect(24, 30, 5, 24, 8, 30),
                      _rect(24, 30, 12, 20, 2, 6)])
    emb = embedder.embed_mask_crops(rgb, masks)      # 3 crops in batches of 2
    assert emb.shape == (3, embedder.dim) == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Batching does not change the result; crops are reproducible (seeded noise).
    one_by_one = np.concatenate([embedder.embed_mask_crops(rgb, m[None]) for m in masks])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)
    text = embedder.embed_texts(["a red mug", "chair"])
    assert text.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_mask_crops(rgb, np.zeros((0, 24, 30), bool)).shape == (0, 16)


def test_bank_fusion_is_order_independent():
    rng = np.random.default_rng(2)
    views = rng.normal(size=(5, 16))
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    weights = rng.uniform(0.5, 3.0, 5)
    results = []
    for order in itertools.permutations(range(5)):
        bank = InstanceEmbeddingBank(16)
        for k in order:
            bank.add_observations([7], views[k:k + 1], [weights[k]])
        results.append(bank.get_embeddings([7])[0][0])
    expected = (weights[:, None] * views).sum(axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(np.array(results), np.tile(expected, (120, 1)), atol=1e-6)


def test_bank_merge_remove_and_validation():
    bank = InstanceEmbeddingBank(3)
    bank.add_observations([1, 2], np.array([[1.0, 0, 0], [0, 1.0, 0]]), [1.0, 3.0])
    bank.merge_instances(1, 2)
    emb, known = bank.get_embeddings([1, 2, 9])
    np.testing.assert_allclose(emb[0], np.array([1, 3, 0]) / np.sqrt(10), atol=1e-6)
    np.testing.assert_array_equal(known, [True, False, False])
    assert bank.total_weight(1) == 4.0 and bank.instance_ids == (1,)
    with pytest.raises(InvalidInputError, match="weights"):
        bank.add_observations([1], np.array([[1.0, 0, 0]]), [0.0])
    with pytest.raises(InvalidInputError, match="counts"):
        bank.add_observations([1, 2], np.array([[1.0, 0, 0]]), [1.0])
    assert bank.total_weight(1) == 4.0  # rejected observations change nothing
    bank.remove(1)
    assert len(bank) == 0


def test_relevancy_formula_by_hand():
    f = np.array([[1.0, 0.0], [0.0, 1.0]])
    q = np.array([1.0, 0.0])
    negatives = np.array([[0.0, 1.0], [0.6, 0.8]])
    got = relevancy(f, q, negatives, logit_scale=10.0)
    # Instance 0: q.f = 1, n.f = (0, 0.6) -> min(sigmoid(10), sigmoid(4)).
    # Instance 1: q.f = 0, n.f = (1, 0.8) -> min(sigmoid(-10), sigmoid(-8)).
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(got, [sig(4.0), sig(-10.0)])


def test_visual_scorer_feeds_the_query_engine(embedder, label_registry):
    bank = InstanceEmbeddingBank(embedder.dim)
    rgb = np.random.default_rng(3).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    emb = embedder.embed_mask_crops(rgb, _rect(20, 20, 2, 12, 2, 12)[None])
    bank.add_observations([5], emb, [1.0])
    scorer = ClipVisualScorer(embedder, bank)
    scores = scorer.relevancy("parcel", np.array([5, 6]))
    assert 0.0 <= scores[0] <= 1.0 and np.isnan(scores[1])
    lab = label_registry.by_name("box")
    instances = [MapInstance(id=i, label=lab.name, label_id=lab.id, is_thing=True,
                             confidence=1.0, centroid_m=[i, 0, 0],
                             bbox=OrientedBox([i, 0, 0], np.eye(3), [0.3, 0.3, 0.3]),
                             num_observations=1) for i in (5, 6)]
    engine = RegistryQueryEngine(registry=label_registry, visual=scorer)
    engine.update_instances(instances)
    result = engine.query_objects("parcel", min_score=1e-6)
    # Only the instance with a visual embedding can answer a phrase outside the registry.
    assert [m.instance.id for m in result.matches] == [5]
    assert result.matches[0].score == pytest.approx(scores[0])


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(DataFormatError, match="openai/clip-vit-base-patch32"):
        ClipEmbedder(ClipConfig(weights_dir=str(tmp_path), device="cpu"))
