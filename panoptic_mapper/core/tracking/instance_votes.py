"""Per-voxel instance evidence: one (id, weight) slot per voxel, updated by weighted majority.

A voxel keeps the instance id it has seen most (Misra-Gries with one counter, as voxblox++ keeps
its label count): a vote for the stored id adds its weight (capped), a vote for another id
subtracts it, and when the weight drops below zero the new id takes the slot with the remainder.
Id 0 ("no thing", cast by stuff pixels) competes like any id, so a wall voxel wrongly painted by a
bleeding object mask is won back by later wall votes. Weight 0 means "never voted".

Owns: the slot update. Does not own: which id a pixel votes for (``tracker.py``).
"""
from __future__ import annotations

import numpy as np


def fuse_instance_votes(slot_ids: np.ndarray, slot_weights: np.ndarray, voxels: np.ndarray,
                        instance_ids: np.ndarray, weights: np.ndarray, resolve: np.ndarray,
                        count_cap: float) -> np.ndarray:
    """Apply one frame of instance votes in place.

    Votes of the same frame are first summed per (voxel, id); each voxel then takes one vote:
    the id with the largest sum, weighted by its margin over the other ids of that frame.

    Args:
        slot_ids: [M] int32 stored id per voxel (a view into the grid).
        slot_weights: [M] float32 stored weight per voxel (a view into the grid).
        voxels: [N] int64 flat voxel index per vote.
        instance_ids: [N] int64 voted id (0 = no thing; negative = no vote).
        weights: [N] float32 vote weights.
        resolve: [K] int32 table from stored id to current id (merges, retirements).
        count_cap: largest weight a slot can hold.

    Returns:
        [U] int64 voxels whose slot was updated.
    """
    keep = (weights > 0) & (instance_ids >= 0)
    voxels, ids, w = voxels[keep], instance_ids[keep].astype(np.int64), weights[keep]
    if voxels.size == 0:
        return np.zeros(0, np.int64)
    stride = int(ids.max()) + 1
    key = voxels * stride + ids
    order = np.argsort(key, kind="stable")
    key, w = key[order], w[order].astype(np.float64)
    pair_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    pair_w = np.add.reduceat(w, pair_start)
    pair_voxel, pair_id = np.divmod(key[pair_start], stride)
    voxel_start = np.flatnonzero(np.r_[True, pair_voxel[1:] != pair_voxel[:-1]])
    voxel_of_pair = np.cumsum(np.r_[False, pair_voxel[1:] != pair_voxel[:-1]])
    voxel_total = np.add.reduceat(pair_w, voxel_start)
    voxel_best = np.maximum.reduceat(pair_w, voxel_start)
    # The first pair of each voxel that reaches the voxel's best weight.
    is_best = np.flatnonzero(pair_w == voxel_best[voxel_of_pair])
    first = np.r_[True, voxel_of_pair[is_best][1:] != voxel_of_pair[is_best][:-1]]
    best = is_best[first]
    vox = pair_voxel[best]
    new_id = pair_id[best]
    margin = 2.0 * pair_w[best] - voxel_total  # winner minus all others
    ok = margin > 0
    vox, new_id, margin = vox[ok], new_id[ok], margin[ok].astype(np.float32)
    if vox.size == 0:
        return vox
    stored_raw = slot_ids[vox].astype(np.int64)
    table_size = resolve.size
    stored = np.where(stored_raw < table_size, resolve[np.clip(stored_raw, 0, table_size - 1)], 0)
    stored_w = slot_weights[vox]
    agree = (stored == new_id) | (stored_w <= 0)
    updated_w = np.where(agree, stored_w + margin, stored_w - margin)
    flip = updated_w < 0
    final_id = np.where(agree | flip, new_id, stored)
    final_w = np.minimum(np.abs(updated_w), count_cap).astype(np.float32)
    slot_ids[vox] = final_id.astype(np.int32)
    slot_weights[vox] = final_w
    return vox
