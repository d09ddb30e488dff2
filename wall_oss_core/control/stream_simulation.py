"""A simulated chunk stream, on a simulated clock, for measuring chunk executors (tests and bench).

A flow policy's chunks as seen by an executor: every chunk predicts the same smooth motion, shifted by
its own offset (different samples of the policy disagree) and with independent per-action noise. An
observation is taken every `period`; its chunk arrives `delay` later. Positions are in the command
joints' order; only the arm joints move (grippers hold).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wall_oss_core.control.executor import JOINT_POSITION
from wall_oss_core.policy.interface import Chunk


@dataclass(frozen=True)
class StreamConfig:
    period: float                 # between observations [s]
    delay: float                  # inference delay: chunk arrival - observation stamp [s]
    horizon: int = 32             # actions per chunk
    action_rate: float = 30.0     # [Hz]
    command_rate: float = 200.0   # [Hz]
    offset_sigma: float = 0.02    # per-chunk offset [rad]
    noise_sigma: float = 0.002    # per-action noise [rad]
    amplitude: float = 0.2        # of the motion: amplitude * (1 - cos(2 pi f t)), at rest at t = 0 [rad]
    frequency: float = 0.5        # [Hz]
    duration: float = 8.0         # [s]
    seed: int = 0


@dataclass(frozen=True)
class Arrival:
    time: float
    chunk: Chunk
    offset: np.ndarray  # the chunk's offset (per joint): its noise-free trajectory is motion + offset


class ChunkStream:
    def __init__(self, config: StreamConfig, home: np.ndarray, moving: np.ndarray, joint_names):
        self.config = config
        self.home = np.asarray(home, dtype=float)
        self.moving = np.asarray(moving, dtype=bool)
        rng = np.random.default_rng(config.seed)
        dt = 1.0 / config.action_rate
        self.arrivals: list[Arrival] = []
        for stamp in np.arange(0.0, config.duration, config.period):
            times = stamp + dt * np.arange(config.horizon)
            offset = self.moving * rng.normal(0.0, config.offset_sigma, len(self.home))
            actions = self.motion(times) + offset + self.moving * rng.normal(0.0, config.noise_sigma,
                                                                             (config.horizon, len(self.home)))
            chunk = Chunk(actions, dt, JOINT_POSITION, list(joint_names), float(stamp))
            self.arrivals.append(Arrival(float(stamp + config.delay), chunk, offset))

    def motion(self, t) -> np.ndarray:
        """The motion every chunk predicts, at time(s) t: (..., joints)."""
        phase = 2 * np.pi * self.config.frequency * np.asarray(t, dtype=float)[..., None]
        return self.home + self.moving * self.config.amplitude * (1 - np.cos(phase))

    def ticks(self) -> np.ndarray:
        return np.arange(round(self.config.duration * self.config.command_rate)) / self.config.command_rate

    def newest_reference(self, times: np.ndarray) -> np.ndarray:
        """The noise-free trajectory of the newest chunk arrived by each time (the motion before any)."""
        arrived = np.array([a.time for a in self.arrivals])
        offsets = np.array([a.offset for a in self.arrivals])
        index = np.searchsorted(arrived, times, side="right") - 1
        return self.motion(times) + np.where(index[:, None] >= 0, offsets[np.maximum(index, 0)], 0.0)


def run_executor(executor, stream: ChunkStream) -> np.ndarray:
    """Positions commanded at every tick by a `ChunkExecutor` fed the stream (starting at rest on the motion)."""
    executor.on_joint_state(0.0, stream.motion(0.0))
    pending = list(stream.arrivals)
    positions = []
    for now in stream.ticks():
        while pending and pending[0].time <= now:
            executor.submit(pending.pop(0).chunk, now)
        positions.append(executor.step(now).positions)
    return np.array(positions)


def finite_differences(positions: np.ndarray, rate: float, order: int) -> np.ndarray:
    """|d^order position / dt^order| by finite differences at the command rate."""
    return np.abs(np.diff(positions, n=order, axis=0)) * rate ** order
