"""Camera trajectories: speed and turn-rate limits, eye height, clearance, revisits, stamps."""
import math

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.scene import SceneConfig, TrajectoryConfig, generate_scene
from panoptic_mapper.core.scene import generate_trajectory
from panoptic_mapper.core.scene.trajectory import camera_rotation
from panoptic_mapper.core.types import validate_rigid_transform


@pytest.fixture(scope="module", params=[0, 3])
def scene(request):
    return generate_scene(SceneConfig(seed=request.param))


@pytest.fixture(scope="module")
def trajectory(scene):
    return generate_trajectory(scene, TrajectoryConfig(num_frames=300, seed=1))


def test_camera_rotation_is_opencv_looking_along_yaw():
    R = camera_rotation(np.radians([90.0]), np.radians([0.0]), np.zeros(1))[0]
    np.testing.assert_allclose(R[:, 2], [0, 1, 0], atol=1e-12)   # optical axis: azimuth 90 deg
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    np.testing.assert_allclose(R[:, 0], [1, 0, 0], atol=1e-12)   # image right
    down = camera_rotation(np.zeros(1), np.radians([-30.0]), np.zeros(1))[0]
    assert down[2, 2] == pytest.approx(-0.5)  # pitch -30 deg looks down
    validate_rigid_transform(np.block([[down, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]))


def test_stamps_and_poses(trajectory):
    assert len(trajectory) == 300
    np.testing.assert_array_equal(np.diff(trajectory.stamps_ns)[:3], [33333333, 33333334,
                                                                        33333333])
    assert trajectory.stamps_ns[0] == 1_000_000_000
    for T in trajectory.T_world_cam[::37]:
        validate_rigid_transform(T)


def test_speed_and_turn_rate_limits(trajectory):
    rate = 30.0
    p = trajectory.positions_m
    speed = np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1) * rate
    assert speed.max() <= 0.35 + 1e-6  # the configured walking speed (max_speed 0.5)
    forward = trajectory.T_world_cam[:, :3, 2]
    yaw = np.unwrap(np.arctan2(forward[:, 1], forward[:, 0]))
    yaw_rate = np.degrees(np.abs(np.diff(yaw))) * rate
    assert yaw_rate.max() <= 45.0 + 0.5
    R = trajectory.T_world_cam[:, :3, :3]
    rel = np.einsum("nji,njk->nik", R[:-1], R[1:])
    angle = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert (angle * rate).max() < 60.0  # yaw + pitch + roll together
    assert speed.mean() > 0.1  # it does walk


def test_eye_height_pitch_and_clearance(scene, trajectory):
    p = trajectory.positions_m
    assert p[:, 2].min() >= 1.2 - 1e-9 and p[:, 2].max() <= 1.6 + 1e-9
    forward = trajectory.T_world_cam[:, :3, 2]
    pitch = np.degrees(np.arcsin(forward[:, 2]))
    assert pitch.min() >= -40.5 and pitch.max() <= -4.5
    room = scene.rooms[0]
    assert room.contains_xy(p[:, :2], 0.45 - 1e-6).all()
    for inst in scene.instances:
        local = (p[:, :2] - inst.bbox.center_m[:2]) @ inst.bbox.R_world_box[:2, :2]
        inside = np.all(np.abs(local) <= inst.bbox.size_m[:2] / 2 + 0.3, axis=1)
        assert not inside.any(), inst.label


def test_places_are_revisited(trajectory):
    """Some pose at least 4 s later is back within 30 cm, looking within 30 degrees."""
    p = trajectory.positions_m
    f = trajectory.T_world_cam[:, :3, 2]
    revisits = 0
    for i in range(0, 150, 5):
        later = np.arange(i + 120, len(p))
        close = (np.linalg.norm(p[later] - p[i], axis=1) < 0.3) & (f[later] @ f[i] > math.cos(
            math.radians(30)))
        revisits += bool(close.any())
    assert revisits >= 3


def test_deterministic_by_seed(scene):
    a = generate_trajectory(scene, TrajectoryConfig(num_frames=50, seed=4))
    b = generate_trajectory(scene, TrajectoryConfig(num_frames=50, seed=4))
    c = generate_trajectory(scene, TrajectoryConfig(num_frames=50, seed=5))
    np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
    assert not np.allclose(a.T_world_cam, c.T_world_cam)


def test_multi_room_tour_passes_the_doorway():
    scene = generate_scene(SceneConfig(seed=1, num_rooms=2, max_groups_per_room=5,
                                       min_thing_classes=8))
    trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=900, seed=0))
    rooms = {r.index for r in scene.rooms for q in trajectory.positions_m[::10]
             if r.contains_xy(q[:2])}
    assert rooms == {0, 1}


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError) as err:
        TrajectoryConfig(clearance_m=0.05)
    assert err.value.field == "clearance_m"
    with pytest.raises(ConfigError) as err:
        TrajectoryConfig(eye_height_m=(1.6, 1.2))
    assert err.value.field == "eye_height_m"
