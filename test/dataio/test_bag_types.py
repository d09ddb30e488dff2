"""Project messages round-trip through the rosbags type store and rclpy's serializer alike."""
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from wall_oss.msg import ActionChunk, SafetyStatus

from wall_oss_core.data.bag_types import wall_oss_typestore
from wall_oss_core.policy.interface import Chunk
from wall_oss_ros.conversions import chunk_to_msg


def test_rclpy_bytes_deserialize_with_rosbags_and_back():
    store = wall_oss_typestore()
    chunk = Chunk(actions=np.arange(6.0).reshape(2, 3), dt=0.1, action_space="joint_position",
                  action_names=["a", "b", "c"], stamp=5.5, instruction="wave")
    raw = serialize_message(chunk_to_msg(chunk, chunk_id=3))
    decoded = store.deserialize_cdr(raw, "wall_oss/msg/ActionChunk")
    assert decoded.chunk_id == 3 and decoded.instruction == "wave"
    np.testing.assert_array_equal(decoded.data, chunk.actions.ravel())
    again = deserialize_message(bytes(store.serialize_cdr(decoded, "wall_oss/msg/ActionChunk")), ActionChunk)
    assert list(again.data) == list(chunk.actions.ravel())
    status = SafetyStatus(state=SafetyStatus.STATE_ESTOP, state_name="ESTOP", commands_rejected=4)
    decoded_status = store.deserialize_cdr(serialize_message(status), "wall_oss/msg/SafetyStatus")
    assert (decoded_status.state, decoded_status.commands_rejected) == (SafetyStatus.STATE_ESTOP, 4)
