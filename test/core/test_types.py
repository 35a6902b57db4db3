import numpy as np
import pytest

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.types import (CameraIntrinsics, MapInstance, OrientedBox,
                                        PanopticMesh, PanopticSegmentation2D, RgbdFrame, Segment,
                                        validate_rigid_transform)

INTR = CameraIntrinsics(width=8, height=6, fx=5.0, fy=5.0, cx=3.5, cy=2.5)


def make_frame(**changes):
    kwargs = dict(stamp_ns=1, rgb=np.zeros((6, 8, 3), np.uint8),
                  depth_m=np.ones((6, 8), np.float32), T_world_cam=np.eye(4), intrinsics=INTR)
    kwargs.update(changes)
    return RgbdFrame(**kwargs)


def test_intrinsics_validation_names_field():
    with pytest.raises(InvalidInputError, match="intrinsics.fx"):
        CameraIntrinsics(width=8, height=6, fx=0.0, fy=5.0, cx=3.5, cy=2.5)
    with pytest.raises(InvalidInputError, match="intrinsics.fy"):
        CameraIntrinsics(width=8, height=6, fx=5.0, fy=-1.0, cx=3.5, cy=2.5)
    with pytest.raises(InvalidInputError, match="intrinsics.width"):
        CameraIntrinsics(width=0, height=6, fx=5.0, fy=5.0, cx=3.5, cy=2.5)


def test_intrinsics_K_and_scaling():
    K = INTR.K
    assert K[0, 0] == 5.0 and K[1, 2] == 2.5 and K[2, 2] == 1.0
    half = CameraIntrinsics(width=640, height=480, fx=500, fy=500, cx=319.5, cy=239.5).scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    assert half.fx == pytest.approx(250.0) and half.cx == pytest.approx(159.5)


def test_frame_accepts_valid_input():
    frame = make_frame()
    assert frame.depth_m.dtype == np.float32
    assert frame.valid_depth_mask.all()


@pytest.mark.parametrize("bad, match", [
    (np.full((6, 8), np.nan, np.float32), "NaN"),
    (np.full((6, 8), np.inf, np.float32), "inf"),
    (-np.ones((6, 8), np.float32), "min -1.000"),
])
def test_frame_rejects_bad_depth(bad, match):
    with pytest.raises(InvalidInputError, match=match) as info:
        make_frame(depth_m=bad)
    assert info.value.field == "depth_m"


def test_frame_rejects_size_mismatch_and_encoding():
    with pytest.raises(InvalidInputError) as info:
        make_frame(depth_m=np.ones((5, 8), np.float32))
    assert info.value.kind == "size_mismatch"
    with pytest.raises(InvalidInputError) as info:
        make_frame(rgb=np.zeros((6, 8, 3), np.float32))
    assert info.value.field == "rgb" and info.value.kind == "encoding"


def test_rigid_transform_validation():
    T = np.eye(4)
    T[:3, :3] *= 2.0
    with pytest.raises(InvalidInputError, match="not a rigid transform"):
        validate_rigid_transform(T)
    T = np.eye(4)
    T[0, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        validate_rigid_transform(T)
    T = np.eye(4)
    T[3, 0] = 1.0
    with pytest.raises(InvalidInputError, match="last row"):
        validate_rigid_transform(T)
    reflection = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(InvalidInputError):
        validate_rigid_transform(reflection)


def test_segmentation_rejects_ids_missing_from_list():
    ids = np.zeros((4, 4), np.int32)
    ids[0, 0] = 3
    with pytest.raises(InvalidInputError, match=r"\[3\]"):
        PanopticSegmentation2D(ids, (Segment(1, "chair", 10, True, 0.9),))


def test_segmentation_label_and_score_images():
    ids = np.array([[0, 1], [2, 2]], np.int32)
    seg = PanopticSegmentation2D(ids, (Segment(1, "chair", 10, True, 0.9),
                                       Segment(2, "wall", 1, False, 0.5)))
    np.testing.assert_array_equal(seg.label_image(), [[0, 10], [1, 1]])
    np.testing.assert_allclose(seg.score_image(), [[0, 0.9], [0.5, 0.5]])


def test_segment_validation():
    with pytest.raises(InvalidInputError, match="score"):
        Segment(1, "chair", 10, True, 1.5)
    with pytest.raises(InvalidInputError, match="segment.id"):
        Segment(0, "chair", 10, True, 0.5)
    with pytest.raises(InvalidInputError, match="duplicate"):
        PanopticSegmentation2D(np.zeros((2, 2), np.int32),
                               (Segment(1, "a", 10, True), Segment(1, "b", 11, True)))


def test_mesh_checks_per_vertex_arrays():
    with pytest.raises(InvalidInputError, match="label_ids"):
        PanopticMesh(np.zeros((3, 3)), [[0, 1, 2]], np.zeros((3, 3)), np.zeros(2), np.zeros(3))
    with pytest.raises(InvalidInputError, match="out of range"):
        PanopticMesh(np.zeros((3, 3)), [[0, 1, 3]], np.zeros((3, 3)), np.zeros(3), np.zeros(3))
    assert PanopticMesh.empty().num_vertices == 0


def test_oriented_box_contains_and_corners():
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    box = OrientedBox([1.0, 0.0, 0.0], [[c, -s, 0], [s, c, 0], [0, 0, 1]], [2.0, 1.0, 1.0])
    inside = box.contains(np.array([[1.0, 0.0, 0.0], [1.6, 0.6, 0.0], [1.0, 0.9, 0.0]]))
    assert inside.tolist() == [True, True, False]
    assert box.corners_m().shape == (8, 3)
    inst = MapInstance(1, "chair", 10, True, 0.9, [0, 0, 0], box, 3)
    assert inst.centroid_m.shape == (3,)
