"""Optional visual query path: CLIP embeddings of mask crops, fused per instance across views.

Only used when the user gives a local CLIP checkpoint (no CLIP weights are obtainable offline
here, so this path is tested with a tiny random ``CLIPModel`` for plumbing only, and its relevancy
threshold is not calibrated).

* Crops (``method-pe3r.md`` section 1.4): the mask's bounding box; outside the mask black when the
  mask fills at least ``full_mask_fraction`` of its box, uniform noise otherwise; zero-padded to a
  square; the CLIP image processor resizes it. One batched pass per frame; unit-normalised.
* Fusion across views (PE3R section 4, made order-independent): per instance a weighted sum of
  unit embeddings ``sum_k w_k F_k`` (float64), normalised when read, i.e. the weighted chordal
  mean. Unlike PE3R's slerp fold it does not depend on frame order, and merging two instances is
  adding their sums.
* Scoring (PE3R section 5.2, LERF relevancy): ``min_k sigmoid(s (q.f - n_k.f))`` with ``q`` the
  query text embedding, ``n_k`` the canonical negatives and ``s`` CLIP's logit scale: above 0.5
  means the instance is closer to the query than to every generic negative.

Owns: :class:`ClipConfig`, :func:`mask_crop`, :class:`ClipEmbedder`,
:class:`InstanceEmbeddingBank`, :class:`ClipVisualScorer`, :func:`relevancy`.
Does not own: which map instance a mask belongs to (the mapper associates masks to instances and
calls :meth:`InstanceEmbeddingBank.add_observations`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.segmentation.hf_weights import require_model_dir, resolve_device


@dataclass
class ClipConfig(ConfigBase):
    """CLIP instance embeddings. A library component: no node builds it from its parameters yet
    (the ``query.clip.*`` names in its errors are the names it will have there)."""

    weights_dir: str = ""
    """Local CLIP checkpoint directory (config.json, weights, tokenizer, preprocessor)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where CLIP runs; auto = CUDA when available."""
    full_mask_fraction: float = 0.8
    """Black background when the mask fills at least this fraction of its box, else noise
    (PE3R's rule)."""
    batch_size: int = 32
    """Crops per CLIP forward pass."""
    noise_seed: int = 0
    """Seed of the background noise (crops are reproducible)."""
    negatives: tuple[str, ...] = ("object", "things", "stuff", "texture")
    """Canonical negatives of the relevancy score."""

    def validate(self) -> None:
        super().validate()
        require(0.0 < self.full_mask_fraction <= 1.0, "full_mask_fraction",
                self.full_mask_fraction, "must be in (0, 1]")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(len(self.negatives) >= 1, "negatives", self.negatives, "need one or more")


def mask_crop(rgb: np.ndarray, mask: np.ndarray, full_mask_fraction: float,
              rng: np.random.Generator) -> np.ndarray:
    """The PE3R crop of one mask: bbox crop, background black or noise, zero-padded square.

    Args:
        rgb: [H, W, 3] uint8 image.
        mask: [H, W] bool, at least one pixel set.
        full_mask_fraction: black background at or above this mask/box fill ratio, else noise.
        rng: source of the noise.

    Returns:
        [S, S, 3] uint8, S = the longer side of the mask's bounding box.

    Raises:
        InvalidInputError: the mask is empty or does not match the image.
    """
    mask = np.asarray(mask, bool)
    if mask.shape != rgb.shape[:2]:
        raise InvalidInputError("mask", list(mask.shape), f"must match the image "
                                f"{list(rgb.shape[:2])}", kind="size_mismatch")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InvalidInputError("mask", "0 pixels", "cannot embed an empty mask", kind="query")
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = rgb[y0:y1, x0:x1].copy()
    inside = mask[y0:y1, x0:x1]
    outside = ~inside
    if inside.mean() >= full_mask_fraction:
        crop[outside] = 0
    else:
        crop[outside] = rng.integers(0, 256, (int(outside.sum()), 3), dtype=np.uint8)
    h, w = crop.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, 3), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = crop
    return square


class ClipEmbedder:
    """A CLIP checkpoint: unit image embeddings of mask crops, unit text embeddings."""

    def __init__(self, config: ClipConfig):
        """Load the model, tokenizer and image processor from ``config.weights_dir``.

        Raises:
            DataFormatError: missing or wrong checkpoint directory (says how to get one).
            ConfigError: CUDA requested but unavailable.
        """
        import torch
        from transformers import AutoTokenizer, CLIPModel
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        self.config = config
        directory = require_model_dir(config.weights_dir, "query.clip.weights_dir", "clip")
        self.device = resolve_device(config.device, "query.clip.device")
        self._torch = torch
        self._model = CLIPModel.from_pretrained(directory, local_files_only=True).to(
            self.device).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        if (directory / "preprocessor_config.json").is_file():
            self._processor = CLIPImageProcessorPil.from_pretrained(directory)
        else:
            size = int(self._model.config.vision_config.image_size)
            self._processor = CLIPImageProcessorPil(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        self.logit_scale = float(self._model.logit_scale.detach().exp())

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self._model.config.projection_dim)

    def embed_mask_crops(self, rgb: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """[N, D] float32 unit embeddings of the PE3R crops of [N, H, W] masks of one image."""
        masks = np.asarray(masks, bool)
        if masks.ndim != 3:
            raise InvalidInputError("masks", list(masks.shape), "must be [N, H, W]",
                                    kind="query")
        rng = np.random.default_rng(self.config.noise_seed)
        crops = [mask_crop(rgb, m, self.config.full_mask_fraction, rng) for m in masks]
        out = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(crops), self.config.batch_size):
            inputs = self._processor(images=crops[start:start + self.config.batch_size],
                                     return_tensors="pt")
            with self._torch.inference_mode():
                features = self._model.get_image_features(
                    pixel_values=inputs["pixel_values"].to(self.device))
            out.append(_unit(self._projected(features)))
        return np.concatenate(out, axis=0)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[T, D] float32 unit embeddings of ``texts``."""
        inputs = self._tokenizer(list(texts), padding=True, return_tensors="pt")
        with self._torch.inference_mode():
            features = self._model.get_text_features(
                **{k: v.to(self.device) for k, v in inputs.items()})
        return _unit(self._projected(features))

    def _projected(self, output) -> np.ndarray:
        """Projected embeddings from a tensor or a model output (transformers 5 returns one)."""
        tensor = output if isinstance(output, self._torch.Tensor) else output.pooler_output
        return tensor.float().cpu().numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class InstanceEmbeddingBank:
    """Order-independent fusion of per-view unit embeddings per map instance."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self._sums: dict[int, np.ndarray] = {}
        self._weights: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._sums)

    @property
    def instance_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._sums))

    def add_observations(self, instance_ids: Sequence[int], embeddings: np.ndarray,
                         weights: Sequence[float]) -> None:
        """Add one view's embeddings.

        Args:
            instance_ids: [N] map instance of each embedding.
            embeddings: [N, D] unit embeddings (e.g. :meth:`ClipEmbedder.embed_mask_crops`).
            weights: [N] > 0, e.g. mask area x detection score.

        Raises:
            InvalidInputError: shapes disagree, a weight is not > 0 or a value is not finite.
                Nothing is added then.
        """
        emb = np.asarray(embeddings, np.float64).reshape(-1, self.dim)
        ids = [int(i) for i in instance_ids]
        w = np.asarray(weights, np.float64).reshape(-1)
        if not len(ids) == len(emb) == len(w):
            raise InvalidInputError("embeddings", f"{len(ids)} ids, {len(emb)} embeddings, "
                                    f"{len(w)} weights", "counts must match", kind="query")
        if not (np.all(np.isfinite(emb)) and np.all(np.isfinite(w)) and np.all(w > 0)):
            raise InvalidInputError("weights", w.tolist(), "weights must be finite and > 0 and "
                                    "embeddings finite", kind="query")
        for instance_id, vector, weight in zip(ids, emb, w):
            self._sums[instance_id] = self._sums.get(instance_id, 0.0) + weight * vector
            self._weights[instance_id] = self._weights.get(instance_id, 0.0) + weight

    def merge_instances(self, keep_id: int, drop_id: int) -> None:
        """Fold ``drop_id``'s observations into ``keep_id`` (when the map merges them)."""
        if drop_id in self._sums:
            self._sums[keep_id] = self._sums.get(keep_id, 0.0) + self._sums.pop(drop_id)
            self._weights[keep_id] = self._weights.get(keep_id, 0.0) + self._weights.pop(drop_id)

    def remove(self, instance_id: int) -> None:
        """Forget an instance (no-op when unknown)."""
        self._sums.pop(instance_id, None)
        self._weights.pop(instance_id, None)

    def total_weight(self, instance_id: int) -> float:
        return self._weights.get(instance_id, 0.0)

    def get_embeddings(self, instance_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """([N, D] unit fused embeddings, [N] bool known); unknown ids give zero rows."""
        out = np.zeros((len(instance_ids), self.dim))
        known = np.zeros(len(instance_ids), bool)
        for row, instance_id in enumerate(instance_ids):
            total = self._sums.get(int(instance_id))
            if total is not None and np.linalg.norm(total) > 0:
                out[row] = total / np.linalg.norm(total)
                known[row] = True
        return out.astype(np.float32), known


def relevancy(instance_embeddings: np.ndarray, query_embedding: np.ndarray,
              negative_embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """[N] ``min_k sigmoid(s (q.f - n_k.f))`` for unit [N, D] instance embeddings."""
    f = np.asarray(instance_embeddings, np.float64)
    q = f @ np.asarray(query_embedding, np.float64).reshape(-1)
    n = f @ np.asarray(negative_embeddings, np.float64).T  # [N, K]
    return (1.0 / (1.0 + np.exp(-logit_scale * (q[:, None] - n)))).min(axis=1)


class ClipVisualScorer:
    """Relevancy of fused instance embeddings to a query phrase (a ``VisualScorer``)."""

    def __init__(self, embedder: ClipEmbedder, bank: InstanceEmbeddingBank,
                 max_cached_queries: int = 256):
        self.embedder = embedder
        self.bank = bank
        self._negatives = embedder.embed_texts(embedder.config.negatives)
        self._text = functools.lru_cache(maxsize=max_cached_queries)(
            lambda phrase: embedder.embed_texts([phrase])[0])

    def relevancy(self, phrase: str, instance_ids: np.ndarray) -> np.ndarray:
        """[N] relevancy in [0, 1]; NaN for instances without an embedding."""
        embeddings, known = self.bank.get_embeddings([int(i) for i in instance_ids])
        out = np.full(len(known), np.nan)
        if known.any():
            out[known] = relevancy(embeddings[known], self._text(phrase), self._negatives,
                                   self.embedder.logit_scale)
        return out
