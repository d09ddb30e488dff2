"""The chunk executor: action chunks in, a smooth, jerk-limited joint command stream at the controller rate out.

No clocks inside: every call takes `now` [s] explicitly (the node passes its ROS clock), so the whole
behaviour is a deterministic function of the calls and is tested without any timing. `step` is called
every control tick: the command is a state (position, velocity, acceleration) that evolves tick by
tick within the velocity, acceleration and jerk limits, whatever happens to the chunks or the clock.

What it does with a chunk (see `ChunkExecutor.prepare` / `accept`):
1. Validates it: action space, names, dimensions, finite values in range (targets further beyond a
   limit than the joint's whole range are garbage, not clipped), strictly increasing action times,
   a first action offset within bounds, stamp order (across pauses too) and age (again at `accept`),
   instruction. Bad chunks are rejected with a reason and counted, never executed; `prepare` never
   raises (an unexpected error is a counted `prepare_failed` rejection, the worker goes on).
2. Converts it to joint targets. `joint_position` chunks are absolute targets already.
   `wall_oss_ee_relative` chunks are relative to each end-effector AT THE OBSERVATION, so the
   reference poses come from forward kinematics of the joint state measured at the chunk stamp (a
   short history of measured states, interpolated to the stamp); IK then runs once per action,
   seeded with the previous action's solution, once per chunk and never per control tick.
3. Smooths it (`ChunkCurve`, a least-squares cubic spline: a policy's per-action noise is not a
   trajectory to follow) and aligns it to its observation stamp: action k is the target for
   stamp + first_action_offset + k·dt, so the actions that elapsed while the policy was thinking are
   skipped, never replayed (replaying them makes naive executors snap back; ANCHORS: axol #191).
4. Switches to it: the newest chunk wins (averaging overlapping chunks as in temporal ensembling
   blends modes into invalid actions). The command is the newest curve plus a correction that starts
   at the difference (position, velocity, acceleration: nothing steps) and that ruckig drives to zero
   within the jerk, acceleration and velocity the curve leaves over. The correction always aims at
   the newest curve itself, so offsets and noise never accumulate. Where curve + correction would
   leave a limit, ruckig tracks the curve directly instead (`plan_tracking`).
5. When the chunk runs out (policy stalled or stopped), on a pause (empty instruction), an
   instruction change or a clock jump (ROS time going back, or leaping ahead more than
   `max_tick_gap`), it brakes to rest within the limits and holds; after a clock jump it forgets the
   joint-state history and the stamp order, and resumes on fresh data.
"""
from __future__ import annotations

import threading
import traceback
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from wall_oss_core.control.interpolation import (
    ChunkCurve,
    MotionLimits,
    State,
    plan_correction,
    plan_stop,
    plan_tracking,
)
from wall_oss_core.policy import action_space as aspace
from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.kinematics import BimanualKinematics

JOINT_POSITION = "joint_position"
EE_RELATIVE = "wall_oss_ee_relative"

# Rejection reasons (the keys of ExecutorCounters.rejected).
INVALID_MESSAGE = "invalid_message"            # the message did not decode into a chunk (sizes, NaN, time step)
SUPERSEDED = "superseded"                      # a newer chunk arrived before this one was prepared
NOT_READY = "not_ready"                        # no joint state measured yet
UNKNOWN_ACTION_SPACE = "unknown_action_space"
WRONG_DIMENSIONS = "wrong_dimensions"
WRONG_NAMES = "wrong_names"
NON_FINITE = "non_finite"
BAD_TIMING = "bad_timing"                      # non-finite stamp / offset
FUTURE_STAMP = "future_stamp"                  # observation stamp ahead of `now` (clock mismatch)
STALE = "stale"                                # too old, or its whole horizon already elapsed
REORDERED = "reordered"                        # not newer than the chunk already running
PAUSED = "paused"                              # instruction is empty
INSTRUCTION_MISMATCH = "instruction_mismatch"  # computed for another instruction
NO_REFERENCE_STATE = "no_reference_state"      # no measured joint state near the stamp (EE chunks)
IK_FAILED = "ik_failed"
TOO_FAST = "too_fast"                          # joint speeds far above the URDF limits
OUT_OF_RANGE = "out_of_range"                  # targets beyond a joint limit by more than the joint's range
PREPARE_FAILED = "prepare_failed"              # an unexpected error while preparing (a bug): counted, never fatal
REJECTION_REASONS = (INVALID_MESSAGE, SUPERSEDED, NOT_READY, UNKNOWN_ACTION_SPACE, WRONG_DIMENSIONS, WRONG_NAMES,
                     NON_FINITE, BAD_TIMING, FUTURE_STAMP, STALE, REORDERED, PAUSED, INSTRUCTION_MISMATCH,
                     NO_REFERENCE_STATE, IK_FAILED, TOO_FAST, OUT_OF_RANGE, PREPARE_FAILED)


@dataclass(frozen=True)
class ExecutorConfig:
    """Tuning of the executor."""

    limit_fraction: float = 0.95          # share of the velocity / acceleration / jerk limits the command uses
    min_correction_fraction: float = 0.25  # the correction always gets at least this share of the limits
    smoothing_interval: float = 0.25      # knot spacing of the least-squares chunk fit [s]
    lookahead: float = 0.1               # fallback tracking aims at the curve this far ahead [s]
    max_tick_gap: float = 0.5             # ROS time leaping more than this (or going back) between ticks: a clock jump [s]
    max_chunk_age: float = 1.0            # chunks whose observation is older than this are stale [s]
    max_future_stamp: float = 0.05        # tolerated clock skew of chunk / joint state stamps ahead of `now` [s]
    max_first_action_offset: float = 1.0  # a chunk's first action may target at most this before / after its stamp [s]
    max_speed_factor: float = 1.5         # reject chunks needing more than this × the velocity limit
    joint_history_duration: float = 2.0   # measured joint states kept for EE reference poses [s]
    max_reference_gap: float = 0.1        # farthest measured state from a chunk stamp that may serve [s]
    ik_max_position_error: float = 0.005  # [m]
    ik_max_rotation_error: float = 0.03   # [rad]

    def __post_init__(self):
        for name, value in vars(self).items():
            if name != "max_future_stamp" and not (np.isfinite(value) and value > 0):
                raise ValueError(f"executor setting {name} must be a positive number, got {value}")
        if not (np.isfinite(self.max_future_stamp) and self.max_future_stamp >= 0):
            raise ValueError(f"executor setting max_future_stamp must be >= 0, got {self.max_future_stamp}")
        for name in ("limit_fraction", "min_correction_fraction"):
            if getattr(self, name) > 1:
                raise ValueError(f"executor setting {name} must be at most 1, got {getattr(self, name)}")
        if self.joint_history_duration < self.max_chunk_age:
            raise ValueError("joint_history_duration must cover max_chunk_age so every accepted chunk finds "
                             "its reference joint state")


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class PreparedChunk:
    """A validated chunk as joint-space targets (command-joint order) at absolute times."""

    chunk: Chunk
    times: np.ndarray
    targets: np.ndarray
    curve: ChunkCurve

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Accepted:
    skipped_actions: int  # actions whose time had passed at acceptance

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Command:
    time: float
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    source: str  # "chunk" (on the chunk's curve), "transition" (converging onto it) or "hold" (stopping / at rest)


@dataclass
class ExecutorCounters:
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    skipped_actions: int = 0
    holds: int = 0          # times the command went from following a chunk to stopping / holding
    discarded: int = 0      # running chunks dropped by a pause, an instruction change or a clock jump
    clock_jumps: int = 0    # ROS time going back or leaping ahead between ticks
    ticks: Counter = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class JointStateHistory:
    """Measured joint positions of the last few seconds, for looking up the state at a chunk stamp.

    Appended from the joint-state callback and read from the chunk preparation thread, hence the lock.
    """

    def __init__(self, duration: float):
        self.duration = duration
        self._times: deque[float] = deque()
        self._positions: deque[np.ndarray] = deque()
        self._lock = threading.Lock()

    def add(self, t: float, positions: np.ndarray) -> None:
        """Raises ValueError on non-finite values or a stamp older than the newest one kept."""
        positions = np.array(positions, dtype=float)
        if not np.isfinite(t) or not np.all(np.isfinite(positions)):
            raise ValueError("joint state with a non-finite stamp or position")
        with self._lock:
            if self._times and t < self._times[-1]:
                raise ValueError(f"joint state stamp {t:.6f} is older than the newest one ({self._times[-1]:.6f})")
            self._times.append(float(t))
            self._positions.append(positions)
            while self._times[0] < t - self.duration:
                self._times.popleft()
                self._positions.popleft()

    def clear(self) -> None:
        with self._lock:
            self._times.clear()
            self._positions.clear()

    def latest(self) -> tuple[float, np.ndarray] | None:
        with self._lock:
            if not self._times:
                return None
            return self._times[-1], self._positions[-1].copy()

    def at(self, t: float, max_gap: float) -> np.ndarray | None:
        """Positions at time t: linear between the two samples around t, else the nearest sample if it
        is within max_gap; None when nothing measured is close enough."""
        with self._lock:
            times = list(self._times)
            positions = list(self._positions)
        if not times:
            return None
        i = bisect_left(times, t)
        if 0 < i < len(times) and times[i] - times[i - 1] <= 2 * max_gap:
            w = (t - times[i - 1]) / (times[i] - times[i - 1])
            return (1 - w) * positions[i - 1] + w * positions[i]
        nearest = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - t))
        return positions[nearest].copy() if abs(times[nearest] - t) <= max_gap else None


class ChunkExecutor:
    """Chunks in (`submit`, or `prepare` on a worker thread then `accept`), commands out (`step`)."""

    def __init__(self, kinematics: BimanualKinematics, config: ExecutorConfig = ExecutorConfig()):
        self.kinematics = kinematics
        self.config = config
        self.joint_names = kinematics.config.command_joints
        robot = kinematics.limits
        self.limits = MotionLimits(robot.lower, robot.upper, robot.velocity, robot.acceleration,
                                   robot.jerk).scaled(config.limit_fraction)
        self._lower, self._upper = robot.lower, robot.upper
        self._speed_limit = config.max_speed_factor * robot.velocity
        self.history = JointStateHistory(config.joint_history_duration)
        self.counters = ExecutorCounters()
        self.instruction: str | None = None  # None: no instruction received, chunks of any instruction run
        self.last_rejection: Rejected | None = None
        self._state: State | None = None      # the last command (position, velocity, acceleration) ...
        self._time: float | None = None       # ... and its time
        self._period = 0.0                    # the last tick period [s]
        self._curve: ChunkCurve | None = None  # the running chunk's curve
        self._chunk: Chunk | None = None
        self._source = "hold"
        self._newest_stamp = -np.inf  # stamps must increase across pauses too; reset by a clock jump

    # ---------------------------------------------------------------- inputs

    def on_joint_state(self, t: float, positions: np.ndarray, now: float | None = None) -> None:
        """Record a measured joint state (command-joint order). Raises ValueError on bad input,
        including a stamp ahead of `now` (it would make every later, correct stamp look old)."""
        positions = np.asarray(positions, dtype=float)
        if positions.shape != (len(self.joint_names),):
            raise ValueError(f"joint state needs {len(self.joint_names)} positions, got shape {positions.shape}")
        if now is not None and t > now + self.config.max_future_stamp:
            raise ValueError(f"joint state stamp is {t - now:.3f} s ahead of the clock")
        self.history.add(t, positions)

    def set_instruction(self, instruction: str, now: float) -> bool:
        """An empty instruction pauses; a changed one drops the running chunk. Either way the command
        brakes to rest and holds until a chunk for the new instruction.
        Returns whether a chunk that was still running got dropped."""
        self.instruction = instruction
        if self._chunk is None or (instruction != "" and self._chunk.instruction == instruction):
            return False
        self._drop_chunk()
        return True

    def submit(self, chunk: Chunk, now: float) -> Accepted | Rejected:
        """Validate, convert, align and switch to a chunk in one go."""
        return self.accept(self.prepare(chunk, now), now)

    def prepare(self, chunk: Chunk, now: float) -> PreparedChunk | Rejected:
        """Everything that does not touch the running command (validation, IK, smoothing); safe to run
        on a worker thread while `step` keeps ticking. Never raises. The result goes to `accept`."""
        try:
            return self._prepare(chunk, now)
        except Exception as error:  # a bug must cost one chunk, not the worker thread
            where = traceback.extract_tb(error.__traceback__)[-1]
            return Rejected(PREPARE_FAILED, f"{type(error).__name__}: {error} ({where.filename}:{where.lineno})")

    def accept(self, prepared: PreparedChunk | Rejected, now: float) -> Accepted | Rejected:
        """Switch to a prepared chunk at `now`, or count a rejection (also one found before a chunk
        existed, e.g. an undecodable message: every rejection is counted here)."""
        if isinstance(prepared, Rejected):
            return self._reject(prepared)
        chunk = prepared.chunk
        # checks that depend on what happened since `prepare` (time passing, newer chunks, instructions)
        rejection = self._check_age(chunk, now)  # (a Rejected is falsy: no `or` chaining)
        if rejection is None:
            rejection = self._check_order_and_instruction(chunk, now)
        if rejection is not None:
            return self._reject(rejection)
        if prepared.times[-1] <= now:
            return self._reject(Rejected(STALE, f"all {chunk.horizon} actions elapsed before the chunk could start"))
        self._current(now)
        self._curve, self._chunk = prepared.curve, chunk
        self._newest_stamp = chunk.stamp
        skipped = int(np.count_nonzero(prepared.times <= now))
        self.counters.accepted += 1
        self.counters.skipped_actions += skipped
        return Accepted(skipped)

    # ---------------------------------------------------------------- output

    def step(self, now: float) -> Command | None:
        """The command for time `now` (call it every control tick); None until a joint state has been measured."""
        if self._state is None and self.history.latest() is None:
            return None
        start, state = self._current(now)
        source = self._source
        if now < start or now - start > self.config.max_tick_gap:
            # re-anchored one (previous) tick period before `now`, the brake then advances by a normal tick
            self._clock_jump(now - self._period)
            state, source = self._advance(now - self._period, state, now) if self._period > 0 else (state, "hold")
            self._state, self._time = state, now
        elif now > start:
            state, source = self._advance(start, state, now)
            self._state, self._time, self._period = state, now, now - start
        if source == "hold" and self._source != "hold":
            self.counters.holds += 1
        self._source = source
        self.counters.ticks[source] += 1
        return Command(now, state[0].copy(), state[1].copy(), state[2].copy(), source)

    @property
    def running_chunk(self) -> Chunk | None:
        return self._chunk

    # ---------------------------------------------------------------- internals

    def _current(self, now: float) -> tuple[float, State]:
        """The last command and its time; the first one holds the first measured position at rest."""
        if self._state is None:
            _, measured = self.history.latest()
            measured = np.clip(measured, self.limits.lower, self.limits.upper)
            self._state, self._time = (measured, np.zeros_like(measured), np.zeros_like(measured)), now
        return self._time, self._state

    def _advance(self, start: float, state: State, now: float) -> tuple[State, str]:
        """From the command at `start` to the command at `now` (start < now), and its source."""
        curve = self._curve
        if curve is not None and now >= curve.end:  # the chunk ran out
            self._curve = self._chunk = None
            curve = None
        if curve is None:  # brake to rest from where the command is, or stay there (re-planned every tick:
            # braking to rest is time-optimal towards a fixed goal, so the plan from a state on the last
            # plan is that plan; and no ruckig object outlives a tick)
            return plan_stop(start, state, self.limits).state(now), "hold"
        limits, floor = self.limits, self.config.min_correction_fraction
        error = tuple(np.subtract(state, curve.state(start)))
        # the correction's budget: what the curve leaves over, at least a floor, and at least what the
        # error already uses (a new chunk moving off at speed from a command at rest); `admits` has the
        # last word on the sum
        correction = plan_correction(
            start, error,
            np.maximum.reduce([limits.velocity - curve.peak_velocity, floor * limits.velocity,
                               np.abs(error[1]) * (1 + 1e-6)]),
            np.maximum.reduce([limits.acceleration - curve.peak_acceleration, floor * limits.acceleration,
                               np.abs(error[2]) * (1 + 1e-6)]),
            np.maximum(limits.jerk - curve.peak_jerk, floor * limits.jerk))
        if correction is not None:
            candidate = tuple(np.add(curve.state(now), correction.state(now)))
            if limits.admits(state, candidate, now - start):
                return candidate, "transition" if now < correction.end else "chunk"
        # curve + correction would leave a limit here: track the curve directly
        lookahead = self.config.lookahead
        return plan_tracking(start, state, curve.state(start + lookahead), lookahead, limits).state(now), "transition"

    def _drop_chunk(self) -> None:
        """Forget the running chunk: from the next tick on the command brakes to rest."""
        if self._chunk is not None:
            self.counters.discarded += 1
        self._curve = self._chunk = None

    def _clock_jump(self, anchor: float) -> None:
        """ROS time went back or leapt ahead: brake from the last command, re-anchored at `anchor` on
        the new time line (no step), and forget the joint states and the stamp order (they belong to
        the old time line)."""
        self.counters.clock_jumps += 1
        self._time = anchor
        self._drop_chunk()
        self._newest_stamp = -np.inf
        self.history.clear()

    def _prepare(self, chunk: Chunk, now: float) -> PreparedChunk | Rejected:
        rejection = self._validate(chunk, now)
        if rejection is not None:
            return rejection
        times = chunk.action_times()
        if chunk.action_space == JOINT_POSITION:
            order = [chunk.action_names.index(name) for name in self.joint_names]
            targets = chunk.actions[:, order]
        else:
            converted = self._ee_to_joints(chunk)
            if isinstance(converted, Rejected):
                return converted
            targets = converted
        beyond = np.maximum(self._lower - targets, targets - self._upper) - (self._upper - self._lower)
        if np.any(beyond > 0):
            joint = self.joint_names[int(np.argmax(np.max(beyond, axis=0)))]
            return Rejected(OUT_OF_RANGE, f"{joint} target lies beyond its limit by more than the joint's whole "
                                          "range: not a target to clip")
        targets = np.clip(targets, self._lower, self._upper)
        curve = ChunkCurve(times, targets, self.config.smoothing_interval, self.limits)
        if len(times) > 1:  # the raw step between actions too: smoothing must not hide garbage
            speed = np.maximum(np.max(np.abs(np.diff(targets, axis=0)) / np.diff(times)[:, None], axis=0),
                               curve.peak_velocity)
            if np.any(speed > self._speed_limit):
                joint = int(np.argmax(speed / self._speed_limit))
                return Rejected(TOO_FAST, f"{self.joint_names[joint]} would move at {speed[joint]:.2f}, above "
                                          f"{self.config.max_speed_factor} x its velocity limit")
        return PreparedChunk(chunk, times, targets, curve)


    def _reject(self, rejection: Rejected) -> Rejected:
        self.counters.rejected[rejection.reason] += 1
        self.last_rejection = rejection
        return rejection

    def _validate(self, chunk: Chunk, now: float) -> Rejected | None:
        if self.history.latest() is None:
            return Rejected(NOT_READY, "no joint state has been measured yet")
        if chunk.action_space == JOINT_POSITION:
            expected = list(self.joint_names)
            if chunk.actions.shape[1] != len(expected):
                return Rejected(WRONG_DIMENSIONS, f"joint_position chunk has {chunk.actions.shape[1]} dimensions, "
                                                  f"the robot has {len(expected)} command joints")
            if sorted(chunk.action_names) != sorted(expected):
                unknown = sorted(set(chunk.action_names) - set(expected))
                missing = sorted(set(expected) - set(chunk.action_names))
                return Rejected(WRONG_NAMES, f"joint names do not match the command joints (unknown {unknown}, "
                                             f"missing {missing})")
        elif chunk.action_space == EE_RELATIVE:
            if chunk.actions.shape[1] != aspace.WALL_OSS_DIM:
                return Rejected(WRONG_DIMENSIONS, f"{EE_RELATIVE} chunk has {chunk.actions.shape[1]} dimensions, "
                                                  f"expected {aspace.WALL_OSS_DIM}")
            if list(chunk.action_names) != aspace.wall_oss_names(relative=True):
                return Rejected(WRONG_NAMES, f"{EE_RELATIVE} chunk names are not the Wall-OSS relative action names")
        else:
            return Rejected(UNKNOWN_ACTION_SPACE, f"action space {chunk.action_space!r} is not one of "
                                                  f"{[JOINT_POSITION, EE_RELATIVE]}")
        if chunk.horizon == 0:
            return Rejected(WRONG_DIMENSIONS, "chunk has no actions")
        if not np.all(np.isfinite(chunk.actions)):
            return Rejected(NON_FINITE, "chunk contains NaN or infinite values")
        if not (np.isfinite(chunk.stamp) and np.isfinite(chunk.first_action_offset) and np.isfinite(chunk.dt)):
            return Rejected(BAD_TIMING, "chunk stamp, time step or first action offset is not finite")
        if abs(chunk.first_action_offset) > self.config.max_first_action_offset:
            limit = self.config.max_first_action_offset
            return Rejected(BAD_TIMING, f"first action offset {chunk.first_action_offset:.3g} s is outside "
                                        f"[-{limit}, {limit}] s")
        if np.any(np.diff(chunk.action_times()) <= 0):
            return Rejected(BAD_TIMING, f"action times do not increase: time step {chunk.dt:.3g} s is lost in "
                                        f"float64 at stamp {chunk.stamp:.6f}")
        if chunk.stamp > now + self.config.max_future_stamp:
            return Rejected(FUTURE_STAMP, f"observation stamp is {chunk.stamp - now:.3f} s ahead of the clock")
        rejection = self._check_age(chunk, now)
        if rejection is not None:
            return rejection
        if chunk.action_times()[-1] <= now:
            return Rejected(STALE, f"all {chunk.horizon} actions elapsed during inference")
        return self._check_order_and_instruction(chunk, now)

    def _check_age(self, chunk: Chunk, now: float) -> Rejected | None:
        if chunk.stamp < now - self.config.max_chunk_age:
            return Rejected(STALE, f"observation is {now - chunk.stamp:.3f} s old (max_chunk_age "
                                   f"{self.config.max_chunk_age} s)")
        return None

    def _check_order_and_instruction(self, chunk: Chunk, now: float) -> Rejected | None:
        if chunk.stamp <= self._newest_stamp:
            return Rejected(REORDERED, f"stamp {chunk.stamp:.6f} is not newer than the newest accepted chunk's "
                                       f"{self._newest_stamp:.6f}")
        if self.instruction == "":
            return Rejected(PAUSED, "instruction is empty (paused)")
        if self.instruction is not None and chunk.instruction != self.instruction:
            return Rejected(INSTRUCTION_MISMATCH, f"chunk was computed for {chunk.instruction!r}, the current "
                                                  f"instruction is {self.instruction!r}")
        return None

    def _ee_to_joints(self, chunk: Chunk) -> np.ndarray | Rejected:
        """Relative EE actions → joint targets: reference poses by FK of the state at the stamp, IK per
        action seeded with the previous action's solution."""
        reference = self.history.at(chunk.stamp, self.config.max_reference_gap)
        if reference is None:
            return Rejected(NO_REFERENCE_STATE, f"no joint state measured within {self.config.max_reference_gap} s "
                                                f"of the chunk stamp {chunk.stamp:.6f}")
        try:
            poses, grippers = aspace.relative_actions_to_poses(chunk.actions, self.kinematics.ee_poses(reference))
        except ValueError as error:  # degenerate 6D rotation
            return Rejected(NON_FINITE, f"chunk rotation cannot be decoded: {error}")
        targets = np.empty((chunk.horizon, len(self.joint_names)))
        solution = reference.copy()
        for k in range(chunk.horizon):
            for arm in aspace.ARMS:
                result = self.kinematics.solve_ik(arm, poses[arm][k], solution)
                if (result.position_error > self.config.ik_max_position_error
                        or result.rotation_error > self.config.ik_max_rotation_error):
                    return Rejected(IK_FAILED, f"action {k}: {arm} end-effector target unreachable (position error "
                                               f"{result.position_error * 1000:.1f} mm, rotation error "
                                               f"{result.rotation_error:.3f} rad)")
                solution = result.positions
                solution[self.kinematics.gripper_index(arm)] = grippers[arm][k]
            targets[k] = solution
        return targets
