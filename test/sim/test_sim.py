"""The simulated arm: joint dynamics (limits, lag, no overshoot), trajectory targets, the renderer,
and sim_arm_node in its own process driven over real DDS like ros2_control controllers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from conftest import ROBOT_CONFIG, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.kinematic_arm import (
    DEFAULT_OBJECTS,
    TABLE_TOP_Z,
    ArmDynamics,
    ArmDynamicsConfig,
    CameraIntrinsics,
    SceneRenderer,
    TrajectoryTarget,
)


@pytest.fixture(scope="module")
def kinematics():
    return BimanualKinematics(load_robot_config(ROBOT_CONFIG))


def _single_joint(config=None, velocity=1.0, acceleration=2.0, start=0.0):
    return ArmDynamics([-3.0], [3.0], [velocity], [acceleration], [start], config or ArmDynamicsConfig())


# --- dynamics ---------------------------------------------------------------------------------------

def test_step_command_is_reached_without_overshoot_within_limits():
    joint = _single_joint()
    joint.set_targets([0], [1.0])
    positions, velocities = [], []
    for _ in range(3000):
        joint.step(0.001)
        positions.append(joint.positions[0])
        velocities.append(joint.velocities[0])
    positions, velocities = np.array(positions), np.array(velocities)
    assert positions[-1] == pytest.approx(1.0, abs=1e-4)
    # monotonic and no overshoot (beyond micro-radians of discretization)
    assert np.all(np.diff(positions) >= -1e-6) and positions.max() <= 1.0 + 1e-5
    assert np.abs(velocities).max() <= 1.0 + 1e-9
    headroom = ArmDynamicsConfig().acceleration_headroom
    assert np.abs(np.diff(velocities) / 0.001).max() <= 2.0 * headroom + 1e-6
    assert np.abs(velocities).max() == pytest.approx(1.0)  # a long move cruises at the velocity limit


def test_smooth_commands_are_tracked_with_the_lag():
    config = ArmDynamicsConfig(lag_time_constant=0.03)
    joint = _single_joint(config, velocity=2.0, acceleration=6.0)
    amplitude, omega, dt = 0.3, 2.0, 0.004  # peak speed 0.6 rad/s, peak acceleration 1.2 rad/s²
    errors = []
    for k in range(1, 2500):
        t = k * dt
        joint.set_targets([0], [amplitude * math.sin(omega * t)])
        joint.step(dt)
        if t > 2.0:
            errors.append(abs(joint.positions[0] - amplitude * math.sin(omega * t)))
    # a first-order lag trails a ramp of speed v by about v·tau
    assert max(errors) < 1.5 * amplitude * omega * config.lag_time_constant


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-4.0, 4.0), st.floats(0.0002, 0.002), st.integers(1, 200)), min_size=1, max_size=12))
def test_no_command_sequence_breaks_the_joint_limits(sequence):
    """Any targets, any step sizes (one integration substep each, so a hard-stop hit shows at the end of
    the step): positions stay within the stops, speeds within the velocity limit, and the velocity
    changes by at most amax·dt except when a hard stop halts the joint."""
    joint = ArmDynamics([-1.0, 0.0], [1.0, 0.04], [2.0, 0.1], [6.0, 0.5], [0.0, 0.02])
    for target, dt, repeats in sequence:
        joint.set_targets([0, 1], [target, target / 50])
        for _ in range(repeats):
            before = joint.velocities.copy()
            joint.step(dt)
            assert np.all(joint.positions >= joint.lower) and np.all(joint.positions <= joint.upper)
            assert np.all(np.abs(joint.velocities) <= joint.velocity_limit + 1e-9)
            at_stop = (joint.positions <= joint.lower) | (joint.positions >= joint.upper)
            change = np.abs(joint.velocities - before)
            assert np.all(at_stop | (change <= joint.acceleration_limit * dt + 1e-12))


def test_targets_are_clipped_to_the_hard_stops_and_must_be_finite(kinematics):
    home = kinematics.config.home_positions()
    arm = ArmDynamics.for_robot(kinematics, home)
    lower_stop = kinematics.limits.lower[0] - kinematics.config.position_margin_revolute
    arm.set_targets([0], [-100.0])
    assert arm.targets[0] == pytest.approx(lower_stop)
    with pytest.raises(ValueError, match="finite"):
        arm.set_targets([1], [float("nan")])
    with pytest.raises(ValueError):
        ArmDynamicsConfig(lag_time_constant=0.001, max_substep=0.002)


def test_trajectory_target_starts_where_the_joints_are_and_holds_the_last_point():
    trajectory = TrajectoryTarget(10.0, np.array([0.0, 1.0]), [0.5, 1.5], [[1.0, 1.0], [2.0, 0.0]])
    np.testing.assert_allclose(trajectory.sample(10.0), [0.0, 1.0])
    np.testing.assert_allclose(trajectory.sample(10.25), [0.5, 1.0])
    np.testing.assert_allclose(trajectory.sample(11.0), [1.5, 0.5])
    np.testing.assert_allclose(trajectory.sample(99.0), [2.0, 0.0])
    with pytest.raises(ValueError, match="increasing"):
        TrajectoryTarget(0.0, np.zeros(2), [1.0, 1.0], [[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="2 joints"):
        TrajectoryTarget(0.0, np.zeros(2), [1.0], [[0, 0, 0]])


# --- rendering --------------------------------------------------------------------------------------

def test_pinhole_projection_centre_and_field_of_view():
    camera = CameraIntrinsics.from_fov(640, 480, 90.0)
    np.testing.assert_allclose(camera.project(np.array([0.0, 0.0, 2.0])), [319.5, 239.5])
    # at 90° horizontal field of view a point at 45° lands on the image border
    assert camera.project(np.array([1.0, 0.0, 1.0]))[0] == pytest.approx(319.5 + 320)
    with pytest.raises(ValueError):
        CameraIntrinsics.from_fov(640, 480, 179.0)


def test_face_camera_sees_each_object_in_its_color(kinematics):
    renderer = SceneRenderer(kinematics, 320, 240)
    home = kinematics.config.home_positions()
    images = renderer.render(home)
    assert set(images) == {c.name for c in kinematics.config.cameras}
    face = images["face_view"]
    assert face.shape == (240, 320, 3) and face.dtype == np.uint8
    pose = renderer.camera_poses(home)["face_view"]
    for obj in DEFAULT_OBJECTS:
        top_center = np.array([obj.position[0], obj.position[1], TABLE_TOP_Z + obj.size[2]])
        in_camera = pose[:3, :3].T @ (top_center - pose[:3, 3])
        u, v = np.round(renderer.intrinsics.project(in_camera)).astype(int)
        pixel = face[v, u].astype(int)
        dominant = int(np.argmax(obj.color))
        assert int(np.argmax(pixel)) == dominant, f"{obj.name} at ({u}, {v}) is {pixel}"


def test_images_follow_the_arm_pose(kinematics):
    renderer = SceneRenderer(kinematics, 160, 120)
    home = kinematics.config.home_positions()
    moved = home.copy()
    moved[kinematics.arm_slice("left")] += [0.6, -0.3, 0.2, 0.2, 0.0, 0.0]
    before, after = renderer.render(home), renderer.render(moved)
    changed = {name: np.mean(np.any(before[name] != after[name], axis=2)) for name in before}
    assert changed["left_wrist_view"] > 0.2  # the left wrist camera moved with the arm
    assert changed["face_view"] > 0.01  # the left arm moved in the face view
    assert changed["right_wrist_view"] < 0.02  # the right arm did not move
    assert not np.array_equal(before["left_wrist_view"], before["right_wrist_view"])


def test_camera_process_renders_the_same_frames_and_encodes_jpeg(kinematics):
    import cv2

    from wall_oss_core.sim.kinematic_arm import CameraProcess, CameraSettings

    settings = CameraSettings(width=96, height=72, jpeg=True)
    cameras = CameraProcess(str(ROBOT_CONFIG), settings)
    try:
        positions = kinematics.config.home_positions()
        frames = cameras.render(positions)
        expected = SceneRenderer(kinematics, 96, 72).render(positions)
        assert set(frames) == set(expected)
        for name, (rgb, jpeg) in frames.items():
            assert rgb == expected[name].tobytes()
            decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert np.abs(decoded.astype(int) - expected[name]).mean() < 8  # lossy, but the same picture
    finally:
        cameras.close()
    with pytest.raises(RuntimeError, match="camera process"):
        cameras.render(positions)


# --- the node ---------------------------------------------------------------------------------------

FAST_SIM = {"camera_rate_hz": 0.0}


def _latest(ros_node, topic, msg_type, qos=10):
    box = {}
    ros_node.create_subscription(msg_type, topic, lambda msg: box.__setitem__("msg", msg), qos)
    return box


def test_node_tracks_forward_commands_and_rejects_malformed_ones(ros_node, node_processes):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    sim = node_processes("wall_oss_ros.sim_arm_node", params=FAST_SIM)
    robot = load_robot_config(ROBOT_CONFIG)
    state = _latest(ros_node, "/joint_states", JointState)
    wait_for(lambda: "msg" in state, 20, poll=ros_node.spin_briefly, message="joint states")
    names = list(state["msg"].name)
    assert names[:14] == list(robot.command_joints)
    def position(joint):
        return state["msg"].position[names.index(joint)]
    np.testing.assert_allclose([position(j) for j in robot.command_joints], robot.home_positions())

    arm = ros_node.create_publisher(Float64MultiArray, "/left_arm_controller/commands", 10)
    gripper = ros_node.create_publisher(Float64MultiArray, "/right_gripper_controller/commands", 10)
    wait_for(lambda: arm.get_subscription_count() and gripper.get_subscription_count(), 10, poll=ros_node.spin_briefly)
    arm.publish(Float64MultiArray(data=[1.0, 2.0]))  # wrong length
    arm.publish(Float64MultiArray(data=[float("nan")] * 6))
    target = [0.3, 0.6, 1.2, 0.9, 0.1, -0.2]
    arm.publish(Float64MultiArray(data=target))
    gripper.publish(Float64MultiArray(data=[0.01]))
    wait_for(lambda: np.allclose([position(j) for j in robot.arm("left").joints], target, atol=1e-3)
             and abs(position("right_gripper_joint") - 0.01) < 1e-4, 15, poll=ros_node.spin_briefly,
             message="the left arm and the right gripper at their targets")
    assert position("right_gripper_finger_b_joint") == pytest.approx(position("right_gripper_joint"))
    np.testing.assert_allclose([position(j) for j in robot.arm("right").joints], robot.arm("right").home)
    assert sim.alive()
    wait_for(lambda: "rejected command for left_arm_controller (1 so far): 2 values for 6 joints" in sim.log(), 5,
             message="the malformed command logged as rejected (later ones are throttled)")


def test_node_publishes_camera_images(ros_node, node_processes):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from wall_oss_core.policy.images import compressed_msg_to_rgb, image_msg_to_rgb

    node_processes("wall_oss_ros.sim_arm_node", params={"camera_rate_hz": 10.0, "image_width": 96,
                                                        "image_height": 72, "publish_compressed_images": True})
    raw = _latest(ros_node, "/cameras/left_wrist/image_raw", Image, qos_profile_sensor_data)
    compressed = _latest(ros_node, "/cameras/face/image_raw/compressed", CompressedImage, qos_profile_sensor_data)
    wait_for(lambda: "msg" in raw and "msg" in compressed, 20, poll=ros_node.spin_briefly, message="camera frames")
    image = raw["msg"]
    assert (image.width, image.height, image.encoding, image.step) == (96, 72, "rgb8", 96 * 3)
    assert image.header.frame_id == "left_wrist_camera_optical_frame"
    assert image_msg_to_rgb(image).shape == (72, 96, 3)
    assert compressed_msg_to_rgb(compressed["msg"]).shape == (72, 96, 3)
    assert compressed["msg"].header.frame_id == "face_camera_optical_frame"


def test_node_follows_joint_trajectories(ros_node, node_processes, tmp_path):
    from builtin_interfaces.msg import Duration
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    layout = yaml.safe_load(ROBOT_CONFIG.read_text())
    layout["urdf"] = str((ROBOT_CONFIG.parent / layout["urdf"]).resolve())
    layout["controller_interface"] = "joint_trajectory"
    config = tmp_path / "trajectory_robot.yaml"
    config.write_text(yaml.safe_dump(layout))
    node_processes("wall_oss_ros.sim_arm_node", params={**FAST_SIM, "robot_config": str(config)})
    state = _latest(ros_node, "/joint_states", JointState)
    publisher = ros_node.create_publisher(JointTrajectory, "/left_gripper_controller/joint_trajectory", 10)
    wait_for(lambda: publisher.get_subscription_count() > 0 and "msg" in state, 20, poll=ros_node.spin_briefly)
    trajectory = JointTrajectory(joint_names=["left_gripper_joint"])
    trajectory.points = [JointTrajectoryPoint(positions=[0.03], time_from_start=Duration(sec=0, nanosec=200_000_000)),
                         JointTrajectoryPoint(positions=[0.035], time_from_start=Duration(sec=0, nanosec=400_000_000))]
    publisher.publish(trajectory)
    def gripper():
        return state["msg"].position[list(state["msg"].name).index("left_gripper_joint")]
    wait_for(lambda: abs(gripper() - 0.035) < 1e-4, 15, poll=ros_node.spin_briefly, message="the last trajectory point")


def test_node_refuses_bad_initial_positions(node_processes):
    sim = node_processes("wall_oss_ros.sim_arm_node", params={**FAST_SIM, "initial_positions": [0.0, 1.0]})
    wait_for(lambda: not sim.alive(), 20, message="the node to exit")
    assert sim.process.returncode == 2
    assert "initial_positions needs 14 finite values" in sim.log()


# --- the scripted demonstration -----------------------------------------------------------------------

def test_demo_trajectory_reaches_the_objects_smoothly_and_loops(kinematics, tmp_path):
    from wall_oss_core.backends.replay import ReplayPolicy, load_recording, save_recording
    from wall_oss_core.sim.demo_trajectory import TARGETS, DemoTrajectory

    demo = DemoTrajectory(kinematics)
    period = demo.settings.period
    dt = 0.001
    positions = demo.positions(np.arange(0.0, period, dt))
    velocity = np.diff(positions, axis=0) / dt
    acceleration = np.diff(velocity, axis=0) / dt
    limits = kinematics.limits
    assert np.all(positions >= limits.lower) and np.all(positions <= limits.upper)
    assert np.all(np.abs(velocity) <= 0.5 * limits.velocity)
    assert np.all(np.abs(acceleration) <= limits.acceleration)
    np.testing.assert_allclose(demo.positions([0.0, period]), [kinematics.config.home_positions()] * 2)
    # at the grasp keyframe each tool centre point is at its object, gripper closing
    grasp_time = demo.times[3]
    poses = kinematics.ee_poses(demo.positions(grasp_time)[0])
    for arm, name in TARGETS.items():
        obj = next(o for o in DEFAULT_OBJECTS if o.name == name)
        np.testing.assert_allclose(poses[arm][:2, 3], obj.position, atol=2e-3)
        assert poses[arm][2, 3] == pytest.approx(TABLE_TOP_Z + demo.settings.grasp_height, abs=2e-3)
        for box in kinematics.config.arms:
            if box.name == arm:
                assert box.workspace.contains(poses[arm][:3, 3])

    recording = demo.recording()
    save_recording(tmp_path / "demo.npz", recording)
    loaded = load_recording(tmp_path / "demo.npz")
    assert loaded.chunks[0].action_space == "joint_position"
    assert loaded.chunks[0].action_names == list(kinematics.config.command_joints)
    policy = ReplayPolicy(loaded, loop=True)
    from wall_oss_core.policy.interface import Observation

    def chunk_at(t):
        return policy.predict(Observation(stamp=t, images={}, joint_positions=np.zeros(14),
                                          joint_names=kinematics.config.command_joints, ee_poses={}, grippers={},
                                          instruction="go"))
    chunk_at(1000.0)  # the first observation starts the loop
    for elapsed in (0.0, 3.3, period + 3.3, 2 * period + 7.05):  # looping replays the same motion
        chunk = chunk_at(1000.0 + elapsed)
        np.testing.assert_allclose(chunk.actions, demo.positions(chunk.action_times() - 1000.0), atol=1e-9)
