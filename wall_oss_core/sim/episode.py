"""Closed-loop episodes without ROS: a policy drives the ALOHA sim directly, scored by task progress.

The loop is the graph's in miniature: an observation from the sim every `chunk_period`, a chunk from
the policy, the chunk's actions interpolated (the executor's Hermite spline) into joint commands at
the control period, physics between commands. It checks a backend (the scripted expert) in physics
quickly; the full graph adds the executor's stitching and the safety supervisor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wall_oss_core.control.interpolation import HermiteSpline
from wall_oss_core.policy.interface import Observation, Policy
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import AlohaSim
from wall_oss_core.sim.tasks import ProgressTracker


@dataclass(frozen=True)
class EpisodeResult:
    progress: float                 # 0–100, max over time of the stage progress
    success: bool
    reached: dict[str, bool]        # stage → held at some instant
    time_to_success: float | None   # [s] from the episode start


def observe(sim: AlohaSim, kinematics: BimanualKinematics, instruction: str,
            cameras: tuple[str, ...] = ()) -> Observation:
    """The sim's state as a policy observation (images only for the cameras asked for)."""
    joints = sim.joint_positions()
    return Observation(stamp=sim.time, images={c: sim.render(c) for c in cameras}, joint_positions=joints,
                       joint_names=kinematics.config.command_joints, ee_poses=kinematics.ee_poses(joints),
                       grippers={arm.name: float(joints[kinematics.gripper_index(arm.name)])
                                 for arm in kinematics.config.arms},
                       instruction=instruction)


def run_episode(sim: AlohaSim, policy: Policy, tracker: ProgressTracker, kinematics: BimanualKinematics,
                instruction: str, duration: float, *, control_period: float = 0.02, chunk_period: float = 0.5,
                cameras: tuple[str, ...] = ()) -> EpisodeResult:
    """Run `duration` seconds of sim time from the sim's current state."""
    start = sim.time
    spline, next_chunk, time_to_success = None, start, None
    while sim.time - start < duration - 1e-9:
        if sim.time >= next_chunk - 1e-9:
            chunk = policy.predict(observe(sim, kinematics, instruction, cameras))
            spline = HermiteSpline.through(chunk.action_times(), chunk.actions)
            next_chunk += chunk_period
        end = spline.end
        command, _ = spline.evaluate(min(sim.time + control_period, end))
        sim.set_command(np.clip(command, sim.command_lower, sim.command_upper))
        sim.step(control_period)
        tracker.update(sim)
        if time_to_success is None and tracker.success:
            time_to_success = sim.time - start
    return EpisodeResult(tracker.progress, tracker.success, dict(tracker.reached), time_to_success)
