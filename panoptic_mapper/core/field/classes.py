"""Index spaces of the field's classifiers, derived from the label registry.

* Semantic classes (semantic head, ``C = 1 + S + T``): 0 = unlabelled, 1..S = stuff labels,
  S+1..S+T = thing labels, each group in ascending label id.
* Token classes (class head h_SI, ``T + 1``): 0 = no object, 1..T = thing labels.
* Panoptic classes (Bayes head, ``1 + S + N``): 0 = unlabelled, 1..S = stuff, S+1+i = token i.

Owns: :class:`ClassSpace` and its lookup tables. Does not own: the registry itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import VOID_LABEL_ID


@dataclass(frozen=True)
class ClassSpace:
    """Label ids <-> classifier indices for one label registry."""

    stuff_label_ids: tuple[int, ...]
    """Registry ids of the stuff labels, ascending (semantic classes 1..S)."""
    thing_label_ids: tuple[int, ...]
    """Registry ids of the thing labels, ascending (semantic classes S+1..S+T)."""

    @classmethod
    def from_registry(cls, registry: LabelRegistry) -> "ClassSpace":
        """The class space of a registry."""
        return cls(tuple(sorted(registry.stuff_ids)), tuple(sorted(registry.thing_ids)))

    @property
    def num_stuff(self) -> int:
        """S."""
        return len(self.stuff_label_ids)

    @property
    def num_things(self) -> int:
        """T."""
        return len(self.thing_label_ids)

    @property
    def num_semantic_classes(self) -> int:
        """C = 1 + S + T."""
        return 1 + self.num_stuff + self.num_things

    @property
    def num_token_classes(self) -> int:
        """T + 1 (index 0 = no object)."""
        return 1 + self.num_things

    def semantic_class_labels(self) -> np.ndarray:
        """[C] int32 label id of each semantic class (0 for class 0)."""
        return np.array((VOID_LABEL_ID,) + self.stuff_label_ids + self.thing_label_ids, np.int32)

    def token_class_labels(self) -> np.ndarray:
        """[T + 1] int32 label id of each token class (0 for "no object")."""
        return np.array((VOID_LABEL_ID,) + self.thing_label_ids, np.int32)

    def label_to_semantic_class(self, label_ids: np.ndarray) -> np.ndarray:
        """Semantic class index of each label id (0 for void and ids outside the space)."""
        labels = self.semantic_class_labels()
        table = np.zeros(max(int(labels.max()), 0) + 1, np.int64)
        table[labels] = np.arange(len(labels))
        label_ids = np.asarray(label_ids, np.int64)
        inside = (label_ids >= 0) & (label_ids < len(table))
        return np.where(inside, table[np.clip(label_ids, 0, len(table) - 1)], 0)

    def semantic_to_token_class(self, semantic_class: np.ndarray) -> np.ndarray:
        """Token class of a thing semantic class (0 for unlabelled and stuff)."""
        semantic_class = np.asarray(semantic_class, np.int64)
        return np.where(semantic_class > self.num_stuff, semantic_class - self.num_stuff, 0)
