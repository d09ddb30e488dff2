"""Message ↔ core-type conversions shared by every node. Validation happens here, once, so a
malformed message is rejected with the same clear reason wherever it arrives."""
from __future__ import annotations

import array
import math

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState

from wall_oss.msg import ActionChunk
from wall_oss_core.policy import Chunk

MAX_CHUNK_VALUES = 1 << 20  # far above any real horizon × action_dim; guards against absurd messages


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot convert {seconds} s to a ROS time stamp")
    sec = int(seconds)
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def _float64_array(values) -> array.array:
    """float64[] fields accept array.array directly; building it from bytes avoids a Python loop."""
    packed = array.array("d")
    packed.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return packed


def chunk_to_msg(chunk: Chunk, chunk_id: int, frame_id: str = "") -> ActionChunk:
    msg = ActionChunk()
    msg.header.stamp = seconds_to_stamp(chunk.stamp)
    msg.header.frame_id = frame_id
    msg.chunk_id = int(chunk_id)
    msg.action_space = chunk.action_space
    msg.action_names = list(chunk.action_names)
    msg.horizon, msg.action_dim = (int(n) for n in chunk.actions.shape)
    msg.time_step = float(chunk.dt)
    msg.first_action_offset = float(chunk.first_action_offset)
    msg.data = _float64_array(chunk.actions)
    msg.instruction = chunk.instruction
    msg.inference_latency = float(chunk.inference_latency)
    return msg


def msg_to_chunk(msg: ActionChunk) -> Chunk:
    """Validate an ActionChunk and turn it into a Chunk; ValueError names what is wrong."""
    horizon, dim = int(msg.horizon), int(msg.action_dim)
    if horizon <= 0 or dim <= 0:
        raise ValueError(f"chunk {msg.chunk_id}: horizon {horizon} and action_dim {dim} must be positive")
    if horizon * dim > MAX_CHUNK_VALUES:
        raise ValueError(f"chunk {msg.chunk_id}: {horizon}x{dim} values is larger than any supported chunk")
    data = np.asarray(msg.data, dtype=np.float64)
    if data.size != horizon * dim:
        raise ValueError(f"chunk {msg.chunk_id}: data has {data.size} values, horizon x action_dim is {horizon * dim}")
    if len(msg.action_names) != dim:
        raise ValueError(f"chunk {msg.chunk_id}: {len(msg.action_names)} action names for action_dim {dim}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"chunk {msg.chunk_id}: data contains NaN or infinite values")
    if not (math.isfinite(msg.time_step) and msg.time_step > 0):
        raise ValueError(f"chunk {msg.chunk_id}: time_step must be a positive number, got {msg.time_step}")
    if not math.isfinite(msg.first_action_offset):
        raise ValueError(f"chunk {msg.chunk_id}: first_action_offset is not finite")
    return Chunk(actions=data.reshape(horizon, dim), dt=float(msg.time_step), action_space=msg.action_space,
                 action_names=list(msg.action_names), stamp=stamp_to_seconds(msg.header.stamp),
                 instruction=msg.instruction, first_action_offset=float(msg.first_action_offset),
                 inference_latency=float(msg.inference_latency), extras={"chunk_id": int(msg.chunk_id)})


def joint_state_to_vector(msg: JointState, names: tuple[str, ...] | list[str]
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (and velocities when the message has them) of `names`, in that order.

    Raises ValueError on missing joints, mismatched array sizes or non-finite values, so a
    corrupt joint state never becomes a command reference."""
    if len(msg.position) != len(msg.name):
        raise ValueError(f"joint state has {len(msg.name)} names but {len(msg.position)} positions")
    has_velocity = len(msg.velocity) > 0
    if has_velocity and len(msg.velocity) != len(msg.name):
        raise ValueError(f"joint state has {len(msg.name)} names but {len(msg.velocity)} velocities")
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [name for name in names if name not in index]
    if missing:
        raise ValueError(f"joint state lacks joints {missing}")
    order = [index[name] for name in names]
    positions = np.asarray(msg.position, dtype=np.float64)[order]
    if not np.all(np.isfinite(positions)):
        bad = [name for name, value in zip(names, positions) if not np.isfinite(value)]
        raise ValueError(f"joint state has non-finite positions for {bad}")
    velocities = None
    if has_velocity:
        velocities = np.asarray(msg.velocity, dtype=np.float64)[order]
        if not np.all(np.isfinite(velocities)):
            raise ValueError("joint state has non-finite velocities")
    return positions, velocities


def vector_to_joint_state(names, positions, velocities=None, stamp: Time | None = None) -> JointState:
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = _float64_array(positions)
    if velocities is not None:
        msg.velocity = _float64_array(velocities)
    return msg
