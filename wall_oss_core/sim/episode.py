"""Closed-loop episodes without ROS: the graph's core objects in one loop, scored by task progress.

sim → observation → policy → `ChunkExecutor` (alignment, stitching, holds) → `SafetySupervisor`
(limits, workspace, watchdogs) → sim position commands, one control period at a time on sim time.
It is the launched graph minus DDS: a backend (the scripted expert) is checked in physics in about a
second per episode, and every chunk passes the same executor and supervisor a model's chunks do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from wall_oss_core.control.executor import ChunkExecutor, ExecutorConfig
from wall_oss_core.control.safety import SafetyConfig, SafetyState, SafetySupervisor
from wall_oss_core.policy.interface import Chunk, Observation, Policy
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import AlohaSim
from wall_oss_core.sim.tasks import ProgressTracker


@dataclass(frozen=True)
class EpisodeResult:
    progress: float                 # 0–100, max over time of the stage progress
    success: bool
    reached: dict[str, bool]        # stage → held at some instant
    time_to_success: float | None   # [s] from the episode start
    rejected_chunks: int            # by the executor
    limited_ticks: int              # supervisor ticks that shaped the command (LIMITING) or held
    held_ticks: int                 # of those, ticks in HOLD / FAULT / ESTOP (the safety stack stopped the arm)
    max_correction: float           # largest |supervisor output − executor command| of any joint


def observe(sim: AlohaSim, kinematics: BimanualKinematics, instruction: str,
            cameras: tuple[str, ...] = ()) -> Observation:
    """The sim's state as a policy observation (images only for the cameras asked for)."""
    joints = sim.joint_positions()
    return Observation(stamp=sim.time, images={c: sim.render(c) for c in cameras}, joint_positions=joints,
                       joint_names=kinematics.config.command_joints, ee_poses=kinematics.ee_poses(joints),
                       grippers={arm.name: float(joints[kinematics.gripper_index(arm.name)])
                                 for arm in kinematics.config.arms},
                       instruction=instruction)


class TickListener(Protocol):
    """Sees every control tick of an episode (recording demonstrations, collecting chunk latencies)."""

    def on_tick(self, sim: AlohaSim, instruction: str, chunk: Chunk | None, command: np.ndarray | None) -> None:
        """Called before the sim steps: `chunk` the policy's chunk when one was asked for at this tick,
        `command` the positions the supervisor sent to the sim (None when it sent none)."""


class EpisodeRunner:
    """One sim, one policy, the executor and the supervisor; `run` continues from where it stopped,
    so an episode can change its instruction between runs (the executor drops the old chunk)."""

    def __init__(self, sim: AlohaSim, policy: Policy, kinematics: BimanualKinematics, *,
                 control_period: float = 0.01, chunk_period: float = 0.5, cameras: tuple[str, ...] = (),
                 listener: TickListener | None = None):
        self.sim, self.policy, self.kinematics = sim, policy, kinematics
        self.control_period, self.chunk_period, self.cameras = control_period, chunk_period, cameras
        self.listener = listener
        self.executor = ChunkExecutor(kinematics, ExecutorConfig())
        self.supervisor = SafetySupervisor(kinematics, SafetyConfig(period=control_period))
        self.instruction = ""
        self._next_chunk = sim.time
        self.rejected_chunks = 0
        self.limited_ticks = 0
        self.held_ticks = 0
        self.max_correction = 0.0

    def run(self, tracker: ProgressTracker, instruction: str, duration: float) -> EpisodeResult:
        """Run `duration` seconds of sim time with `instruction`, scoring with `tracker`."""
        sim, start, time_to_success = self.sim, self.sim.time, None
        if instruction != self.instruction:
            self.instruction = instruction
            self.executor.set_instruction(instruction, sim.time)
            self._next_chunk = sim.time
        while sim.time - start < duration - 1e-9:
            now, joints = sim.time, sim.joint_positions()
            self.executor.on_joint_state(now, joints)
            self.supervisor.on_joint_state(now, joints)
            chunk = None
            if now >= self._next_chunk - 1e-9:
                chunk = self.policy.predict(observe(sim, self.kinematics, instruction, self.cameras))
                if not self.executor.submit(chunk, now):
                    self.rejected_chunks += 1
                self._next_chunk = now + self.chunk_period
            command = self.executor.step(now)
            if command is not None:
                self.supervisor.on_candidate(now, command.positions, command.velocities, stamp=now)
            output = self.supervisor.tick(now)
            if output.state != SafetyState.OK:
                self.limited_ticks += 1
            if output.state not in (SafetyState.OK, SafetyState.LIMITING):
                self.held_ticks += 1
            if output.positions is not None and command is not None:
                self.max_correction = max(self.max_correction, float(abs(output.positions - command.positions).max()))
            if output.positions is not None:
                sim.set_command(output.positions)
            if self.listener is not None:
                self.listener.on_tick(sim, instruction, chunk, output.positions)
            sim.step(self.control_period)
            tracker.update(sim)
            if time_to_success is None and tracker.success:
                time_to_success = sim.time - start
        return EpisodeResult(tracker.progress, tracker.success, dict(tracker.reached), time_to_success,
                             self.rejected_chunks, self.limited_ticks, self.held_ticks, self.max_correction)
