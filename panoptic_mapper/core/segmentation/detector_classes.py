"""Map a closed-set detector's class names onto the label registry.

A detector trained on Open Images or COCO names its classes its own way ("Coffee cup",
"dining table", "Computer monitor"). Each class is mapped once, when the backend starts, in this
order:

1. an explicit override from the config (``"Coffee cup=mug"``; ``"Laptop="`` drops a class);
2. an exact match of the class name with a registry label name or prompt phrase (case and
   spacing ignored: "Chair" -> chair, "dining table" -> table);
3. the packaged text model (all-MiniLM-L6-v2): the registry phrase most similar to the class
   name, when its cosine similarity is at least ``min_similarity`` and beats the best phrase of
   any other label by ``min_margin`` ("Coffee cup" -> "coffee mug" 0.86 -> mug);
4. otherwise the class is unmapped: dropped, or given the registry label ``unknown`` when the
   config asks for it (the registry must then define that label).

Owns: :class:`ClassMapping`, :func:`map_detector_classes`, :func:`parse_overrides`.
Does not own: the text model (``core/query/text_matching``), detection (``ssd_detector``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.labels.registry import normalize_phrase
from panoptic_mapper.core.query.text_matching import TextEmbedder

UNKNOWN_LABEL = "unknown"
"""Registry label that unmapped classes get with ``unmapped="unknown"``."""
MappingSource = Literal["override", "exact", "text", "unknown", "dropped"]


@dataclass(frozen=True)
class ClassMapping:
    """Where one detector class goes."""

    class_name: str
    label_id: int | None
    """Registry label id, or None when the class is dropped."""
    source: MappingSource
    """How the label was chosen (see the module docstring)."""
    similarity: float = 1.0
    """Text-model cosine similarity for ``source="text"``; 1 for exact and override."""
    phrase: str = ""
    """The registry phrase matched (the segment's ``phrase``)."""


def parse_overrides(entries: Sequence[str]) -> dict[str, str]:
    """``["Coffee cup=mug", "Laptop="]`` -> ``{"coffee cup": "mug", "laptop": ""}``.

    Raises:
        ConfigError: an entry has no '='.
    """
    out = {}
    for entry in entries:
        if "=" not in entry:
            raise ConfigError("detector.class_overrides", entry,
                              "entries must read 'Detector class=registry label' (empty label "
                              "= drop the class)")
        name, label = entry.split("=", 1)
        out[normalize_phrase(name)] = normalize_phrase(label)
    return out


def map_detector_classes(class_names: Sequence[str], registry: LabelRegistry, *,
                         overrides: dict[str, str] | None = None,
                         embedder: TextEmbedder | None = None, min_similarity: float = 0.7,
                         min_margin: float = 0.05,
                         unmapped: Literal["drop", "unknown"] = "drop"
                         ) -> dict[str, ClassMapping]:
    """Map every detector class (see the module docstring).

    Args:
        class_names: the detector's classes (background entries excluded by the caller).
        registry: target labels.
        overrides: normalised class name -> registry label name ("" = drop).
        embedder: the text model; None skips step 3.
        min_similarity, min_margin: acceptance rule of step 3.
        unmapped: what happens to classes no step maps.

    Returns:
        Class name (as given) -> mapping.

    Raises:
        ConfigError: an override names an unknown label or class, or ``unmapped="unknown"``
            without an ``unknown`` label in the registry.
    """
    overrides = dict(overrides or {})
    normalised = {normalize_phrase(name): name for name in class_names}
    for name in overrides:
        if name not in normalised:
            raise ConfigError("detector.class_overrides", name,
                              f"not a class of the detector; its classes: {list(class_names)}")
    unknown_id: int | None = None
    if unmapped == "unknown":
        label = registry.find_phrase(UNKNOWN_LABEL)
        if label is None:
            raise ConfigError("detector.unmapped_classes", unmapped,
                              f"needs a label named '{UNKNOWN_LABEL}' in the label registry "
                              "(add one, is_thing: true, or use 'drop')")
        unknown_id = label.id
    out: dict[str, ClassMapping] = {}
    pending = []
    for key, name in normalised.items():
        if key in overrides:
            target = overrides[key]
            if not target:
                out[name] = ClassMapping(name, None, "dropped", 0.0)
                continue
            label = registry.find_phrase(target)
            if label is None:
                raise ConfigError("detector.class_overrides", f"{name}={target}",
                                  "not a label or phrase of the registry")
            out[name] = ClassMapping(name, label.id, "override", 1.0, target)
            continue
        label = registry.find_phrase(key)
        if label is not None:
            out[name] = ClassMapping(name, label.id, "exact", 1.0, key)
        else:
            pending.append(name)
    matched = _text_matches(pending, registry, embedder, min_similarity, min_margin)
    for name in pending:
        if name in matched:
            out[name] = matched[name]
        elif unknown_id is not None:
            out[name] = ClassMapping(name, unknown_id, "unknown", 0.0, UNKNOWN_LABEL)
        else:
            out[name] = ClassMapping(name, None, "dropped", 0.0)
    return out


def _text_matches(names: list[str], registry: LabelRegistry, embedder: TextEmbedder | None,
                  min_similarity: float, min_margin: float) -> dict[str, ClassMapping]:
    if not names or embedder is None:
        return {}
    phrases = registry.all_phrases()
    phrase_vectors = embedder.encode([p for p, _ in phrases])
    class_vectors = embedder.encode([normalize_phrase(n) for n in names])
    similarity = class_vectors @ phrase_vectors.T  # unit vectors: cosine
    label_of = np.array([label.id for _, label in phrases])
    out = {}
    for row, name in enumerate(names):
        best = int(similarity[row].argmax())
        others = similarity[row][label_of != label_of[best]]
        margin = similarity[row, best] - (others.max() if others.size else -1.0)
        if similarity[row, best] >= min_similarity and margin >= min_margin:
            out[name] = ClassMapping(name, int(label_of[best]), "text",
                                     float(similarity[row, best]), phrases[best][0])
    return out
