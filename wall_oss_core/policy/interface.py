"""The one small interface every policy backend implements, and the data that crosses it.

The policy node assembles an `Observation`, calls `Policy.predict` on its worker thread, and
publishes the returned `Chunk` as an ActionChunk message. Backends: the Wall-OSS model
(`wall_oss_core.backends.wall_oss`) and recorded-chunk replay (`wall_oss_core.backends.replay`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

MAX_CHUNK_VALUES = 1 << 20  # far above any real horizon × action_dim; guards against absurd messages


class PolicyError(RuntimeError):
    """A backend could not produce a chunk for this observation (reported, never fatal to the node)."""


@dataclass
class Observation:
    """Everything the policy sees at one instant, already synchronized and validated.

    stamp: observation time [s] (the newest input stamp; the chunk is aligned to it).
    images: camera name → uint8 H×W×3 RGB.
    joint_positions: command-joint order of `RobotConfig.command_joints`.
    ee_poses: arm → 4×4 end-effector pose in the base frame (forward kinematics of joint_positions).
    grippers: arm → gripper opening (the gripper joint's position).
    """

    stamp: float
    images: dict[str, np.ndarray]
    joint_positions: np.ndarray
    joint_names: tuple[str, ...]
    ee_poses: dict[str, np.ndarray]
    grippers: dict[str, float]
    instruction: str


@dataclass
class Chunk:
    """H future actions from one observation. Action k targets time stamp + first_action_offset + k·dt."""

    actions: np.ndarray  # (H, A) float64
    dt: float
    action_space: str
    action_names: list[str]
    stamp: float
    instruction: str = ""
    first_action_offset: float = 0.0
    inference_latency: float = 0.0
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        self.actions = np.asarray(self.actions, dtype=np.float64)
        if self.actions.ndim != 2:
            raise ValueError(f"chunk actions must be (H, A), got shape {self.actions.shape}")
        if len(self.action_names) != self.actions.shape[1]:
            raise ValueError(f"{len(self.action_names)} action names for {self.actions.shape[1]} dimensions")
        if not self.dt > 0:
            raise ValueError(f"chunk time step must be positive, got {self.dt}")

    @property
    def horizon(self) -> int:
        return self.actions.shape[0]

    def action_times(self) -> np.ndarray:
        """Absolute target time of each action [s]."""
        return self.stamp + self.first_action_offset + self.dt * np.arange(self.horizon)


@runtime_checkable
class Policy(Protocol):
    """A chunked policy. `predict` may be slow (it runs on the node's worker thread) and must raise
    PolicyError (or ValueError) with a clear message rather than return a malformed chunk."""

    action_space: str
    action_names: list[str]

    def predict(self, observation: Observation) -> Chunk: ...


class DelayedPolicy:
    """Any backend made `delay` seconds slower per chunk (`--inference-delay`): how the graph copes
    with a slow model (the executor drops the actions that elapsed meanwhile) is measured with a fast one."""

    def __init__(self, policy: Policy, delay: float, sleep=None):
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"inference delay must be a finite number of seconds >= 0, got {delay}")
        self.policy, self.delay, self._sleep = policy, delay, sleep or time.sleep
        self.action_space, self.action_names = policy.action_space, policy.action_names

    def predict(self, observation: Observation) -> Chunk:
        chunk = self.policy.predict(observation)
        self._sleep(self.delay)
        return chunk


def chunk_from_message(msg) -> Chunk:
    """Validate an ActionChunk message (rclpy or rosbags: same field names) and turn it into a Chunk.

    Every reader of chunks (executor, markers, replay, evaluation) goes through here, so a malformed
    chunk is rejected with the same reason wherever it arrives. ValueError names what is wrong."""
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
    return Chunk(actions=data.reshape(horizon, dim), dt=float(msg.time_step), action_space=str(msg.action_space),
                 action_names=[str(name) for name in msg.action_names],
                 stamp=msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, instruction=str(msg.instruction),
                 first_action_offset=float(msg.first_action_offset),
                 inference_latency=float(msg.inference_latency), extras={"chunk_id": int(msg.chunk_id)})
