"""Spatial relations and relative size words on hand-placed boxes."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.query.query_parser import Relation, SizeWord
from panoptic_mapper.core.query.spatial import (GravityExtents, SpatialConfig, gravity_basis,
                                                relation_matrix, size_scores)
from panoptic_mapper.core.types import OrientedBox


def box(center, size, yaw_deg=0.0):
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    return OrientedBox(center_m=center, R_world_box=[[c, -s, 0], [s, c, 0], [0, 0, 1]],
                       size_m=size)


TABLE = box([0, 0, 0.375], [1.2, 0.8, 0.75])          # top at z = 0.75
MUG_ON = box([0.3, 0.1, 0.80], [0.08, 0.08, 0.10])     # bottom at 0.75
MUG_FLOOR = box([2.0, 0, 0.05], [0.08, 0.08, 0.10])
BOX_UNDER = box([0, 0, 0.15], [0.3, 0.3, 0.3])         # top at 0.3, within the footprint
MUG_HOVER = box([0.3, 0.1, 1.20], [0.08, 0.08, 0.10])  # 0.4 m above the table
MUG_OFF_EDGE = box([0.9, 0.0, 0.80], [0.08, 0.08, 0.10])  # beside the table, same height
SHELF = box([5, 0, 1.0], [1.0, 0.4, 2.0])              # 0..2 m tall
BOOK_ON_BOARD = box([5, 0, 0.95], [0.2, 0.2, 0.3])     # on an inner board, bottom at 0.8 m
BOX_AT_SHELF_FOOT = box([5, 0, 0.1], [0.2, 0.2, 0.2])  # on the floor inside the footprint


def matrix(relation, targets, anchors, config=None):
    config = config or SpatialConfig()
    t = GravityExtents.from_boxes(targets, config.up_axis)
    a = GravityExtents.from_boxes(anchors, config.up_axis)
    return relation_matrix(relation, t, a, anchors, np.array([b.center_m for b in targets]),
                           config)


def test_on_under_in_near():
    targets = [MUG_ON, MUG_FLOOR, BOX_UNDER, MUG_HOVER, MUG_OFF_EDGE]
    on = matrix(Relation.ON, targets, [TABLE])[:, 0]
    np.testing.assert_array_equal(on, [True, False, False, False, False])
    under = matrix(Relation.UNDER, targets, [TABLE])[:, 0]
    np.testing.assert_array_equal(under, [False, False, True, False, False])
    inside = matrix(Relation.IN, targets, [TABLE])[:, 0]
    np.testing.assert_array_equal(inside, [False, False, True, False, False])
    # Gaps to the table: 0, 2.0 - 0.04 - 0.6 = 1.36, 0, 0.4 above, 0.9 - 0.04 - 0.6 = 0.26.
    near = matrix(Relation.NEAR, targets, [TABLE])[:, 0]
    np.testing.assert_array_equal(near, [True, False, True, True, True])
    near_tight = matrix(Relation.NEAR, targets, [TABLE],
                        SpatialConfig(near_distance_m=0.3))[:, 0]
    np.testing.assert_array_equal(near_tight, [True, False, True, False, True])


def test_on_includes_inner_surfaces_but_not_the_floor_below():
    on = matrix(Relation.ON, [BOOK_ON_BOARD, BOX_AT_SHELF_FOOT, MUG_ON], [SHELF, TABLE])
    np.testing.assert_array_equal(on, [[True, False], [False, False], [False, True]])
    floor = box([0, 0, -0.01], [10, 10, 0.02])
    assert matrix(Relation.ON, [BOX_AT_SHELF_FOOT], [floor])[0, 0]


def test_rotated_anchor_uses_its_world_extent():
    # A table turned by 90 degrees: its footprint is 0.8 (x) by 1.2 (y).
    turned = box([0, 0, 0.375], [1.2, 0.8, 0.75], yaw_deg=90)
    mug = box([0.0, 0.55, 0.80], [0.08, 0.08, 0.10])
    assert matrix(Relation.ON, [mug], [turned])[0, 0]
    assert not matrix(Relation.ON, [mug], [TABLE])[0, 0]


def test_other_up_axis():
    # The table-and-mug scene in a world whose up axis is +y.
    config = SpatialConfig(up_axis=(0.0, 1.0, 0.0))
    table = OrientedBox([0, 0.375, 0], np.eye(3), [1.2, 0.75, 0.8])
    mug = OrientedBox([0.3, 0.80, 0.1], np.eye(3), [0.08, 0.10, 0.08])
    assert matrix(Relation.ON, [mug], [table], config)[0, 0]
    basis = gravity_basis((0.0, 1.0, 0.0))
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(basis), 1.0)


def test_size_scores_compare_within_each_class():
    volumes = np.array([1.0, 2.0, 1.5, 0.5, 0.52])
    classes = np.array([10, 10, 10, 18, 18])
    # Chairs: median 1.5 -> big above 1.725, small below 1.304. Mugs differ by 4%: no signal.
    np.testing.assert_array_equal(size_scores(volumes, classes, SizeWord.BIG, 1.15),
                                  [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(size_scores(volumes, classes, SizeWord.SMALL, 1.15),
                                  [1, 0, 0, 1, 1])
    np.testing.assert_array_equal(size_scores(volumes, classes, SizeWord.BIGGEST, 1.15),
                                  [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(size_scores(volumes, classes, SizeWord.SMALLEST, 1.15),
                                  [1, 0, 0, 1, 1])


def test_config_validation():
    with pytest.raises(ConfigError, match="up_axis"):
        SpatialConfig(up_axis=(0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="size_ratio"):
        SpatialConfig(size_ratio=0.5)
