"""The label registry: prompt phrases -> label -> thing/stuff flag and display colour.

One registry file (``config/labels/*.yaml``) is the single source of truth shared by the segmenter
(prompts), the mapper (label ids, thing/stuff), the evaluator and the exporters (colours).

YAML format::

    labels:
      - id: 1                 # > 0, unique; 0 is reserved for "void"
        name: wall            # unique, lower case
        is_thing: false       # stuff
        color: [174, 199, 232]
        phrases: [wall, wall panel]   # prompt phrases; the name is always a phrase too
        confusable_with: []   # labels a detector often confuses it with (optional)

Owns: loading, validation, lookups (by id, name, phrase) and colour tables.
Does not own: text-embedding similarity (``core/query``) or model prompting (``core/segmentation``).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import yaml

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.types import VOID_LABEL_ID


@dataclass(frozen=True)
class Label:
    """One entry of the registry."""

    id: int
    """Registry id (> 0); the value stored in label images and voxels."""
    name: str
    """Canonical label name."""
    is_thing: bool
    """True for countable objects (instances), False for stuff."""
    color: tuple[int, int, int]
    """Display colour, RGB 0-255."""
    phrases: tuple[str, ...] = field(default=())
    """Prompt phrases that map to this label (always includes ``name``)."""
    confusable_with: tuple[str, ...] = field(default=())
    """Names of labels a detector tends to confuse this one with (used by the emulator)."""


def normalize_phrase(text: str) -> str:
    """Lower-case, strip, collapse whitespace and drop a trailing period."""
    return " ".join(text.lower().strip().rstrip(".").split())


class LabelRegistry:
    """An immutable, validated set of labels with fast lookups."""

    def __init__(self, labels: Iterable[Label]):
        self._labels: tuple[Label, ...] = tuple(sorted(labels, key=lambda lab: lab.id))
        self._by_id: dict[int, Label] = {}
        self._by_name: dict[str, Label] = {}
        self._by_phrase: dict[str, Label] = {}
        for lab in self._labels:
            if lab.id <= VOID_LABEL_ID or lab.id > 65535:
                raise InvalidInputError(f"labels[{lab.name}].id", lab.id,
                                        "label ids must be in 1..65535 (0 is void)", kind="labels")
            if lab.id in self._by_id:
                raise InvalidInputError("labels.id", lab.id, "duplicate label id", kind="labels")
            name = normalize_phrase(lab.name)
            if not name:
                raise InvalidInputError(f"labels[{lab.id}].name", lab.name, "empty label name",
                                        kind="labels")
            if name in self._by_name:
                raise InvalidInputError("labels.name", lab.name, "duplicate label name",
                                        kind="labels")
            self._by_id[lab.id] = lab
            self._by_name[name] = lab
        for lab in self._labels:
            for phrase in (lab.name,) + lab.phrases:
                key = normalize_phrase(phrase)
                other = self._by_phrase.get(key)
                if other is not None and other.id != lab.id:
                    raise InvalidInputError(f"labels[{lab.name}].phrases", phrase,
                                            f"phrase already maps to label '{other.name}'",
                                            kind="labels")
                self._by_phrase[key] = lab
        for lab in self._labels:
            for other in lab.confusable_with:
                if normalize_phrase(other) not in self._by_name:
                    raise InvalidInputError(f"labels[{lab.name}].confusable_with", other,
                                            "unknown label name", kind="labels")

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "LabelRegistry":
        """Build from the parsed YAML structure (see module docstring)."""
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
            raise DataFormatError(source, type(data).__name__,
                                  "label file must be a mapping with a 'labels' list",
                                  kind="labels")
        labels = []
        for i, entry in enumerate(data["labels"]):
            where = f"{source}: labels[{i}]"
            if not isinstance(entry, dict):
                raise DataFormatError(where, entry, "each label must be a mapping", kind="labels")
            unknown = set(entry) - {"id", "name", "is_thing", "color", "phrases",
                                    "confusable_with"}
            if unknown:
                raise DataFormatError(where, sorted(unknown), "unknown keys", kind="labels")
            for key in ("id", "name", "is_thing"):
                if key not in entry:
                    raise DataFormatError(where, entry, f"missing key '{key}'", kind="labels")
            if not isinstance(entry["is_thing"], bool):
                raise DataFormatError(f"{where}.is_thing", entry["is_thing"],
                                      "must be true or false", kind="labels")
            if isinstance(entry["id"], bool) or not isinstance(entry["id"], int):
                raise DataFormatError(f"{where}.id", entry["id"], "must be an integer",
                                      kind="labels")
            color = entry.get("color")
            if color is None:
                color = default_color(int(entry["id"]))
            if (not isinstance(color, (list, tuple)) or len(color) != 3
                    or not all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
                raise DataFormatError(f"{where}.color", color, "must be [r, g, b] in 0..255",
                                      kind="labels")
            phrases = entry.get("phrases") or []
            if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
                raise DataFormatError(f"{where}.phrases", phrases, "must be a list of strings",
                                      kind="labels")
            name = normalize_phrase(str(entry["name"]))
            norm = [normalize_phrase(p) for p in phrases]
            all_phrases = tuple(dict.fromkeys([name] + [p for p in norm if p]))
            labels.append(Label(
                id=int(entry["id"]), name=name, is_thing=entry["is_thing"],
                color=tuple(int(c) for c in color), phrases=all_phrases,
                confusable_with=tuple(normalize_phrase(c)
                                      for c in entry.get("confusable_with") or [])))
        if not labels:
            raise DataFormatError(source, 0, "label file defines no labels", kind="labels")
        return cls(labels)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "LabelRegistry":
        """Load a registry file; raises :class:`DataFormatError` naming the problem."""
        path = Path(path)
        if not path.is_file():
            raise DataFormatError("label_file", str(path), "label file not found", kind="labels")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise DataFormatError("label_file", str(path), f"invalid YAML: {exc}",
                                  kind="labels") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def default(cls) -> "LabelRegistry":
        """The registry shipped in ``config/labels/default.yaml``."""
        return cls.from_yaml(default_label_file())

    def to_dict(self) -> dict:
        """The YAML structure (round-trips through :meth:`from_dict`)."""
        return {"labels": [
            {"id": lab.id, "name": lab.name, "is_thing": lab.is_thing, "color": list(lab.color),
             "phrases": list(lab.phrases), "confusable_with": list(lab.confusable_with)}
            for lab in self._labels]}

    def to_yaml(self, path: str | Path) -> None:
        """Write the registry as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    # ---- lookups ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Label]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._by_id

    @property
    def labels(self) -> tuple[Label, ...]:
        return self._labels

    @property
    def max_id(self) -> int:
        """Largest label id (size of dense per-label tables is ``max_id + 1``)."""
        return self._labels[-1].id

    def by_id(self, label_id: int) -> Label:
        """The label with this id; raises :class:`InvalidInputError` if unknown."""
        try:
            return self._by_id[int(label_id)]
        except KeyError:
            raise InvalidInputError("label_id", label_id, "unknown to the label registry",
                                    kind="unknown_label") from None

    def by_name(self, name: str) -> Label:
        """The label with this canonical name; raises if unknown."""
        try:
            return self._by_name[normalize_phrase(name)]
        except KeyError:
            raise InvalidInputError("label", name, "unknown to the label registry",
                                    kind="unknown_label") from None

    def find_phrase(self, phrase: str) -> Label | None:
        """The label a prompt phrase (or name) maps to, or None (exact, case-insensitive)."""
        return self._by_phrase.get(normalize_phrase(phrase))

    def resolve(self, label: str = "", label_id: int | None = None, phrase: str = "") -> Label:
        """Resolve a segment's label from its id, name or phrase, checking they agree.

        Raises :class:`InvalidInputError` (kind ``unknown_label``) when nothing matches or the
        given id and name disagree.
        """
        found: Label | None = None
        if label_id is not None and label_id != VOID_LABEL_ID:
            found = self.by_id(label_id)
        if label:
            by_name = self._by_name.get(normalize_phrase(label)) or self.find_phrase(label)
            if by_name is None:
                raise InvalidInputError("label", label, "unknown to the label registry",
                                        kind="unknown_label")
            if found is not None and by_name.id != found.id:
                raise InvalidInputError("label", f"{label} (label_id {label_id})",
                                        f"label name and id disagree (id {label_id} is "
                                        f"'{found.name}')", kind="unknown_label")
            found = by_name
        if found is None and phrase:
            found = self.find_phrase(phrase)
        if found is None:
            raise InvalidInputError("label", label or phrase or label_id,
                                    "unknown to the label registry", kind="unknown_label")
        return found

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(lab.id for lab in self._labels if lab.is_thing)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(lab.id for lab in self._labels if not lab.is_thing)

    def is_thing_table(self) -> np.ndarray:
        """[max_id + 1] bool lookup table: True for thing label ids."""
        table = np.zeros(self.max_id + 1, bool)
        table[list(self.thing_ids)] = True
        return table

    def color_table(self, void_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """[max_id + 1, 3] uint8 colour lookup table indexed by label id."""
        table = np.tile(np.asarray(void_color, np.uint8), (self.max_id + 1, 1))
        for lab in self._labels:
            table[lab.id] = lab.color
        return table

    def all_phrases(self) -> list[tuple[str, Label]]:
        """Every (phrase, label) pair, e.g. for building detector prompts."""
        return [(p, lab) for lab in self._labels for p in lab.phrases]


def default_label_file() -> Path:
    """Path of ``config/labels/default.yaml`` (source tree or installed share directory)."""
    from panoptic_mapper.core.io.resources import config_path

    return config_path("labels/default.yaml")


def default_color(index: int) -> tuple[int, int, int]:
    """A deterministic, well-spread colour for an id (golden-ratio hue walk)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def instance_color(instance_id: int) -> tuple[int, int, int]:
    """Display colour of a map instance id (0 -> grey)."""
    if instance_id == 0:
        return (128, 128, 128)
    return default_color(instance_id * 7 + 3)
