"""The ALOHA scene in MuJoCo (gym-aloha's assets): command mapping, seeded scenes, cameras, and the
URDF derived from the MJCF agreeing with MuJoCo's own body poses."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIG_DIR
from scipy.spatial.transform import Rotation

from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import CAMERAS, SCENES, AlohaSim, RenderSettings

ALOHA_CONFIG = CONFIG_DIR / "aloha.yaml"
OPTICAL_FROM_MUJOCO_CAMERA = np.diag([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def robot():
    return load_robot_config(ALOHA_CONFIG)


@pytest.fixture(scope="module")
def kinematics(robot):
    return BimanualKinematics(robot)


@pytest.fixture
def sim(robot):
    scene = AlohaSim(robot, "two_cubes", seed=5, render=RenderSettings(width=96, height=64))
    yield scene
    scene.close()


def test_reset_puts_the_arms_at_home_and_commands_hold_them(sim, robot):
    np.testing.assert_allclose(sim.joint_positions(), robot.home_positions())
    sim.step(0.5)
    np.testing.assert_allclose(sim.joint_positions(), robot.home_positions(), atol=0.02)


def test_commands_move_each_joint_in_config_order_and_the_mirror_finger_follows(sim, robot):
    target = robot.home_positions().copy()
    target[[0, 4, 9, 12]] += [0.3, -0.2, 0.25, 0.4]   # left waist, left wrist angle, right elbow, right wrist rotate
    target[6], target[13] = 0.045, 0.030                # grippers
    sim.set_command(target)
    sim.step(2.0)
    np.testing.assert_allclose(sim.joint_positions(), target, atol=0.03)
    mirror = sim.data.qpos[sim.model.joint("vx300s_left/right_finger").qposadr[0]]
    assert mirror == pytest.approx(-0.045, abs=0.002)


def test_commands_outside_the_actuator_range_are_clipped_and_bad_ones_rejected(sim):
    command = sim.joint_positions()
    command[6] = 0.5  # far beyond the 0.057 m fully open gripper
    sim.set_command(command)
    sim.step(1.0)
    assert sim.joint_positions()[6] == pytest.approx(0.057, abs=0.002)
    with pytest.raises(ValueError, match="14 finite values"):
        sim.set_command(np.full(14, np.nan))
    with pytest.raises(ValueError, match="14 finite values"):
        sim.set_command(np.zeros(12))


def test_step_advances_physics_in_whole_mjcf_timesteps(sim):
    start = sim.time
    sim.step(0.1)
    assert sim.time - start == pytest.approx(0.1)
    sim.step(1e-6)  # at least one step
    assert sim.time - start == pytest.approx(0.1 + sim.timestep)


def test_same_seed_same_scene_other_seed_other_scene(robot):
    first, second = (AlohaSim(robot, "two_cubes", seed=11) for _ in range(2))
    for scene in (first, second):
        scene.step(0.2)
    for body, pose in first.object_poses().items():
        np.testing.assert_array_equal(pose, second.object_poses()[body])
    first.reset(12)
    assert not np.allclose(first.object_poses()["box"], second.object_poses()["box"])


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_objects_start_inside_their_regions_and_rest_on_the_table(robot, scene):
    sim = AlohaSim(robot, scene, seed=3)
    sim.step(0.5)
    regions = SCENES[scene].regions
    all_low = np.min([r.low for r in regions], axis=0)
    all_high = np.max([r.high for r in regions], axis=0)
    for body, pose in sim.object_poses().items():
        assert np.all(pose[:2, 3] >= all_low[:2] - 0.01) and np.all(pose[:2, 3] <= all_high[:2] + 0.01), body
        assert 0.0 < pose[2, 3] < 0.03, f"{body} is not resting on the table: z = {pose[2, 3]}"
        assert any("table" in pair for pair in sim.contacts() if any(g != "table" for g in pair))


def test_two_cube_scene_places_red_and_green_in_different_strips_in_both_orders(robot):
    nearer_red = []
    for seed in range(8):
        poses = AlohaSim(robot, "two_cubes", seed=seed).object_poses()
        red_y, green_y = poses["box"][1, 3], poses["green_box"][1, 3]
        assert abs(red_y - green_y) > 0.05
        nearer_red.append(red_y < green_y)
    assert any(nearer_red) and not all(nearer_red)


def test_every_config_camera_renders_an_image_of_the_configured_size(sim, robot):
    assert {c.name for c in robot.cameras} == set(CAMERAS)
    for camera in CAMERAS:
        image = sim.render(camera)
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8
        assert image.std() > 5, f"{camera} rendered a flat image"
    with pytest.raises(KeyError, match="no ALOHA camera"):
        sim.render("top")


def test_the_face_view_sees_the_cubes_where_they_are(robot):
    """The red cube's pixels move when the cube is placed elsewhere (the camera looks at the table)."""
    centroids = []
    for seed in (1, 2):
        sim = AlohaSim(robot, "transfer_cube", seed=seed, render=RenderSettings(width=160, height=120))
        image = sim.render("face_view").astype(int)
        sim.close()
        red = (image[..., 0] > 150) & (image[..., 1] < 60) & (image[..., 2] < 60)
        assert red.sum() > 3
        centroids.append(np.argwhere(red).mean(axis=0))
    assert np.linalg.norm(centroids[0] - centroids[1]) > 2


def test_a_config_whose_joints_are_not_the_viperx_joints_is_rejected(robot):
    swapped = robot.arms[0].joints[1], robot.arms[0].joints[0]
    arm = type(robot.arms[0])(**{**robot.arms[0].__dict__, "joints": swapped + robot.arms[0].joints[2:]})
    bad = type(robot)(**{**robot.__dict__, "arms": (arm, robot.arms[1])})
    with pytest.raises(ValueError, match="not the ViperX-300s 'waist' joint"):
        AlohaSim(bad, "transfer_cube")


def test_unknown_scene_is_rejected(robot):
    with pytest.raises(ValueError, match="unknown ALOHA scene"):
        AlohaSim(robot, "kitchen")


# --- URDF ↔ MJCF ------------------------------------------------------------------------------------

def _mujoco_pose(position, matrix):
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(matrix).reshape(3, 3)
    pose[:3, 3] = position
    return pose


def _assert_same_pose(expected, actual, what):
    assert np.linalg.norm(expected[:3, 3] - actual[:3, 3]) < 2e-3, what
    angle = Rotation.from_matrix(expected[:3, :3].T @ actual[:3, :3]).magnitude()
    assert angle < 2e-3, f"{what}: {angle} rad apart"


def test_urdf_forward_kinematics_agrees_with_mujoco_at_random_configurations(robot, kinematics):
    sim = AlohaSim(robot, "transfer_cube")
    rng = np.random.default_rng(0)
    limits = kinematics.limits
    for _ in range(10):
        command = rng.uniform(limits.lower, limits.upper)
        sim.set_state(command)
        for arm in ("left", "right"):
            for link in ("gripper_link", "left_finger_link", "right_finger_link", "lower_forearm_link"):
                body = sim.model.body(f"vx300s_{arm}/{link}").id
                _assert_same_pose(_mujoco_pose(sim.data.xpos[body], sim.data.xmat[body]),
                                  kinematics.frame_pose(command, f"{arm}_{link}"), f"{arm} {link}")
            _assert_same_pose(sim.site_pose(f"{arm}_tcp"), kinematics.ee_poses(command)[arm], f"{arm} tcp")
            camera = sim.model.camera(f"{arm}_wrist_view").id
            mujoco_camera = _mujoco_pose(sim.data.cam_xpos[camera], sim.data.cam_xmat[camera])
            mujoco_camera[:3, :3] = mujoco_camera[:3, :3] @ OPTICAL_FROM_MUJOCO_CAMERA
            _assert_same_pose(mujoco_camera, kinematics.frame_pose(command, f"{arm}_wrist_camera_optical_frame"),
                              f"{arm} wrist camera")
    top = sim.model.camera("top").id
    mujoco_top = _mujoco_pose(sim.data.cam_xpos[top], sim.data.cam_xmat[top])
    mujoco_top[:3, :3] = mujoco_top[:3, :3] @ OPTICAL_FROM_MUJOCO_CAMERA
    _assert_same_pose(mujoco_top, kinematics.frame_pose(limits.lower, "face_camera_optical_frame"), "face camera")


def test_urdf_limits_are_the_mjcf_actuator_ranges(robot, kinematics):
    sim = AlohaSim(robot, "transfer_cube")
    margin = np.where(np.isin(kinematics.limits.names, robot.gripper_joints), robot.position_margin_gripper,
                      robot.position_margin_revolute)
    np.testing.assert_allclose(kinematics.limits.lower - margin, sim.command_lower, atol=1e-6)
    np.testing.assert_allclose(kinematics.limits.upper + margin, sim.command_upper, atol=1e-6)


def test_the_robot_config_selects_the_simulator(robot, tmp_path):
    from wall_oss_core.robot.config import ConfigError

    assert (robot.simulator, robot.sim_scene) == ("aloha_mujoco", "transfer_cube")
    assert load_robot_config(CONFIG_DIR / "bimanual.yaml").simulator == "kinematic"
    text = ALOHA_CONFIG.read_text().replace("backend: aloha_mujoco", "backend: gazebo")
    text = text.replace("urdf: ../urdf/aloha.urdf", f"urdf: {ALOHA_CONFIG.parent.parent / 'urdf' / 'aloha.urdf'}")
    (tmp_path / "robot.yaml").write_text(text)
    with pytest.raises(ConfigError, match="sim.backend must be one of"):
        load_robot_config(tmp_path / "robot.yaml")


def test_arm_dynamics_adapter_steps_physics_in_whole_timesteps_and_carries_the_rest(robot):
    from wall_oss_core.sim.aloha import AlohaArmDynamics

    sim = AlohaSim(robot, "transfer_cube")
    dynamics = AlohaArmDynamics(sim, robot.home_positions())
    for _ in range(10):
        dynamics.step(0.003)  # 1.5 timesteps each
    assert sim.time == pytest.approx(0.030)
    dynamics.set_targets([0], [0.4])
    with pytest.raises(ValueError, match="finite"):
        dynamics.set_targets([1], [np.inf])
    for _ in range(500):
        dynamics.step(0.004)
    assert dynamics.positions[0] == pytest.approx(0.4, abs=0.02)
    assert dynamics.render_state().shape == (sim.model.nq,)
