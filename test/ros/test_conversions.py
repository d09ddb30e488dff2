"""Message conversions: round trips and every rejection reason."""
import math

import numpy as np
import pytest
from sensor_msgs.msg import JointState

from wall_oss_core.policy.interface import Chunk
from wall_oss_ros.conversions import (
    chunk_to_msg,
    joint_state_to_vector,
    markers_to_object_poses,
    msg_to_chunk,
    object_poses_to_markers,
    seconds_to_stamp,
    stamp_to_seconds,
    vector_to_joint_state,
)


def make_chunk(horizon=4, dim=3):
    actions = np.arange(horizon * dim, dtype=float).reshape(horizon, dim) / 7.0
    return Chunk(actions=actions, dt=0.05, action_space="joint_position", action_names=[f"j{i}" for i in range(dim)],
                 stamp=12.345678901, instruction="pick", first_action_offset=0.01, inference_latency=0.2)


def test_chunk_round_trip_keeps_every_field():
    chunk = make_chunk()
    back = msg_to_chunk(chunk_to_msg(chunk, chunk_id=7))
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert back.stamp == pytest.approx(chunk.stamp, abs=1e-9)
    assert (back.dt, back.action_space, back.action_names, back.instruction) == (
        chunk.dt, chunk.action_space, chunk.action_names, chunk.instruction)
    assert back.first_action_offset == chunk.first_action_offset
    assert back.extras["chunk_id"] == 7


@pytest.mark.parametrize("corrupt, reason", [
    (lambda m: setattr(m, "data", m.data[:-1]), "data has"),
    (lambda m: setattr(m, "action_names", m.action_names[:-1]), "action names"),
    (lambda m: m.data.__setitem__(3, math.nan), "NaN"),
    (lambda m: setattr(m, "time_step", 0.0), "time_step"),
    (lambda m: setattr(m, "horizon", 0), "must be positive"),
    (lambda m: setattr(m, "horizon", 1 << 30), "larger than any"),
])
def test_malformed_chunks_are_rejected_with_reason(corrupt, reason):
    msg = chunk_to_msg(make_chunk(), chunk_id=1)
    corrupt(msg)
    with pytest.raises(ValueError, match=reason):
        msg_to_chunk(msg)


def test_stamp_round_trip_and_carry():
    assert stamp_to_seconds(seconds_to_stamp(3.9999999999)) == pytest.approx(4.0, abs=1e-9)
    assert seconds_to_stamp(3.9999999999).nanosec < 1_000_000_000
    with pytest.raises(ValueError):
        seconds_to_stamp(float("nan"))


def test_joint_state_reorders_and_validates():
    msg = vector_to_joint_state(["b", "a", "c"], [2.0, 1.0, 3.0], [0.2, 0.1, 0.3])
    positions, velocities = joint_state_to_vector(msg, ["a", "b"])
    np.testing.assert_array_equal(positions, [1.0, 2.0])
    np.testing.assert_array_equal(velocities, [0.1, 0.2])
    with pytest.raises(ValueError, match="lacks joints"):
        joint_state_to_vector(msg, ["a", "z"])
    with pytest.raises(ValueError, match="non-finite positions"):
        joint_state_to_vector(vector_to_joint_state(["a"], [math.inf]), ["a"])
    bad = JointState(name=["a", "b"], position=[1.0])
    with pytest.raises(ValueError, match="2 names but 1 positions"):
        joint_state_to_vector(bad, ["a"])
    positions, velocities = joint_state_to_vector(vector_to_joint_state(["a"], [1.0]), ["a"])
    assert velocities is None


def test_object_poses_round_trip_through_markers_and_bad_quaternions_are_refused():
    from scipy.spatial.transform import Rotation

    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", [0.1, -0.2, 0.7]).as_matrix()
    pose[:3, 3] = [0.1, 0.5, 0.02]
    msg = object_poses_to_markers({"box": pose, "peg": np.eye(4)}, {"box": np.full(3, 0.04), "peg": np.ones(3)},
                                  "world", seconds_to_stamp(3.0))
    assert [m.ns for m in msg.markers] == ["box", "peg"] and msg.markers[0].header.frame_id == "world"
    assert msg.markers[0].scale.x == pytest.approx(0.04)
    back = markers_to_object_poses(msg)
    np.testing.assert_allclose(back["box"], pose, atol=1e-12)
    np.testing.assert_allclose(back["peg"], np.eye(4), atol=1e-12)
    msg.markers[1].pose.orientation.w = 0.0
    with pytest.raises(ValueError, match="'peg'.*zero quaternion"):
        markers_to_object_poses(msg)
