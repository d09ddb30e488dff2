"""Short bags built in-test from real rclpy messages (serialized by rclpy, written with rosbags), laid
out like a recording of the running graph: joint states, three cameras, the instruction and the
policy's action chunks. The arm follows a known smooth trajectory and closes then opens its grippers,
so ground truth is known exactly; the recorded chunks are that trajectory sampled ahead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import Image
from std_msgs.msg import String

from wall_oss_core.backends.replay import ReplayPolicy
from wall_oss_core.data.bag_types import wall_oss_typestore
from wall_oss_core.policy import action_space as aspace
from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.config import RobotConfig, default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_ros.conversions import chunk_to_msg, seconds_to_stamp, vector_to_joint_state

START = 100.0  # bag clock at the first message [s]
GRIPPER_CLOSE_AT, GRIPPER_OPEN_AT = 1.0, 2.2  # seconds after START
INSTRUCTION = "put the red block in the bowl"


def trajectory(robot: RobotConfig, t: np.ndarray | float) -> np.ndarray:
    """Command-joint positions at times t [s since START]: smooth swings around home, grippers
    closing at GRIPPER_CLOSE_AT and opening at GRIPPER_OPEN_AT over 0.2 s."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    home = robot.home_positions()
    phases = np.arange(len(home)) * 0.7
    q = home[None, :] + 0.15 * np.sin(1.3 * t[:, None] + phases[None, :])
    ramp_close = np.clip((t - GRIPPER_CLOSE_AT) / 0.2, 0, 1)
    ramp_open = np.clip((t - GRIPPER_OPEN_AT) / 0.2, 0, 1)
    opening = 0.035 - 0.03 * ramp_close + 0.03 * ramp_open
    for index in (6, 13):  # gripper joints in command order
        q[:, index] = opening
    return q


def frame_pixels(index: int, width: int = 32, height: int = 24) -> np.ndarray:
    """A recognizable RGB frame for frame number `index` (smooth, so video coding keeps it close)."""
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    base = np.array([40 + (index * 9) % 160, 80, 200 - (index * 5) % 120], dtype=float)[None, None, :]
    return np.clip(base + 30 * x + 20 * y, 0, 255).astype(np.uint8)


@dataclass
class SyntheticBag:
    path: Path
    robot: RobotConfig
    chunks: list[Chunk]
    joint_times: np.ndarray
    frame_times: np.ndarray
    action_space: str


def write_synthetic_bag(path: Path, *, duration: float = 3.0, action_space: str = "joint_position",
                        storage: str = "mcap", joint_rate: float = 50.0, camera_rate: float = 10.0,
                        chunk_rate: float = 2.0, horizon: int = 8, dt: float = 0.1,
                        image_size: tuple[int, int] = (32, 24), with_chunks: bool = True,
                        namespace: str = "wall_oss", camera_gap: tuple[float, float] | None = None
                        ) -> SyntheticBag:
    """camera_gap: no camera frames stamped in [start, end) seconds (a dropped camera)."""
    robot = load_robot_config(default_config_path())
    kinematics = BimanualKinematics(robot)
    store = wall_oss_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    joint_names = list(robot.command_joints) + [j for arm in robot.arms for j in arm.gripper_mimic_joints]
    events: list[tuple[float, str, str, bytes]] = []  # (receive time, topic, type, bytes)

    joint_times = np.arange(0.0, duration, 1.0 / joint_rate)
    positions = trajectory(robot, joint_times)
    for t, q in zip(joint_times, positions):
        full = np.concatenate([q, q[[6, 13]]])
        msg = vector_to_joint_state(joint_names, full, np.zeros(len(full)), seconds_to_stamp(START + t))
        events.append((START + t + 0.001, "/joint_states", "sensor_msgs/msg/JointState", serialize_message(msg)))

    frame_times = np.arange(0.0, duration, 1.0 / camera_rate)
    width, height = image_size
    for index, t in enumerate(frame_times):
        if camera_gap is not None and camera_gap[0] <= t < camera_gap[1]:
            continue
        pixels = frame_pixels(index, width, height)
        for camera in robot.cameras:
            image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=pixels.tobytes())
            image.header.stamp = seconds_to_stamp(START + t)
            image.header.frame_id = camera.frame
            events.append((START + t + 0.002, camera.topic, "sensor_msgs/msg/Image", serialize_message(image)))

    events.append((START, f"/{namespace}/instruction", "std_msgs/msg/String",
                   serialize_message(String(data=INSTRUCTION))))

    chunks = []
    if with_chunks:
        # a chunk is computed from the observation at the latest camera frame (the newest input stamp)
        for index, t in enumerate(np.arange(0.5, duration - horizon * dt, 1.0 / chunk_rate)):
            obs_t = float(frame_times[frame_times <= t + 1e-9][-1])
            target_t = obs_t + dt * np.arange(horizon)
            targets = trajectory(robot, target_t)
            if action_space == "joint_position":
                actions, names = targets, list(robot.command_joints)
            else:
                reference = kinematics.ee_poses(trajectory(robot, obs_t)[0])
                poses = {arm.name: np.array([kinematics.ee_poses(q)[arm.name] for q in targets]) for arm in robot.arms}
                grippers = {arm.name: targets[:, kinematics.gripper_index(arm.name)] for arm in robot.arms}
                actions = aspace.poses_to_relative_actions(poses, grippers, reference)
                names = aspace.wall_oss_names(relative=True)
            chunk = Chunk(actions=actions, dt=dt, action_space=action_space, action_names=names,
                          stamp=START + obs_t, instruction=INSTRUCTION, inference_latency=0.05)
            chunks.append(chunk)
            events.append((START + t + 0.05, f"/{namespace}/action_chunk", "wall_oss/msg/ActionChunk",
                           serialize_message(chunk_to_msg(chunk, index, robot.base_frame))))

    events.sort(key=lambda e: e[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for _, topic, msgtype, _ in events:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
        for t, topic, _, raw in events:
            writer.write(connections[topic], int(round(t * 1e9)), raw)
    return SyntheticBag(path, robot, chunks, START + joint_times, START + frame_times, action_space)


def storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


class PerturbedPolicy:
    """The replay backend with a known error: offsets on some dimensions (a constant, or one value per chunk
    step), a yaw [deg per step] about the base z axis applied to an arm's relative rotation
    (wall_oss_ee_relative: the predicted orientation becomes Rz(yaw) · R), and/or a time shift."""

    def __init__(self, replay: ReplayPolicy, offsets: dict[str, float | np.ndarray] | None = None,
                 delay: float = 0.0, yaw_deg: dict[str, np.ndarray] | None = None):
        self.replay, self.offsets, self.delay, self.yaw_deg = replay, offsets or {}, delay, yaw_deg or {}
        self.action_space, self.action_names = replay.action_space, replay.action_names

    def predict(self, observation):
        chunk = self.replay.predict(observation)
        actions = chunk.actions.copy()
        for name, offset in self.offsets.items():
            actions[:, chunk.action_names.index(name)] += offset
        for arm, yaw in self.yaw_deg.items():
            block = actions[:, aspace.arm_block(arm)]
            yaw_rotation = Rotation.from_euler("z", np.asarray(yaw)[:, None], degrees=True).as_matrix()
            block[:, 3:9] = aspace.rotation_to_6d(yaw_rotation @ aspace.rotation_from_6d(block[:, 3:9]))
            actions[:, aspace.arm_block(arm)] = block
        return Chunk(actions=actions, dt=chunk.dt, action_space=chunk.action_space, action_names=chunk.action_names,
                     stamp=chunk.stamp, instruction=chunk.instruction,
                     first_action_offset=chunk.first_action_offset + self.delay)
