"""The one small interface every policy backend implements, and the data that crosses it.

The policy node assembles an `Observation`, calls `Policy.predict` on its worker thread, and
publishes the returned `Chunk` as an ActionChunk message. Backends: the Wall-OSS model
(`wall_oss_core.wall_oss_policy`) and recorded-chunk replay (`wall_oss_core.replay_policy`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


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
