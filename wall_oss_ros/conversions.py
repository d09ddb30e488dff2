"""Message ↔ core-type conversions shared by every node. Validation happens here, once, so a
malformed message is rejected with the same clear reason wherever it arrives."""
from __future__ import annotations

import array
import math

import numpy as np
from builtin_interfaces.msg import Time
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState
from visualization_msgs.msg import Marker, MarkerArray
from wall_oss.msg import ActionChunk

from wall_oss_core.policy.interface import Chunk, chunk_from_message
from wall_oss_core.policy.observation import JointStateMerger, select_joints

# ActionChunk → Chunk with validation; defined in the core so bag readers share it.
msg_to_chunk = chunk_from_message

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


def joint_state_to_vector(msg: JointState, names: tuple[str, ...] | list[str]
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (and velocities when the message has them) of `names`, in that order: for the
    candidate commands wall_oss nodes send each other (measured states go through merge_joint_state).

    Raises ValueError on missing joints, mismatched array sizes or non-finite values, so a
    corrupt joint state never becomes a command reference."""
    positions = select_joints(msg.name, msg.position, names)
    has_velocity = len(msg.velocity) > 0
    if has_velocity and len(msg.velocity) != len(msg.name):
        raise ValueError(f"joint state has {len(msg.name)} names but {len(msg.velocity)} velocities")
    velocities = None
    if has_velocity:
        index = {name: i for i, name in enumerate(msg.name)}
        velocities = np.asarray(msg.velocity, dtype=np.float64)[[index[name] for name in names]]
        if not np.all(np.isfinite(velocities)):
            raise ValueError("joint state has non-finite velocities")
    return positions, velocities


def merge_joint_state(merger: JointStateMerger, msg: JointState, now: float) -> tuple[np.ndarray, float] | None:
    """Feed one measured joint state into `merger`: names and positions only, since
    joint_state_broadcaster fills velocity and effort with NaN for joints without those interfaces.
    An unstamped message counts as measured `now`. Returns the merged (positions, stamp) or None."""
    stamp = stamp_to_seconds(msg.header.stamp)
    return merger.update(msg.name, msg.position, stamp if stamp > 0 else now)


def vector_to_joint_state(names, positions, velocities=None, stamp: Time | None = None) -> JointState:
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = _float64_array(positions)
    if velocities is not None:
        msg.velocity = _float64_array(velocities)
    return msg


def object_poses_to_markers(poses: dict[str, np.ndarray], sizes: dict[str, np.ndarray], frame_id: str,
                            stamp: Time) -> MarkerArray:
    """Object body → 4×4 pose as cube markers (ns = the body's name): rviz draws the sim's objects,
    and the scripted backend reads the privileged poses back with `markers_to_object_poses`."""
    markers = MarkerArray()
    for body, pose in poses.items():
        marker = Marker(ns=body, id=0, type=Marker.CUBE, action=Marker.ADD)
        marker.header.frame_id, marker.header.stamp = frame_id, stamp
        marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = (float(v) for v in pose[:3, 3])
        x, y, z, w = Rotation.from_matrix(pose[:3, :3]).as_quat()
        marker.pose.orientation.x, marker.pose.orientation.y = float(x), float(y)
        marker.pose.orientation.z, marker.pose.orientation.w = float(z), float(w)
        marker.scale.x, marker.scale.y, marker.scale.z = (float(v) for v in sizes[body])
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = 0.9, 0.5, 0.1, 0.8
        markers.markers.append(marker)
    return markers


def markers_to_object_poses(msg: MarkerArray) -> dict[str, np.ndarray]:
    """The inverse of `object_poses_to_markers`; ValueError on a non-finite or zero quaternion."""
    poses = {}
    for marker in msg.markers:
        q = marker.pose.orientation
        quaternion = np.array([q.x, q.y, q.z, q.w])
        position = np.array([marker.pose.position.x, marker.pose.position.y, marker.pose.position.z])
        if not (np.all(np.isfinite(quaternion)) and np.all(np.isfinite(position))) or np.linalg.norm(quaternion) < 1e-6:
            raise ValueError(f"object {marker.ns!r}: pose is not finite or has a zero quaternion")
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = Rotation.from_quat(quaternion).as_matrix(), position
        poses[marker.ns] = pose
    return poses
