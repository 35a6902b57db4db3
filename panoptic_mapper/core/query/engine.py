"""Free-text object queries over map instances: rank, threshold, explain.

A query is parsed (``query_parser``) into a noun phrase and attributes. Each instance then gets

    score = text x colour x size x relation

* text: the probability that the noun phrase names the instance's class, averaged over the map's
  label distribution of the instance, ``sum_l p(l) P(phrase names l)``; the per-label
  probability comes from a :class:`LabelMatcher` (calibrated sentence-embedding similarity for
  :class:`ObjectQueryEngine`, exact/synonym registry matching for :class:`RegistryQueryEngine`)
  and, when CLIP instance embeddings are available, the better of that and the visual relevancy;
* colour: how well each colour word names the instance's fused mean colour (``colors``); an
  instance without a known colour cannot confirm a colour word and scores 0;
* size: 1 if the instance fits big/small among the same class in this map (``spatial``);
* relation: the best anchor score among instances that stand in the relation to it.

Instances scoring at least ``min_score`` (a calibrated probability threshold, 0.5 by default) are
returned best first; nothing else is, so a query for an absent object returns nothing instead of
the least bad match (the min-max failure, ``method-pe3r.md`` section 5.2).

Owns: :class:`QueryConfig`, :class:`QueryEngine` and its two flavours, :class:`QueryResult`,
:class:`QueryMatch`, :func:`create_query_engine`.
Does not own: label matching (``text_matching``), colour naming, geometry, CLIP embeddings.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.query.colors import ColorConfig, ColorNamingModel
from panoptic_mapper.core.query.query_parser import ParsedQuery, parse_query
from panoptic_mapper.core.query.spatial import (GravityExtents, SpatialConfig, relation_matrix,
                                                size_scores)
from panoptic_mapper.core.query.text_matching import (EmbeddingLabelMatcher, LabelMatcher,
                                                      RegistryLabelMatcher, TextEmbedder,
                                                      TextMatchConfig)
from panoptic_mapper.core.types import MapInstance


@dataclass
class QueryConfig(ConfigBase):
    """Free-text queries (YAML section ``query``)."""

    min_score: float = 0.5
    """Default threshold on the final score (a calibrated probability for text-only queries)."""
    use_text_embeddings: bool = True
    """True: sentence-embedding label matching; False: registry phrases only (no model)."""
    include_stuff: bool = True
    """Stuff regions (floor, wall, ...) can be query results."""
    text: TextMatchConfig = field(default_factory=TextMatchConfig)
    colors: ColorConfig = field(default_factory=ColorConfig)
    spatial: SpatialConfig = field(default_factory=SpatialConfig)

    def validate(self) -> None:
        super().validate()
        require(0.0 < self.min_score <= 1.0, "min_score", self.min_score, "must be in (0, 1]")


class VisualScorer(Protocol):
    """Per-instance image-text relevancy (e.g. fused CLIP mask-crop embeddings)."""

    def relevancy(self, phrase: str, instance_ids: np.ndarray) -> np.ndarray:
        """[N] relevancy in [0, 1] of each instance for ``phrase``; NaN where unknown."""


@dataclass
class QueryMatch:
    """One result: the instance, its score and where the score came from."""

    instance: MapInstance
    """A copy of the map instance with ``score`` set."""
    score: float
    text_score: float
    color_score: float = 1.0
    size_score: float = 1.0
    relation_score: float = 1.0
    matched_label: str = ""
    """The instance label that contributed most to the text score."""
    matched_text: str = ""
    """The label text (registry phrase or description) closest to the query."""
    anchor_id: int = 0
    """Instance the relation holds with (0 without relation)."""


@dataclass
class QueryResult:
    """Answer to one query."""

    query: str
    parsed: ParsedQuery
    min_score: float
    """Threshold that was applied."""
    matches: list[QueryMatch] = field(default_factory=list)
    """Best first."""
    notes: list[str] = field(default_factory=list)
    """What was ignored or could not be resolved, one sentence each."""
    elapsed_ms: float = 0.0

    @property
    def instances(self) -> list[MapInstance]:
        """The matched instances (scores set), best first."""
        return [m.instance for m in self.matches]


@dataclass
class InstanceTableUpdate:
    """What ``update_instances`` changed."""

    num_instances: int
    added_ids: tuple[int, ...] = ()
    removed_ids: tuple[int, ...] = ()


@dataclass
class _InstanceTable:
    instances: list[MapInstance]
    ids: np.ndarray
    """[N] instance ids."""
    label_distribution: np.ndarray
    """[N, max_label_id + 1] rows sum to 1."""
    class_ids: np.ndarray
    """[N] most likely label."""
    color_match: np.ndarray
    """[N, K] how well each colour name names the instance's colour (0 where unknown)."""
    volumes_m3: np.ndarray
    extents: GravityExtents
    centroids_m: np.ndarray
    """[N, 3] world centroids."""


class QueryEngine:
    """Ranks map instances for free-text queries (see module docstring)."""

    def __init__(self, config: QueryConfig, registry: LabelRegistry, matcher: LabelMatcher,
                 visual: VisualScorer | None = None):
        self.config = config
        self.registry = registry
        self.matcher = matcher
        self.visual = visual
        self.colors = ColorNamingModel(config.colors)
        self._table = self._build_table([])

    # ---- instances ---------------------------------------------------------------------------
    def update_instances(self, instances: Sequence[MapInstance]) -> InstanceTableUpdate:
        """Replace the instances queries run over (precomputes everything per instance).

        Raises:
            InvalidInputError: an id is duplicated or not > 0, a label is unknown to the registry,
                a label distribution or colour is malformed. The previous table is kept.
        """
        old = set(self._table.ids.tolist())
        table = self._build_table(list(instances))
        self._table = table
        new = set(table.ids.tolist())
        return InstanceTableUpdate(len(table.ids), tuple(sorted(new - old)),
                                   tuple(sorted(old - new)))

    @property
    def num_instances(self) -> int:
        return len(self._table.ids)

    def _build_table(self, instances: list[MapInstance]) -> _InstanceTable:
        n = len(instances)
        ids = np.array([int(inst.id) for inst in instances], np.int64)
        if n and ids.min() <= 0:
            raise InvalidInputError("instances.id", int(ids.min()), "instance ids must be > 0",
                                    kind="query")
        if len(set(ids.tolist())) != n:
            raise InvalidInputError("instances.id", sorted(ids.tolist()), "duplicate instance id",
                                    kind="query")
        dist = np.zeros((n, self.registry.max_id + 1))
        colors = np.zeros((n, 3))
        has_color = np.zeros(n, bool)
        for row, inst in enumerate(instances):
            dist[row] = self._label_row(inst)
            if inst.mean_color_rgb is not None:
                color = np.asarray(inst.mean_color_rgb, float).reshape(-1)
                if color.shape != (3,) or not np.all((color >= 0) & (color <= 255)):
                    raise InvalidInputError(f"instances[{inst.id}].mean_color_rgb",
                                            color.tolist(), "must be 3 values in 0..255",
                                            kind="query")
                colors[row] = color
                has_color[row] = True
        boxes = [inst.bbox for inst in instances]
        color_match = np.zeros((n, len(self.colors.names)))
        if has_color.any():
            p = self.colors.probabilities(colors[has_color])
            color_match[has_color] = p / p.max(axis=1, keepdims=True)
        return _InstanceTable(
            instances=instances, ids=ids, label_distribution=dist,
            class_ids=dist.argmax(axis=1) if n else np.zeros(0, np.int64),
            color_match=color_match,
            volumes_m3=np.array([float(np.prod(b.size_m)) for b in boxes]),
            extents=GravityExtents.from_boxes(boxes, self.config.spatial.up_axis),
            centroids_m=np.array([inst.centroid_m for inst in instances]).reshape(n, 3))

    def _label_row(self, inst: MapInstance) -> np.ndarray:
        """[max_id + 1] label distribution of an instance (its label when none is given)."""
        row = np.zeros(self.registry.max_id + 1)
        items = inst.label_distribution.items() if inst.label_distribution else [
            (inst.label_id, 1.0)]
        for label_id, p in items:
            where = f"instances[{inst.id}].label_distribution"
            if int(label_id) not in self.registry:
                raise InvalidInputError(where, label_id, "label id unknown to the registry",
                                        kind="query")
            if not np.isfinite(p) or p < 0:
                raise InvalidInputError(where, p, "probabilities must be finite and >= 0",
                                        kind="query")
            row[int(label_id)] += float(p)
        if row.sum() <= 0:
            raise InvalidInputError(f"instances[{inst.id}].label_distribution",
                                    inst.label_distribution, "sums to 0", kind="query")
        return row / row.sum()

    # ---- queries -----------------------------------------------------------------------------
    def query_objects(self, text: str, max_results: int = 0,
                      min_score: float | None = None) -> QueryResult:
        """Instances matching ``text``, best first.

        Args:
            text: free-text query ("mug", "red box", "lamp on the desk").
            max_results: at most this many results; 0 = no limit.
            min_score: threshold in (0, 1]; None = ``config.min_score`` (calibrated).

        Raises:
            InvalidInputError: empty query, negative ``max_results`` or ``min_score`` out of
                range.
        """
        start = time.perf_counter()
        if max_results < 0:
            raise InvalidInputError("max_results", max_results, "must be >= 0", kind="query")
        threshold = self.config.min_score if min_score is None else float(min_score)
        if not 0.0 < threshold <= 1.0:
            raise InvalidInputError("min_score", min_score, "must be in (0, 1]", kind="query")
        parsed = parse_query(text, self.colors.canonical)
        notes = [f"ignored '{term}': needs a viewpoint, which a map query does not have"
                 for term in parsed.unsupported_terms]
        table = self._table
        scores = self._attribute_scores(parsed, table, notes)
        relation = np.ones(len(table.ids))
        anchor_ids = np.zeros(len(table.ids), np.int64)
        base = scores["text"] * scores["color"] * scores["size"]
        if parsed.relation is not None and parsed.anchor is not None:
            # relation <= 1, so only instances already at the threshold can pass.
            targets = np.flatnonzero(base >= threshold)
            relation, anchor_ids = self._relation_scores(parsed, table, targets, threshold,
                                                         notes)
        final = base * relation
        if not self.config.include_stuff:
            final = final * np.array([inst.is_thing for inst in table.instances], float)
        order = [i for i in np.lexsort((table.ids, -final)) if final[i] >= threshold]
        if max_results:
            order = order[:max_results]
        matches = [self._match(i, final, scores, relation, anchor_ids) for i in order]
        return QueryResult(query=text, parsed=parsed, min_score=threshold, matches=matches,
                           notes=notes, elapsed_ms=(time.perf_counter() - start) * 1e3)

    def _attribute_scores(self, parsed: ParsedQuery, table: _InstanceTable,
                          notes: list[str]) -> dict[str, Any]:
        """Text, colour and size factors of every instance, plus explanation lookups."""
        n = len(table.ids)
        text = np.ones(n)
        matched_label = table.class_ids.copy()
        matched_text = [""] * (self.registry.max_id + 1)
        if parsed.noun_phrase and n:
            match = self.matcher.match(parsed.noun_phrase)
            contribution = table.label_distribution * match.probability[None, :]
            text = contribution.sum(axis=1)
            matched_label = np.where(text > 0, contribution.argmax(axis=1), table.class_ids)
            matched_text = list(match.best_text)
            if self.visual is not None:
                visual = self.visual.relevancy(parsed.noun_phrase, table.ids)
                known = np.isfinite(visual)
                text[known] = np.maximum(text[known], visual[known])
        color = np.ones(n)
        for word in parsed.colors:
            color *= table.color_match[:, self.colors.names.index(word)]
        size = np.ones(n)
        if parsed.size is not None and n:
            size = size_scores(table.volumes_m3, table.class_ids, parsed.size,
                               self.config.spatial.size_ratio)
            if np.all(size[text > 0] == 1.0):
                notes.append(f"size word '{parsed.size.value}' ignored: the matching instances "
                             "show no size differences within their class")
        return {"text": text, "color": color, "size": size, "label": matched_label,
                "matched_text": matched_text}

    def _relation_scores(self, parsed: ParsedQuery, table: _InstanceTable, targets: np.ndarray,
                         threshold: float, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per instance, the best score of an anchor it stands in the relation to, and that
        anchor's id (0 for instances outside ``targets`` or without such an anchor)."""
        n = len(table.ids)
        relation = np.zeros(n)
        anchor_ids = np.zeros(n, np.int64)
        anchor = self._attribute_scores(parsed.anchor, table, notes)
        anchor_score = anchor["text"] * anchor["color"] * anchor["size"]
        anchors = np.flatnonzero(anchor_score >= threshold)
        if anchors.size == 0:
            notes.append(f"no instance matches the reference object '{parsed.anchor.text}'")
        if anchors.size == 0 or targets.size == 0:
            return relation, anchor_ids
        ext = table.extents
        holds = relation_matrix(
            parsed.relation, GravityExtents(ext.lo[targets], ext.hi[targets], ext.center[targets]),
            GravityExtents(ext.lo[anchors], ext.hi[anchors], ext.center[anchors]),
            [table.instances[i].bbox for i in anchors], table.centroids_m[targets],
            self.config.spatial)
        holds &= table.ids[targets][:, None] != table.ids[anchors][None, :]
        weighted = holds * anchor_score[anchors][None, :]
        relation[targets] = weighted.max(axis=1)
        anchor_ids[targets] = np.where(relation[targets] > 0,
                                       table.ids[anchors][weighted.argmax(axis=1)], 0)
        return relation, anchor_ids

    def _match(self, i: int, final: np.ndarray, scores: dict[str, Any], relation: np.ndarray,
               anchor_ids: np.ndarray) -> QueryMatch:
        inst = self._table.instances[i]
        label_id = int(scores["label"][i])
        return QueryMatch(
            instance=dataclasses.replace(inst, score=float(final[i])), score=float(final[i]),
            text_score=float(scores["text"][i]), color_score=float(scores["color"][i]),
            size_score=float(scores["size"][i]), relation_score=float(relation[i]),
            matched_label=self.registry.by_id(label_id).name,
            matched_text=scores["matched_text"][label_id], anchor_id=int(anchor_ids[i]))


class ObjectQueryEngine(QueryEngine):
    """Queries with calibrated sentence-embedding label matching (packaged MiniLM by default).

    The text model loads once per process; label texts are embedded at construction and query
    phrases are cached, so a query costs one short embedding plus array operations.
    """

    def __init__(self, config: QueryConfig | None = None, registry: LabelRegistry | None = None,
                 embedder: TextEmbedder | None = None, visual: VisualScorer | None = None):
        config = config or QueryConfig()
        registry = registry or LabelRegistry.default()
        super().__init__(config, registry,
                         EmbeddingLabelMatcher(registry, config.text, embedder), visual)


class RegistryQueryEngine(QueryEngine):
    """Queries matched through the registry's phrases only (no model; exact and synonyms)."""

    def __init__(self, config: QueryConfig | None = None, registry: LabelRegistry | None = None,
                 visual: VisualScorer | None = None):
        config = config or QueryConfig(use_text_embeddings=False)
        registry = registry or LabelRegistry.default()
        super().__init__(config, registry, RegistryLabelMatcher(registry), visual)


def create_query_engine(config: dict[str, Any] | QueryConfig | None,
                        registry: LabelRegistry) -> QueryEngine:
    """The engine a config asks for (``use_text_embeddings`` picks the flavour)."""
    if not isinstance(config, QueryConfig):
        config = QueryConfig.from_dict(config, "query")
    if config.use_text_embeddings:
        return ObjectQueryEngine(config, registry)
    return RegistryQueryEngine(config, registry)
