"""Robot config, kinematics and action-space conversions on the shipped URDF."""
import numpy as np
import pytest
from conftest import ROBOT_CONFIG
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from wall_oss_core.policy import action_space as aspace
from wall_oss_core.robot.config import ConfigError, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics


@pytest.fixture(scope="module")
def config():
    return load_robot_config(ROBOT_CONFIG)


@pytest.fixture(scope="module")
def kinematics(config):
    return BimanualKinematics(config)


def test_config_layout(config):
    assert [a.name for a in config.arms] == ["left", "right"]
    assert len(config.command_joints) == 14
    assert config.command_joints[6] == "left_gripper_joint"
    assert {c.name for c in config.cameras} == {"face_view", "left_wrist_view", "right_wrist_view"}


def _config_copy(tmp_path, old: str, new: str):
    """A copy of the shipped robot config with one edit, pointing at the shipped URDF."""
    text = ROBOT_CONFIG.read_text().replace("../urdf/", str(ROBOT_CONFIG.parent.parent / "urdf") + "/")
    path = tmp_path / "robot.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="action_space must be one of"):
        load_robot_config(_config_copy(tmp_path, "action_space: wall_oss_ee_relative", "action_space: torque"))
    with pytest.raises(ConfigError, match="min must be below max"):
        load_robot_config(_config_copy(tmp_path, "max: [0.80, 0.65, 0.75]", "max: [0.0, 0.65, 0.75]"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_robot_config(tmp_path / "missing.yaml")


def test_unknown_joint_is_a_startup_error(tmp_path):
    with pytest.raises(ValueError, match="left_elbo_joint"):
        BimanualKinematics(load_robot_config(_config_copy(tmp_path, "left_elbow_joint", "left_elbo_joint")))


def test_limits_come_from_urdf_with_margin(kinematics):
    limits = kinematics.limits
    assert limits.lower[1] == pytest.approx(-1.9 + 0.05)
    assert limits.upper[6] == pytest.approx(0.04 - 0.001)
    assert limits.velocity[2] == pytest.approx(2.5)
    assert np.all(limits.acceleration > 0)


def test_home_pose_is_above_table_inside_workspace(config, kinematics):
    poses = kinematics.ee_poses(config.home_positions())
    for arm in config.arms:
        assert arm.workspace.contains(poses[arm.name][:3, 3])
    assert poses["left"][1, 3] > 0 > poses["right"][1, 3]


def test_ik_reaches_reachable_targets(config, kinematics):
    rng = np.random.default_rng(3)
    home = config.home_positions()
    for _ in range(10):
        # targets made by FK of random joint offsets are reachable by construction
        goal = home.copy()
        goal[kinematics.arm_slice("right")] += rng.uniform(-0.3, 0.3, 6)
        target = kinematics.ee_poses(goal)["right"]
        result = kinematics.solve_ik("right", target, home)
        assert result.converged, (result.position_error, result.rotation_error)
        np.testing.assert_allclose(kinematics.ee_poses(result.positions)["right"], target, atol=1e-3)
        assert np.all(result.positions >= kinematics.limits.lower - 1e-12)
        assert np.all(result.positions <= kinematics.limits.upper + 1e-12)


rotations = st.builds(lambda v: Rotation.from_rotvec(v).as_matrix(),
                      st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3).map(np.array))


@given(rotations)
@settings(max_examples=50, deadline=None)
def test_6d_rotation_round_trip(rotation):
    np.testing.assert_allclose(aspace.rotation_from_6d(aspace.rotation_to_6d(rotation)), rotation, atol=1e-9)


def test_6d_from_noisy_rows_is_a_rotation():
    recovered = aspace.rotation_from_6d(np.array([2.0, 0.1, 0.0, 0.3, 1.5, 0.2]))
    np.testing.assert_allclose(recovered @ recovered.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(recovered) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="parallel"):
        aspace.rotation_from_6d(np.array([1.0, 0, 0, 2.0, 0, 0]))


def test_relative_actions_round_trip(config, kinematics):
    rng = np.random.default_rng(0)
    reference = kinematics.ee_poses(config.home_positions())
    poses = {}
    for arm in aspace.ARMS:
        targets = np.tile(reference[arm], (5, 1, 1))
        targets[:, :3, 3] += rng.normal(0, 0.05, (5, 3))
        targets[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.2, (5, 3))).as_matrix() @ reference[arm][:3, :3]
        poses[arm] = targets
    grippers = {arm: rng.uniform(0, 0.04, 5) for arm in aspace.ARMS}
    actions = aspace.poses_to_relative_actions(poses, grippers, reference)
    assert actions.shape == (5, 26) and np.all(actions[:, 20:] == 0)
    back_poses, back_grippers = aspace.relative_actions_to_poses(actions, reference)
    for arm in aspace.ARMS:
        np.testing.assert_allclose(back_poses[arm], poses[arm], atol=1e-12)
        np.testing.assert_allclose(back_grippers[arm], grippers[arm])
    # a zero relative action means "stay where the observation was"
    zero_poses, _ = aspace.relative_actions_to_poses(np.tile(np.r_[0, 0, 0, 1, 0, 0, 0, 1, 0, 0.02] .tolist() * 2 + [0] * 6, (1, 1)), reference)
    np.testing.assert_allclose(zero_poses["left"][0], reference["left"], atol=1e-12)


def test_state_vector_layout_matches_names(kinematics, config):
    poses = kinematics.ee_poses(config.home_positions())
    state = aspace.ee_state_vector(poses, {"left": 0.01, "right": 0.03})
    names = aspace.wall_oss_names(relative=False)
    assert len(names) == len(state) == 26
    assert state[names.index("follow_right_gripper")] == 0.03
    assert state[names.index("follow_left_ee_cartesian_pos_z")] == pytest.approx(poses["left"][2, 3])
    assert aspace.wall_oss_names(relative=True)[0] == "follow_left_ee_cartesian_pos_relative_x"


def test_jerk_limits_come_from_the_config_with_defaults_when_absent(tmp_path, kinematics):
    assert kinematics.limits.jerk[2] == pytest.approx(60.0) and kinematics.limits.jerk[6] == pytest.approx(5.0)
    edited = load_robot_config(_config_copy(tmp_path, "  default: 60.0           # rad/s^3 for revolute joints", "  default: 30.0"))
    assert edited.max_jerk_revolute == 30.0 and edited.max_jerk_gripper == 5.0
    without = ROBOT_CONFIG.read_text().split("max_jerk:")[0] + "position_margin:" + \
        ROBOT_CONFIG.read_text().split("position_margin:")[1]
    path = tmp_path / "no_jerk.yaml"
    path.write_text(without.replace("../urdf/", str(ROBOT_CONFIG.parent.parent / "urdf") + "/"))
    assert load_robot_config(path).max_jerk_revolute == 60.0
    with pytest.raises(ConfigError, match="max_jerk values must be positive"):
        load_robot_config(_config_copy(tmp_path, "  gripper: 5.0            # m/s^3 for the gripper joints", "  gripper: -1.0"))
    with pytest.raises(ConfigError, match="max_jerk values must be positive"):
        load_robot_config(_config_copy(tmp_path, "  gripper: 5.0            # m/s^3 for the gripper joints",
                                       "  gripper: fast"))
