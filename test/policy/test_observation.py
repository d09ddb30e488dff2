"""Observation assembly: complete and fresh inputs only, stamps never backwards, clear reasons otherwise."""
import numpy as np
import pytest

from wall_oss_core.policy.interface import Observation
from wall_oss_core.policy.observation import (
    AssemblyLimits,
    InputRejected,
    JointStateMerger,
    ObservationAssembler,
    Unavailable,
)
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

LIMITS = AssemblyLimits(camera_max_age=0.5, joint_state_max_age=0.2, max_clock_skew=0.05)


@pytest.fixture(scope="module")
def kinematics():
    return BimanualKinematics(load_robot_config(default_config_path()))


@pytest.fixture
def assembler(kinematics):
    return ObservationAssembler(kinematics, LIMITS)


def frame(value: int) -> np.ndarray:
    return np.full((4, 6, 3), value, dtype=np.uint8)


def fill(assembler, stamp=10.0, joint_stamp=None):
    for i, camera in enumerate(assembler.camera_names):
        assembler.add_image(camera, frame(i), stamp)
    config = assembler.config
    positions = config.home_positions()
    # publish in reversed joint order, with an extra joint, as a robot driver may
    names = list(reversed(config.command_joints)) + ["some_other_joint"]
    assembler.add_joint_state(names, list(reversed(positions)) + [9.9], stamp if joint_stamp is None else joint_stamp)
    return positions


def test_complete_fresh_inputs_give_an_observation(assembler, kinematics):
    positions = fill(assembler, stamp=10.0, joint_stamp=10.05)
    observation = assembler.assemble(now=10.1, instruction="stack the cups")
    assert isinstance(observation, Observation)
    assert observation.stamp == 10.05, "the observation carries the newest input stamp"
    np.testing.assert_array_equal(observation.joint_positions, positions)
    assert observation.joint_names == kinematics.config.command_joints
    for arm, pose in kinematics.ee_poses(positions).items():
        np.testing.assert_allclose(observation.ee_poses[arm], pose)
    for arm in kinematics.config.arms:
        assert observation.grippers[arm.name] == positions[kinematics.gripper_index(arm.name)]
    for i, camera in enumerate(assembler.camera_names):
        assert observation.images[camera][0, 0, 0] == i
    assert observation.instruction == "stack the cups"


def test_each_missing_input_is_named(assembler):
    result = assembler.assemble(now=1.0, instruction="x")
    assert isinstance(result, Unavailable) and result.reason == "missing_camera"
    assert result.input == assembler.camera_names[0]
    for camera in assembler.camera_names[:-1]:
        assembler.add_image(camera, frame(0), 1.0)
    result = assembler.assemble(now=1.0, instruction="x")
    assert result.key == f"missing_camera:{assembler.camera_names[-1]}"
    assembler.add_image(assembler.camera_names[-1], frame(0), 1.0)
    result = assembler.assemble(now=1.0, instruction="x")
    assert (result.reason, result.input) == ("missing_joints", "joint_states")


def test_stale_camera_and_stale_joints_block_assembly(assembler):
    fill(assembler, stamp=10.0)
    stale = assembler.assemble(now=10.0 + LIMITS.joint_state_max_age + 0.01, instruction="x")
    assert stale.key == "stale_joints:joint_states" and "old" in stale.detail
    assembler.add_joint_state(assembler.config.command_joints, assembler.config.home_positions(), 10.6)
    stale = assembler.assemble(now=10.6, instruction="x")
    assert stale.key == f"stale_camera:{assembler.camera_names[0]}"
    assert "0.600 s old" in stale.detail
    for camera in assembler.camera_names:
        assembler.add_image(camera, frame(1), 10.55)
    assert isinstance(assembler.assemble(now=10.6, instruction="x"), Observation)


def test_inputs_from_the_future_are_a_clock_problem(assembler):
    fill(assembler, stamp=10.0)
    result = assembler.assemble(now=10.0 - LIMITS.max_clock_skew - 0.01, instruction="x")
    assert result.reason == "future_stamp"
    assert isinstance(assembler.assemble(now=10.0 - LIMITS.max_clock_skew / 2, instruction="x"), Observation)


def test_each_observation_is_newer_than_the_last_one_used(assembler):
    fill(assembler, stamp=10.0)
    first = assembler.assemble(now=10.01, instruction="x")
    assert isinstance(first, Observation)
    again = assembler.assemble(now=10.02, instruction="x")
    assert again.reason == "not_newer"
    assembler.add_joint_state(assembler.config.command_joints, assembler.config.home_positions(), 10.02)
    second = assembler.assemble(now=10.03, instruction="x")
    assert isinstance(second, Observation) and second.stamp == 10.02


def test_reordered_stamps_are_rejected_and_the_newer_input_kept(assembler):
    fill(assembler, stamp=10.0)
    camera = assembler.camera_names[1]
    with pytest.raises(InputRejected) as raised:
        assembler.add_image(camera, frame(200), 9.9)
    assert raised.value.reason == "reordered"
    joints = assembler.config.command_joints
    with pytest.raises(InputRejected) as raised:
        assembler.add_joint_state(joints, np.zeros(len(joints)), 9.99)
    assert raised.value.reason == "reordered"
    observation = assembler.assemble(now=10.0, instruction="x")
    assert observation.images[camera][0, 0, 0] == 1, "the older frame must not replace the newer one"
    np.testing.assert_array_equal(observation.joint_positions, assembler.config.home_positions())


@pytest.mark.parametrize("corrupt, reason", [
    (lambda names, pos: (names, np.where(np.arange(len(pos)) == 3, np.nan, pos)), "nan_joints"),
    (lambda names, pos: (names, np.where(np.arange(len(pos)) == 0, np.inf, pos)), "nan_joints"),
    (lambda names, pos: (names, pos[:-1]), "size_mismatch"),
])
def test_corrupt_joint_states_are_rejected(assembler, corrupt, reason):
    names, positions = corrupt(list(assembler.config.command_joints), assembler.config.home_positions())
    with pytest.raises(InputRejected) as raised:
        assembler.add_joint_state(names, positions, 5.0)
    assert raised.value.reason == reason
    result = assembler.assemble(now=5.0, instruction="x")
    assert isinstance(result, Unavailable), "a rejected input must not enter an observation"


@pytest.mark.parametrize("stamp", [0.0, -1.0, float("nan")])
def test_unstamped_inputs_are_rejected(assembler, stamp):
    with pytest.raises(InputRejected) as raised:
        assembler.add_image(assembler.camera_names[0], frame(0), stamp)
    assert raised.value.reason == "unstamped"


@pytest.mark.parametrize("camera, image, reason", [
    ("no_such_camera", frame(0), "unknown_camera"),
    (None, np.zeros((4, 6), np.uint8), "bad_image"),
    (None, np.zeros((4, 6, 4), np.uint8), "bad_image"),
    (None, np.zeros((4, 6, 3), np.float32), "bad_image"),
    (None, np.zeros((0, 6, 3), np.uint8), "bad_image"),
])
def test_bad_images_are_rejected(assembler, camera, image, reason):
    with pytest.raises(InputRejected) as raised:
        assembler.add_image(camera or assembler.camera_names[0], image, 1.0)
    assert raised.value.reason == reason


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="camera_max_age"):
        AssemblyLimits(camera_max_age=0.0)
    with pytest.raises(ValueError, match="max_clock_skew"):
        AssemblyLimits(max_clock_skew=-0.1)


# --- joint states split across publishers (ros2_control joint_state_broadcaster per arm, gripper drivers) ---

def test_joint_states_split_across_messages_merge_with_their_oldest_stamp(assembler):
    for i, camera in enumerate(assembler.camera_names):
        assembler.add_image(camera, frame(i), 10.0)
    config = assembler.config
    home = dict(zip(config.command_joints, config.home_positions()))
    left = [j for j in config.command_joints if j.startswith("left")]
    right = [j for j in config.command_joints if j.startswith("right")]
    assembler.add_joint_state(["camera_tilt"] + left[::-1], [0.3] + [home[j] for j in left[::-1]], 10.0)
    result = assembler.assemble(now=10.01, instruction="x")
    assert isinstance(result, Unavailable) and result.reason == "missing_joints"
    assert right[0] in result.detail
    assembler.add_joint_state(right, [home[j] for j in right], 10.03)
    observation = assembler.assemble(now=10.04, instruction="x")
    np.testing.assert_array_equal(observation.joint_positions, config.home_positions())
    assert observation.stamp == 10.0, "the merged joint state is as old as its oldest part (and the frames)"


def test_merger_keeps_the_latest_position_per_joint_and_refuses_a_stopped_publisher():
    merger = JointStateMerger(("a", "b", "c"), max_skew=0.5)
    assert merger.update(["a", "x"], [1.0, float("nan")], 1.0) is None, "extra joints may be NaN"
    assert merger.missing() == ["b", "c"]
    positions, stamp = merger.update(["c", "b"], [3.0, 2.0], 1.1)
    assert positions.tolist() == [1.0, 2.0, 3.0] and stamp == 1.0
    positions, stamp = merger.update(["a"], [1.5], 1.2)
    assert positions.tolist() == [1.5, 2.0, 3.0] and stamp == 1.1
    with pytest.raises(InputRejected) as raised:  # b and c's publisher stopped
        merger.update(["a"], [1.6], 1.7)
    assert raised.value.reason == "stale_joints" and "['b', 'c']" in str(raised.value)
    positions, stamp = merger.update(["b", "c"], [2.5, 3.5], 1.75)
    assert positions.tolist() == [1.6, 2.5, 3.5] and stamp == 1.7
    with pytest.raises(InputRejected) as raised:
        merger.update(["a", "b"], [1.0, 2.0], 1.72)  # b went back in time
    assert raised.value.reason == "reordered"
    with pytest.raises(InputRejected) as raised:
        merger.update(["a", "b"], [float("nan"), 2.0], 1.8)
    assert raised.value.reason == "nan_joints"
    assert merger.update(["c"], [3.0], 1.8)[0].tolist() == [1.6, 2.5, 3.0], "rejected messages stored nothing"


def test_a_joint_never_published_is_reported_missing_after_max_skew():
    merger = JointStateMerger(("a", "b"), max_skew=0.2)
    assert merger.update(["a"], [1.0], 5.0) is None
    assert merger.update(["a"], [1.0], 5.15) is None
    with pytest.raises(InputRejected) as raised:
        merger.update(["a"], [1.0], 5.3)
    assert raised.value.reason == "missing_joints" and "['b']" in str(raised.value)


def test_delayed_policy_adds_its_delay_after_the_backend():
    from wall_oss_core.policy.interface import Chunk, DelayedPolicy

    class Fixed:
        action_space, action_names = "joint_position", ["a"]

        def predict(self, observation):
            calls.append("predict")
            return Chunk(actions=[[1.0]], dt=0.1, action_space="joint_position", action_names=["a"], stamp=1.0)

    calls = []
    policy = DelayedPolicy(Fixed(), 0.25, sleep=lambda seconds: calls.append(seconds))
    chunk = policy.predict(None)
    assert calls == ["predict", 0.25] and chunk.stamp == 1.0
    assert (policy.action_space, policy.action_names) == ("joint_position", ["a"])
    with pytest.raises(ValueError, match="inference delay"):
        DelayedPolicy(Fixed(), -1.0)
