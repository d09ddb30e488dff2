"""Trajectory pieces of the chunk executor: the smoothed chunk curve and jerk-limited ruckig segments.

- `ChunkCurve`: a least-squares cubic B-spline through a chunk's targets (knots every
  `smoothing_interval` seconds; scipy's `make_lsq_spline`). A flow policy's actions carry per-action
  noise, independent from one action to the next; following them exactly turns that noise into
  acceleration and jerk (and, stitched chunk after chunk, into drift). The least-squares fit averages
  about `smoothing_interval / dt` actions per cubic piece, keeps motion at the chunk's own time scale
  and is C2, so the command can follow it exactly. (A Savitzky-Golay filter smooths as well but gives
  samples, not a curve with derivatives between them.)
- `plan_correction`: the command is the newest curve plus a correction; at a new chunk the
  correction starts at (command - curve) in position, velocity and acceleration, so nothing steps,
  and ruckig (velocity, acceleration AND jerk limited, time-optimal) drives it to zero. Its target
  is fixed (zero), so re-planning it every tick from its own state reproduces the same profile: no
  chatter, and once it is zero the command IS the curve (its jerk is the curve's own).
- `plan_tracking`: the fallback when curve + correction would leave the limits (a curve that is too
  fast or too curved, a joint limit): ruckig straight to the curve's state a short lookahead ahead.
  Re-planning a time-optimal profile to a moving target every tick keeps the jerk near its limit
  (measured: p99 jerk = the limit while tracking a smooth sine), which is why it is only the fallback.
- `plan_stop` / `plan_rest_at`: brake to rest within the limits (stopping at a position limit rather
  than past it), or come to rest at a given position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ruckig
from scipy.interpolate import make_lsq_spline

State = tuple[np.ndarray, np.ndarray, np.ndarray]  # position, velocity, acceleration
SNAP = (1e-9, 1e-8, 1e-7)  # correction components below these (position, velocity, acceleration) are zero


@dataclass(frozen=True)
class MotionLimits:
    """Per-joint bounds of the command stream: positions in [lower, upper], |v|, |a|, |jerk| below."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray

    def scaled(self, fraction: float) -> MotionLimits:
        return MotionLimits(self.lower, self.upper, fraction * self.velocity, fraction * self.acceleration,
                            fraction * self.jerk)

    def admits(self, previous: State, candidate: State, dt: float) -> bool:
        """Whether `candidate`, dt after `previous`, keeps every limit (jerk as the change of acceleration)."""
        position, velocity, acceleration = candidate
        tolerance = 1 + 1e-9
        return bool(np.all(position >= self.lower) and np.all(position <= self.upper)
                    and np.all(np.abs(velocity) <= self.velocity * tolerance)
                    and np.all(np.abs(acceleration) <= self.acceleration * tolerance)
                    and np.all(np.abs(acceleration - previous[2]) <= self.jerk * dt * tolerance))


class ChunkCurve:
    """Least-squares cubic spline through (times[k], targets[k]), positions clipped to the joint limits.

    Defined on [start, end]: before `start` it continues linearly with the start velocity (a chunk
    whose first action lies slightly in the future), after `end` it holds the end position at rest.
    Degree drops to K-1 for chunks of fewer than 4 actions; one action is a constant.
    """

    def __init__(self, times: np.ndarray, targets: np.ndarray, smoothing_interval: float, limits: MotionLimits):
        times = np.asarray(times, dtype=float)
        targets = np.asarray(targets, dtype=float)
        if times.ndim != 1 or targets.ndim != 2 or len(times) != len(targets) or len(times) == 0:
            raise ValueError(f"need K times and (K, J) targets, got {times.shape} and {targets.shape}")
        if np.any(np.diff(times) <= 0):
            raise ValueError("action times must be strictly increasing")
        self.start, self.end = float(times[0]), float(times[-1])
        self.limits = limits
        self._constant = targets[0] if len(times) == 1 else None
        if self._constant is not None:
            zero = np.zeros(targets.shape[1])
            self.peak_velocity = self.peak_acceleration = self.peak_jerk = zero
            return
        degree = min(3, len(times) - 1)
        pieces = int(np.clip(np.floor((self.end - self.start) / smoothing_interval), 1, len(times) - degree))
        inner = np.linspace(self.start, self.end, pieces + 1)[1:-1]
        knots = np.concatenate([[self.start] * (degree + 1), inner, [self.end] * (degree + 1)])
        self._spline = make_lsq_spline(times, targets, knots, k=degree)
        self._velocity = self._spline.derivative(1)
        self._acceleration = self._spline.derivative(2) if degree >= 2 else None
        # peaks: velocity and acceleration sampled finely, jerk constant per cubic piece
        probe = np.linspace(self.start, self.end, 16 * pieces + 1)
        self.peak_velocity = np.max(np.abs(self._velocity(probe)), axis=0)
        self.peak_acceleration = (np.max(np.abs(self._acceleration(probe)), axis=0) if self._acceleration is not None
                                  else np.zeros(targets.shape[1]))
        breaks = np.concatenate([[self.start], inner, [self.end]])
        self.peak_jerk = (np.max(np.abs(self._spline.derivative(3)(0.5 * (breaks[1:] + breaks[:-1]))), axis=0)
                          if degree == 3 else np.zeros(targets.shape[1]))

    def state(self, t: float) -> State:
        """Position, velocity, acceleration at t; where a position is clipped to its limit, that
        joint's velocity and acceleration are zero."""
        if self._constant is not None:
            zero = np.zeros_like(self._constant)
            return np.clip(self._constant, self.limits.lower, self.limits.upper), zero, zero.copy()
        if t >= self.end:
            position = self._spline(self.end)
            velocity = acceleration = np.zeros_like(position)
        elif t < self.start:
            velocity = self._velocity(self.start)
            position, acceleration = self._spline(self.start) + velocity * (t - self.start), np.zeros_like(velocity)
        else:
            position, velocity = self._spline(t), self._velocity(t)
            acceleration = self._acceleration(t) if self._acceleration is not None else np.zeros_like(position)
        clipped = (position < self.limits.lower) | (position > self.limits.upper)
        return (np.clip(position, self.limits.lower, self.limits.upper), np.where(clipped, 0.0, velocity),
                np.where(clipped, 0.0, acceleration))


@dataclass(frozen=True)
class Segment:
    """A ruckig trajectory started at `start` (absolute time); holds its final state afterwards."""

    start: float
    trajectory: ruckig.Trajectory

    @property
    def end(self) -> float:
        return self.start + self.trajectory.duration

    def state(self, t: float) -> State:
        """Its state at t; after its end the final state, velocity and acceleration exactly zero when
        it ends at rest (ruckig leaves ~1e-16 residues)."""
        if t >= self.end:
            position, velocity, acceleration = (np.array(x) for x in self.trajectory.at_time(self.trajectory.duration))
            at_rest = np.max(np.abs(velocity), initial=0.0) < 1e-9 and np.max(np.abs(acceleration), initial=0.0) < 1e-9
            return (position, np.zeros_like(velocity), np.zeros_like(acceleration)) if at_rest else \
                (position, velocity, acceleration)
        position, velocity, acceleration = self.trajectory.at_time(max(t - self.start, 0.0))
        return np.array(position), np.array(velocity), np.array(acceleration)


def _input(state: State, velocity: np.ndarray, acceleration: np.ndarray, jerk: np.ndarray) -> ruckig.InputParameter:
    inp = ruckig.InputParameter(len(state[0]))
    inp.current_position = list(state[0])
    # ruckig refuses a start beyond its limits; the states given here are within them up to rounding
    inp.current_velocity = list(np.clip(state[1], -velocity, velocity))
    inp.current_acceleration = list(np.clip(state[2], -acceleration, acceleration))
    inp.max_velocity, inp.max_acceleration, inp.max_jerk = list(velocity), list(acceleration), list(jerk)
    return inp


def _calculate(inp: ruckig.InputParameter) -> ruckig.Trajectory | None:
    trajectory = ruckig.Trajectory(inp.degrees_of_freedom)
    try:
        result = ruckig.Ruckig(inp.degrees_of_freedom).calculate(inp, trajectory)
    except (ruckig.RuckigError, ValueError):  # ValueError: the binding's enum lacks some error codes (-101)
        return None
    return trajectory if result in (ruckig.Result.Working, ruckig.Result.Finished) else None


def plan_correction(start: float, error: State, velocity: np.ndarray, acceleration: np.ndarray,
                    jerk: np.ndarray) -> Segment | None:
    """The correction from `error` (command - curve) to zero within the given budgets (which must
    cover the error's own velocity and acceleration); None if ruckig cannot plan it."""
    # below these the error is rounding: ruckig plans erratic profiles (mm/s jerks) for 1e-14 inputs;
    # snapping them is a jerk of at most ~1e-2 rad/s^3 at 200 Hz
    error = tuple(np.where(np.abs(e) < threshold, 0.0, e) for e, threshold in zip(error, SNAP))
    inp = _input(error, velocity, acceleration, jerk)
    zero = [0.0] * len(error[0])
    inp.target_position, inp.target_velocity, inp.target_acceleration = zero, zero, zero
    trajectory = _calculate(inp)
    return Segment(start, trajectory) if trajectory is not None else None


def _feasible(target: State, limits: MotionLimits) -> State:
    """A target ruckig accepts: inside the limits, with no acceleration that would carry the velocity
    past its limit before the jerk can cancel it."""
    position, velocity, acceleration = target
    velocity = np.clip(velocity, -0.98 * limits.velocity, 0.98 * limits.velocity)
    headroom = np.minimum(limits.acceleration, np.sqrt(2 * limits.jerk * (limits.velocity - np.abs(velocity))))
    return np.clip(position, limits.lower, limits.upper), velocity, np.clip(acceleration, -headroom, headroom)


def plan_tracking(start: float, state: State, target: State, lookahead: float, limits: MotionLimits) -> Segment:
    """From `state` at `start` to `target` (made feasible) in `lookahead` seconds or as soon after as
    the limits allow; the executor follows its first tick only."""
    inp = _input(state, limits.velocity, limits.acceleration, limits.jerk)
    position, velocity, acceleration = _feasible(target, limits)
    inp.target_position, inp.target_velocity = list(position), list(velocity)
    inp.target_acceleration = list(acceleration)
    inp.minimum_duration = lookahead
    trajectory = _calculate(inp)
    return Segment(start, trajectory) if trajectory is not None else plan_stop(start, state, limits)


def plan_rest_at(start: float, state: State, position: np.ndarray, limits: MotionLimits) -> Segment | None:
    """To rest at `position` (clipped into the limits); None if ruckig cannot plan it."""
    inp = _input(state, limits.velocity, limits.acceleration, limits.jerk)
    inp.target_position = list(np.clip(position, limits.lower, limits.upper))
    inp.target_velocity = inp.target_acceleration = [0.0] * len(position)
    trajectory = _calculate(inp)
    return Segment(start, trajectory) if trajectory is not None else None


def plan_stop(start: float, state: State, limits: MotionLimits) -> Segment:
    """Brake to rest as fast as the limits allow (all joints together). Where braking would carry a
    joint past its position limit, come to rest at the limit instead."""
    inp = _input(state, limits.velocity, limits.acceleration, limits.jerk)
    inp.control_interface = ruckig.ControlInterface.Velocity
    inp.target_velocity = inp.target_acceleration = [0.0] * len(state[0])
    trajectory = _calculate(inp)
    if trajectory is None:  # a state ruckig cannot brake from (never seen): hold it, never raise in a tick
        inp = _input((state[0], np.zeros_like(state[0]), np.zeros_like(state[0])), limits.velocity,
                     limits.acceleration, limits.jerk)
        inp.target_position, inp.target_velocity, inp.target_acceleration = list(state[0]), [0.0] * len(state[0]), \
            [0.0] * len(state[0])
        return Segment(start, _calculate(inp))
    rest = np.array(trajectory.at_time(trajectory.duration)[0])
    if np.any(rest < limits.lower) or np.any(rest > limits.upper):
        at_limit = plan_rest_at(start, state, rest, limits)
        if at_limit is not None:
            return at_limit
    return Segment(start, trajectory)
