"""Published instance ids of the refined map: keep the ids a planner already knows.

Tokens have stable token ids, but a planner knows the instant map's instance ids. When the
refined map publishes, every token not yet bound gets the id of the prior instance it overlaps
most on the shared mesh vertices (Hungarian on IoU, at least ``min_iou``), unless that id is
already taken; the rest get fresh ids above every id seen so far. Bindings never change
afterwards. Stuff regions take the prior's stuff region id of their label.

A field restarted on a grown scene box has new tokens; :func:`rebind_tokens` binds them to the
ids published before the restart (again by vertex IoU), so those ids survive the restart.

Owns: :class:`IdBindingState`, :func:`bind_ids`, :func:`rebind_tokens`,
:func:`published_instance_ids`, :func:`passthrough_ids`. Does not own: how vertices get tokens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_mapper.core.types import NO_INSTANCE_ID


@dataclass
class IdBindingState:
    """Token id -> published id and stuff label -> published id, plus the id counter."""

    token_to_map: dict[int, int] = field(default_factory=dict)
    stuff_to_map: dict[int, int] = field(default_factory=dict)
    next_id: int = 1
    """Fresh ids start here (kept above every prior and published id seen)."""
    fresh_ids: list[int] = field(default_factory=list)
    """Published ids that did not come from the prior (a later prior instance may reuse one)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "IdBindingState":
        return cls({int(k): int(v) for k, v in data.get("token_to_map", {}).items()},
                   {int(k): int(v) for k, v in data.get("stuff_to_map", {}).items()},
                   int(data.get("next_id", 1)), [int(i) for i in data.get("fresh_ids", [])])


def bind_ids(state: IdBindingState, vertex_token_ids: np.ndarray,
             prior_instance_ids: np.ndarray, prior_thing_ids: set[int],
             prior_stuff_ids: dict[int, int], stuff_labels: np.ndarray,
             min_iou: float) -> None:
    """Bind the tokens and stuff labels present on the mesh (updates ``state`` in place).

    Args:
        state: bindings so far.
        vertex_token_ids: [V] token id of each vertex (0 = no token).
        prior_instance_ids: [V] the prior map's instance id of the same vertices.
        prior_thing_ids: ids of the prior's thing instances.
        prior_stuff_ids: stuff label id -> the prior's stuff region id.
        stuff_labels: stuff label ids present in the refined labels.
        min_iou: smallest vertex IoU for a token to inherit a prior id.
    """
    seen = [state.next_id - 1, *prior_thing_ids, *prior_stuff_ids.values(),
            *state.token_to_map.values(), *state.stuff_to_map.values()]
    state.next_id = max(seen + [int(prior_instance_ids.max(initial=0))]) + 1
    used = set(state.token_to_map.values()) | set(state.stuff_to_map.values())
    # np.unique sorts: _positions needs sorted keys
    present = [int(t) for t in np.unique(vertex_token_ids) if t != 0]
    unbound = [t for t in present if t not in state.token_to_map]
    candidates = sorted(i for i in prior_thing_ids if i not in used)
    if unbound and candidates:
        iou = _iou_matrix(vertex_token_ids, prior_instance_ids, unbound, candidates)
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] >= min_iou:
                state.token_to_map[unbound[r]] = candidates[c]
                used.add(candidates[c])
    for token in unbound:
        if token not in state.token_to_map:
            state.token_to_map[token] = state.next_id
            state.fresh_ids.append(state.next_id)
            state.next_id += 1
    for label in (int(x) for x in stuff_labels):
        if label in state.stuff_to_map:
            continue
        prior_id = prior_stuff_ids.get(label)
        if prior_id is not None and prior_id not in used:
            state.stuff_to_map[label] = prior_id
        else:
            state.stuff_to_map[label] = state.next_id
            state.fresh_ids.append(state.next_id)
            state.next_id += 1
        used.add(state.stuff_to_map[label])


def rebind_tokens(state: IdBindingState, vertex_token_ids: np.ndarray,
                  published_ids: np.ndarray, published_thing_ids: set[int],
                  min_iou: float) -> IdBindingState:
    """Bindings for the tokens of a restarted field (``state`` is not changed).

    The result keeps the stuff bindings, the id counter and the fresh ids of ``state``; its
    token bindings start empty, and every token present on the mesh takes the published thing
    id it overlaps most (Hungarian on vertex IoU, at least ``min_iou``), else a fresh id.

    Args:
        state: the bindings of the field that published until now.
        vertex_token_ids: [V] token id of each vertex under the restarted field (0 = none).
        published_ids: [V] the instance ids published until now at the same vertices.
        published_thing_ids: the thing instance ids among them.
        min_iou: smallest vertex IoU for a token to take a published id.
    """
    rebound = IdBindingState({}, dict(state.stuff_to_map), state.next_id, list(state.fresh_ids))
    bind_ids(rebound, vertex_token_ids, published_ids, published_thing_ids, {}, np.zeros(0),
             min_iou)
    return rebound


def _iou_matrix(vertex_token_ids: np.ndarray, prior_instance_ids: np.ndarray,
                tokens: list[int], prior_ids: list[int]) -> np.ndarray:
    """[len(tokens), len(prior_ids)] vertex IoU."""
    t_idx = _positions(vertex_token_ids, tokens)
    p_idx = _positions(prior_instance_ids, prior_ids)
    t_size = np.bincount(t_idx[t_idx >= 0], minlength=len(tokens)).astype(float)
    p_size = np.bincount(p_idx[p_idx >= 0], minlength=len(prior_ids)).astype(float)
    both = (t_idx >= 0) & (p_idx >= 0)
    inter = np.zeros((len(tokens), len(prior_ids)))
    np.add.at(inter, (t_idx[both], p_idx[both]), 1.0)
    union = t_size[:, None] + p_size[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)


def _positions(values: np.ndarray, keys: list[int]) -> np.ndarray:
    """[V] position of each value in ``keys`` (sorted, unique), or -1."""
    keys_arr = np.asarray(keys, np.int64)
    values = np.asarray(values, np.int64)
    pos = np.clip(np.searchsorted(keys_arr, values), 0, len(keys_arr) - 1)
    return np.where(keys_arr[pos] == values, pos, -1)


def published_instance_ids(state: IdBindingState, vertex_token_ids: np.ndarray,
                           vertex_stuff_labels: np.ndarray) -> np.ndarray:
    """[V] published instance id per vertex: the token's binding, else the stuff region id of
    the vertex's stuff label (0 where neither applies)."""
    out = np.full(len(vertex_token_ids), NO_INSTANCE_ID, np.int32)
    for token, map_id in state.token_to_map.items():
        out[vertex_token_ids == token] = map_id
    stuff = vertex_token_ids == 0
    for label, map_id in state.stuff_to_map.items():
        out[stuff & (vertex_stuff_labels == label)] = map_id
    return out


def passthrough_ids(state: IdBindingState, prior_ids: np.ndarray, prior_labels: np.ndarray,
                    is_stuff_label: np.ndarray) -> np.ndarray:
    """[V] published id of vertices (or points) that keep the prior's answer.

    A stuff label keeps its published region id; a prior thing id is published as it is (tokens
    inherit prior ids, so it agrees with theirs), unless one of our fresh ids took that value
    (then 0: no instance rather than a wrong one).

    Args:
        prior_ids: [V] the prior's instance ids.
        prior_labels: [V] the prior's label ids.
        is_stuff_label: [max_label + 1] bool lookup table.
    """
    labels = np.asarray(prior_labels, np.int64)
    stuff = is_stuff_label[np.clip(labels, 0, len(is_stuff_label) - 1)] & (labels > 0)
    out = np.where(np.isin(prior_ids, state.fresh_ids), NO_INSTANCE_ID, prior_ids)
    for label, map_id in state.stuff_to_map.items():
        out = np.where(stuff & (labels == label), map_id, out)
    return out.astype(np.int32)
