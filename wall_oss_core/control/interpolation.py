"""Trajectory pieces the chunk executor strings together: all C1 (continuous position and velocity).

- `HermiteSpline`: a cubic Hermite curve through a chunk's targets, velocities at the knots from
  finite differences (centred inside, one-sided at the ends; Catmull-Rom on uniform knots). It is
  local (one odd action only bends its two neighbouring segments), passes exactly through every
  target at its time and reproduces constant-velocity motion exactly, so a chunk that agrees with
  the running motion is followed without any correction.
- `Blend`: an additive correction that starts at the offset (position and velocity) between the
  running command and a new chunk's curve and decays to zero as a cubic over the blend window. The
  stitched command equals the running command at the stitch in position AND velocity, then converges
  onto the new chunk's curve; its acceleration is bounded by `blend_duration`'s choice of window.
  Adding the correction to the new curve (rather than interpolating towards a single point) keeps
  the new chunk's shape during the window.
- `StopProfile`: decelerates from a moving state to rest with every joint's deceleration within its
  budget, all joints stopping together (the path keeps its direction in joint space), then holds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def finite_difference_velocities(times: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Velocities at the knots: centred differences inside, one-sided at both ends, zero for one knot."""
    velocities = np.zeros_like(positions)
    if len(times) < 2:
        return velocities
    velocities[1:-1] = (positions[2:] - positions[:-2]) / (times[2:] - times[:-2])[:, None]
    velocities[0] = (positions[1] - positions[0]) / (times[1] - times[0])
    velocities[-1] = (positions[-1] - positions[-2]) / (times[-1] - times[-2])
    return velocities


@dataclass(frozen=True)
class HermiteSpline:
    """Piecewise cubic through (times[k], positions[k]) with slopes velocities[k]; (K,) and (K, J).

    Before the first knot and after the last it continues linearly with the end velocity (C1), which
    is what an aligned chunk whose first action lies slightly in the future needs.
    """

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    @classmethod
    def through(cls, times, positions) -> HermiteSpline:
        times = np.asarray(times, dtype=float)
        positions = np.asarray(positions, dtype=float)
        if times.ndim != 1 or positions.ndim != 2 or len(times) != len(positions) or len(times) == 0:
            raise ValueError(f"need K times and (K, J) positions, got {times.shape} and {positions.shape}")
        if np.any(np.diff(times) <= 0):
            raise ValueError("knot times must be strictly increasing")
        return cls(times, positions, finite_difference_velocities(times, positions))

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity at time t."""
        times = self.times
        if t <= times[0] or len(times) == 1:
            return self.positions[0] + self.velocities[0] * (t - times[0]), self.velocities[0].copy()
        if t >= times[-1]:
            return self.positions[-1] + self.velocities[-1] * (t - times[-1]), self.velocities[-1].copy()
        k = int(np.searchsorted(times, t, side="right")) - 1
        h = times[k + 1] - times[k]
        s = (t - times[k]) / h
        p0, p1 = self.positions[k], self.positions[k + 1]
        m0, m1 = self.velocities[k] * h, self.velocities[k + 1] * h
        s2, s3 = s * s, s * s * s
        position = (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * m0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * m1
        slope = (6 * s2 - 6 * s) * p0 + (3 * s2 - 4 * s + 1) * m0 + (-6 * s2 + 6 * s) * p1 + (3 * s2 - 2 * s) * m1
        return position, slope / h

    def max_speed(self) -> np.ndarray:
        """Upper bound of |velocity| per joint over the knot span (extrema of each segment's quadratic)."""
        if len(self.times) == 1:
            return np.zeros(self.positions.shape[1])
        h = np.diff(self.times)[:, None]
        p0, p1 = self.positions[:-1], self.positions[1:]
        v0, v1 = self.velocities[:-1], self.velocities[1:]
        # velocity on a segment is v(s) = a s^2 + b s + c in the unit parameter s
        a = 6 * (p0 - p1) / h + 3 * (v0 + v1)
        b = 6 * (p1 - p0) / h - 4 * v0 - 2 * v1
        c = v0
        with np.errstate(divide="ignore", invalid="ignore"):
            vertex = np.where(a != 0, -b / (2 * a), 0.0)
        inside = (vertex > 0) & (vertex < 1)
        at_vertex = np.where(inside, np.abs(a * vertex ** 2 + b * vertex + c), 0.0)
        return np.max(np.maximum(np.maximum(np.abs(v0), np.abs(v1)), at_vertex), axis=0)


def blend_duration(position_offset: np.ndarray, velocity_offset: np.ndarray, acceleration_budget: np.ndarray,
                   velocity_budget: np.ndarray, minimum: float, maximum: float) -> float:
    """Shortest window T ≥ minimum (capped at maximum) over which a `Blend` of these offsets stays
    within the per-joint acceleration and velocity budgets.

    The correction's acceleration is linear in time with its largest magnitude at the start,
    (6|e| + 4T|ė|) / T²; its velocity beyond the initial offset is at most 1.5|e| / T. Solving both for
    T per joint and taking the slowest joint gives one window for all joints.
    """
    e = np.abs(position_offset)
    ev = np.abs(velocity_offset)
    for_acceleration = (4 * ev + np.sqrt(16 * ev ** 2 + 24 * acceleration_budget * e)) / (2 * acceleration_budget)
    for_velocity = 1.5 * e / velocity_budget
    needed = float(np.max(np.maximum(for_acceleration, for_velocity), initial=0.0))
    return float(min(max(needed, minimum), maximum))


@dataclass(frozen=True)
class Blend:
    """Correction c(t) with c(start) = position_offset, ċ(start) = velocity_offset, c = ċ = 0 from
    start + duration on (a cubic Hermite to rest)."""

    start: float
    duration: float
    position_offset: np.ndarray
    velocity_offset: np.ndarray

    @property
    def end(self) -> float:
        return self.start + self.duration

    def evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        if t >= self.end or self.duration <= 0:
            return np.zeros_like(self.position_offset), np.zeros_like(self.position_offset)
        s = max(t - self.start, 0.0) / self.duration
        s2, s3 = s * s, s * s * s
        e, m = self.position_offset, self.velocity_offset * self.duration
        position = (2 * s3 - 3 * s2 + 1) * e + (s3 - 2 * s2 + s) * m
        slope = (6 * s2 - 6 * s) * e + (3 * s2 - 4 * s + 1) * m
        return position, slope / self.duration


@dataclass(frozen=True)
class StopProfile:
    """Constant deceleration from (position, velocity) at `start` to rest; all joints stop together
    at `start + duration` and the profile holds that position afterwards."""

    start: float
    position: np.ndarray
    velocity: np.ndarray
    duration: float

    @classmethod
    def from_state(cls, start: float, position: np.ndarray, velocity: np.ndarray,
                   deceleration: np.ndarray) -> StopProfile:
        """The slowest joint decelerates at its budget; the others scale down to stop with it."""
        position = np.asarray(position, dtype=float).copy()
        velocity = np.asarray(velocity, dtype=float).copy()
        duration = float(np.max(np.abs(velocity) / deceleration, initial=0.0))
        return cls(start, position, velocity, duration)

    def evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        tau = min(max(t - self.start, 0.0), self.duration)
        if self.duration <= 0:
            return self.position.copy(), np.zeros_like(self.velocity)
        fraction_left = 1.0 - tau / self.duration
        position = self.position + self.velocity * (tau - 0.5 * tau * tau / self.duration)
        return position, self.velocity * fraction_left
