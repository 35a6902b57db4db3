import numpy as np
import pytest

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io import wire


@pytest.mark.parametrize("encoding, shape, dtype", [
    ("rgb8", (4, 5, 3), np.uint8), ("bgra8", (4, 5, 4), np.uint8), ("mono8", (4, 5), np.uint8),
    ("16UC1", (4, 5), np.uint16), ("32FC1", (4, 5), np.float32), ("32SC1", (4, 5), np.int32),
])
def test_image_round_trip(encoding, shape, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random(shape) * 200).astype(dtype)
    h, w, step, data = wire.encode_image(array, encoding)
    back = wire.decode_image(encoding, h, w, step, False, data)
    np.testing.assert_array_equal(back, array)


def test_decode_handles_row_padding_and_big_endian():
    array = np.arange(12, dtype=np.uint16).reshape(3, 4)
    rows = [np.concatenate([r.astype(">u2").view(np.uint8), np.zeros(6, np.uint8)]) for r in array]
    data = np.concatenate(rows).tobytes()
    back = wire.decode_image("16UC1", 3, 4, 14, True, data)
    np.testing.assert_array_equal(back, array)


def test_bad_images_name_the_field():
    with pytest.raises(InvalidInputError, match="rgb.encoding") as info:
        wire.decode_rgb("yuv422", 2, 2, 4, False, bytes(8))
    assert info.value.kind == "encoding"
    with pytest.raises(InvalidInputError, match="expected height"):
        wire.decode_image("rgb8", 2, 2, 6, False, bytes(11))


def test_rgb_from_bgr_and_mono():
    bgr = np.zeros((1, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    rgb = wire.decode_rgb("bgr8", *wire.encode_image(bgr, "bgr8")[:3], False,
                          wire.encode_image(bgr, "bgr8")[3])
    assert rgb[0, 0].tolist() == [0, 0, 255]


def test_depth_decoding_units_and_rep118():
    mm = np.array([[0, 1000], [2500, 65535]], np.uint16)
    depth, stats = wire.decode_depth_m("16UC1", *wire.encode_image(mm, "16UC1")[:3], False,
                                       wire.encode_image(mm, "16UC1")[3])
    np.testing.assert_allclose(depth, [[0, 1.0], [2.5, 65.535]])
    assert stats.num_zero == 1
    metres = np.array([[np.nan, 1.5], [np.inf, -np.inf]], np.float32)
    fields = wire.encode_image(metres, "32FC1")
    depth, stats = wire.decode_depth_m("32FC1", *fields[:3], False, fields[3])
    np.testing.assert_allclose(depth, [[0, 1.5], [0, 0]])
    assert (stats.num_nan, stats.num_inf) == (1, 2)
    fields = wire.encode_image(np.array([[-0.5]], np.float32), "32FC1")
    with pytest.raises(InvalidInputError, match="negative"):
        wire.decode_depth_m("32FC1", *fields[:3], False, fields[3])
    with pytest.raises(InvalidInputError, match="not a depth encoding"):
        wire.decode_depth_m("rgb8", 1, 1, 3, False, bytes(3))


def test_depth_encoding_round_trip_mm():
    depth = np.array([[0.0, 1.2345]], np.float32)
    h, w, step, data = wire.encode_depth(depth, "16UC1")
    back, _ = wire.decode_depth_m("16UC1", h, w, step, False, data)
    np.testing.assert_allclose(back, [[0.0, 1.234]], atol=1e-3)


def test_quaternion_round_trip_and_rejection():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = wire.quaternion_to_rotation(q)
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        q2 = wire.rotation_to_quaternion(R)
        assert min(np.abs(q2 - q).max(), np.abs(q2 + q).max()) < 1e-9
    with pytest.raises(InvalidInputError, match="norm is 2.0000"):
        wire.quaternion_to_rotation([0, 0, 0, 2.0])
    with pytest.raises(InvalidInputError, match="NaN"):
        wire.pose_to_matrix([0, np.nan, 0], [0, 0, 0, 1])


def test_pose_matrix_round_trip():
    T = wire.pose_to_matrix([1, 2, 3], [0, 0, np.sin(0.3), np.cos(0.3)])
    position, quat = wire.matrix_to_pose(T)
    np.testing.assert_allclose(position, [1, 2, 3])
    np.testing.assert_allclose(wire.pose_to_matrix(position, quat), T, atol=1e-12)


def test_stamps():
    assert wire.stamp_to_ns(3, 5) == 3_000_000_005
    assert wire.ns_to_stamp(3_000_000_005) == (3, 5)


def test_panoptic_cloud_round_trip():
    points = np.array([[0, 1, 2], [3, 4, 5]], np.float32)
    colors = np.array([[255, 0, 10], [1, 2, 3]], np.uint8)
    data = wire.pack_panoptic_cloud(points, colors, [10, 0], [7, 70000])
    assert len(data) == 2 * wire.PANOPTIC_CLOUD_POINT_STEP
    out = wire.unpack_cloud(list(wire.PANOPTIC_CLOUD_FIELDS), wire.PANOPTIC_CLOUD_POINT_STEP, 2,
                            False, data)
    np.testing.assert_array_equal(np.stack([out["x"], out["y"], out["z"]], 1), points)
    np.testing.assert_array_equal(out["rgb"], colors)
    assert out["label"].tolist() == [10, 0] and out["instance"].tolist() == [7, 70000]
    with pytest.raises(InvalidInputError, match="one per point"):
        wire.pack_panoptic_cloud(points, colors[:1], [1, 2], [1, 2])
