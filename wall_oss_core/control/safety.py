"""The safety supervisor: candidate joint commands in, commands that can never hurt the robot out.

No clocks inside: every call takes the time [s] explicitly (the node passes its ROS clock), so the
behaviour is a deterministic function of the calls and the property tests replay any input sequence.

The output is ONE continuous trajectory, started at the first measured joint state and advanced by
exactly one step per `tick` (the nominal period `SafetyConfig.period`). Every step is chosen inside a
per-joint velocity interval that guarantees, by construction and for any input:

* |velocity| <= the URDF velocity limit and |Δvelocity| <= acceleration limit × period;
* the position never crosses the (margin-reduced) URDF limits: a step is only allowed if braking at
  the acceleration limit right after it still stops inside the limits (`stopping_speed`), so a fast
  joint starts slowing down before the limit instead of being clipped at it (clipping would need an
  infinite deceleration);
* each arm's tool centre point never leaves its Cartesian workspace box: a step is only allowed if the
  tool stays inside the box by at least the farthest it could still travel while every joint brakes.
  That bound is `sum_i r_i · braking_distance_i`, where r_i bounds the distance from joint i's axis to
  the tool along the kinematic chain (sum of link offsets), so one forward-kinematics call per tick
  proves the whole braking trajectory stays inside. A step that fails is replaced by the braking step,
  which keeps the guarantee (the braking trajectory of a braking step is a suffix of the previous one);
* every value is finite (non-finite candidates never become targets).

Holding is braking: on e-stop, stale inputs or a fault every joint decelerates at its acceleration
limit from the current output velocity and the hold is where that trajectory stops. The supervisor
never jumps and never sends zeros. Leaving a hold is the same rate-limited tracking as always, so a
distant candidate is approached within the limits.

Counters: `passed` / `modified` count commands sent while tracking a candidate (sent unchanged vs
limited), `rejected` counts candidates refused (malformed, non-finite, out of order, or with a tool
outside its workspace box), `estop_count` counts e-stop latches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from wall_oss_core.robot.kinematics import BimanualKinematics

# Relative shrink of every stopping speed, so floating-point rounding can never carry a braking
# trajectory past a limit it should just reach.
_STOP_SPEED_SHRINK = 1e-12
# Output and candidate count as equal (command "passed") within this distance [rad or m].
_PASSED_TOLERANCE = 1e-9


class SafetyState(IntEnum):
    """Values match wall_oss/SafetyStatus STATE_* constants."""

    OK = 0        # the candidate is sent unchanged
    LIMITING = 1  # the candidate is clamped / rate-limited, or a candidate was rejected
    HOLD = 2      # no fresh candidate: braking to / holding a stop
    ESTOP = 3     # latched e-stop: braking to / holding a stop until reset
    FAULT = 4     # joint states stale: braking to / holding a stop


@dataclass(frozen=True)
class SafetyConfig:
    """Timing of the supervisor. `period` must be the rate at which `tick` is called (the command rate)."""

    period: float = 0.005                 # [s] one output step; velocities/accelerations are per this period
    candidate_timeout: float = 0.1        # [s] no valid candidate for this long → HOLD
    joint_state_timeout: float = 0.2      # [s] no joint state for this long → FAULT
    max_extrapolation_ticks: int = 4      # farthest a candidate is carried along its velocity from its stamp [periods]
    # Deceleration planned when closing in on a target that jumped away, as a fraction of the limit.
    # Below 1 so a target that keeps moving (late, bursty candidates) is absorbed without overshoot.
    approach_deceleration_fraction: float = 0.5

    def __post_init__(self):
        for name in ("period", "candidate_timeout", "joint_state_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"safety setting {name} must be a positive number of seconds, got {value}")
        if self.candidate_timeout < self.period or self.joint_state_timeout < self.period:
            raise ValueError(f"timeouts ({self.candidate_timeout} s, {self.joint_state_timeout} s) must be at least "
                             f"one command period ({self.period} s)")
        if not (0 < self.approach_deceleration_fraction <= 1):
            raise ValueError(f"approach_deceleration_fraction must be in (0, 1], got {self.approach_deceleration_fraction}")
        if not (isinstance(self.max_extrapolation_ticks, int) and self.max_extrapolation_ticks >= 0):
            raise ValueError(f"max_extrapolation_ticks must be a non-negative integer, got {self.max_extrapolation_ticks}")


@dataclass(frozen=True)
class SafetyCounters:
    passed: int = 0
    modified: int = 0
    rejected: int = 0
    estop_count: int = 0


class Hold(NamedTuple):
    """Why the output brakes: the state it puts the supervisor in, the limit name, a readable reason."""

    state: SafetyState
    limit: str  # "estop", "watchdog:joint_state" or "watchdog:candidate"
    reason: str


@dataclass(frozen=True)
class SafetyOutput:
    """What one tick decided. `positions` is None (send nothing) until a joint state has arrived."""

    positions: np.ndarray | None
    velocities: np.ndarray | None
    state: SafetyState
    active_limits: tuple[str, ...]
    reason: str
    counters: SafetyCounters
    state_changed: bool


def braking_distance(speed: np.ndarray, speed_step: np.ndarray, period: float) -> np.ndarray:
    """Distance covered after a step at `speed` when every following step is slower by `speed_step`
    (acceleration × period) until rest: period · Σ_{j>=1} max(|speed| − j·speed_step, 0)."""
    x = np.abs(speed) / speed_step
    n = np.floor(x)
    return period * speed_step * n * (x - (n + 1.0) / 2.0)


def stopping_speed(distance: np.ndarray, speed_step: np.ndarray, period: float) -> np.ndarray:
    """Largest speed v >= 0 such that one step at v plus the braking after it covers at most
    `distance` (negative distances give 0): the exact inverse of `v·period + braking_distance(v)`,
    which is piecewise linear in v."""
    d = np.maximum(distance, 0.0) / (period * speed_step)
    n = np.floor((np.sqrt(1.0 + 8.0 * d) - 1.0) / 2.0)
    return (d / (n + 1.0) + n / 2.0) * speed_step * (1.0 - _STOP_SPEED_SHRINK)


def braking_velocity(velocity: np.ndarray, speed_step: np.ndarray) -> np.ndarray:
    """The next velocity when braking at the acceleration limit: one speed step closer to zero."""
    return np.sign(velocity) * np.maximum(np.abs(velocity) - speed_step, 0.0)


def _box_excess(point: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Signed distance of a point outside an axis-aligned box (negative inside: minus the distance to
    the nearest face). 1-Lipschitz, so a tool displacement of length L changes it by at most L."""
    return float(np.max(np.maximum(low - point, point - high)))


def chain_reach(kinematics: BimanualKinematics, arm: str) -> np.ndarray:
    """Per command joint, an upper bound of |d tool / d q_i| valid in every configuration: for a
    revolute joint the sum of link offsets from its axis to the tool frame, 1 for a prismatic joint
    upstream of the tool, 0 for joints that do not move the tool (the other arm, the fingers)."""
    model = kinematics.model
    frame = model.frames[model.getFrameId(kinematics.config.arm(arm).ee_frame)]
    chain = []
    joint = frame.parentJoint
    while joint > 0:
        chain.append(joint)
        joint = model.parents[joint]
    reach_by_joint = {}
    downstream = float(np.linalg.norm(frame.placement.translation))
    for joint in chain:  # from the tool's parent joint towards the base
        prismatic = model.joints[joint].shortname().startswith("JointModelP")
        reach_by_joint[model.names[joint]] = 1.0 if prismatic else downstream
        downstream += float(np.linalg.norm(model.jointPlacements[joint].translation))
    return np.array([reach_by_joint.get(name, 0.0) for name in kinematics.config.command_joints])


@dataclass
class _Candidate:
    time: float            # receipt time [s]
    stamp: float | None    # command time from the sender, when it has one
    positions: np.ndarray
    velocities: np.ndarray  # given by the sender, or estimated from the previous candidate


class SafetySupervisor:
    """Turns candidate commands into safe commands; see the module docstring for the guarantees."""

    def __init__(self, kinematics: BimanualKinematics, config: SafetyConfig = SafetyConfig()):
        self.kinematics = kinematics
        self.config = config
        limits = kinematics.limits
        self.names = limits.names
        self.lower, self.upper = limits.lower, limits.upper
        self.max_velocity = limits.velocity
        self.speed_step = limits.acceleration * config.period
        self._stopping_steps = np.concatenate([self.speed_step * config.approach_deceleration_fraction,
                                               self.speed_step, self.speed_step])
        self.boxes = {arm.name: arm.workspace for arm in kinematics.config.arms}
        self.arm_slices = {arm: kinematics.arm_slice(arm) for arm in self.boxes}
        self.reach = {arm: chain_reach(kinematics, arm)[self.arm_slices[arm]] for arm in self.boxes}
        # the output trajectory (None until the first joint state)
        self._position: np.ndarray | None = None
        self._velocity: np.ndarray | None = None
        self._box_budget: dict[str, float] = {}
        self._last_target: np.ndarray | None = None  # last target whose tools were inside their boxes
        # inputs
        self._joint_state_time: float | None = None
        self._candidate: _Candidate | None = None
        self._candidate_is_new = False
        self._tick_time: float | None = None  # the command-rate grid point of the current tick
        self._pending_rejection: str | None = None
        self._estop_latched = False
        self._estop_input = False
        self._estop_source = ""
        self._estop_time = 0.0
        self._counters = SafetyCounters()
        self._state = SafetyState.HOLD

    # ----------------------------------------------------------------------------------------- inputs
    def on_joint_state(self, t: float, positions) -> None:
        """A measured joint state (command-joint order). The first one starts the output trajectory
        at rest there; later ones only keep the joint-state watchdog fed. ValueError if malformed."""
        positions = np.asarray(positions, dtype=float)
        if positions.shape != self.lower.shape:
            raise ValueError(f"joint state has {positions.size} positions, expected {self.lower.size}")
        if not np.all(np.isfinite(positions)):
            raise ValueError("joint state has non-finite positions")
        self._joint_state_time = t
        if self._position is None:
            self._position = positions.copy()
            self._velocity = np.zeros_like(positions)
            poses = self.kinematics.ee_poses(positions)
            self._box_budget = {arm: max(0.0, _box_excess(poses[arm][:3, 3], box.min, box.max))
                                for arm, box in self.boxes.items()}

    def on_candidate(self, t: float, positions, velocities=None, stamp: float | None = None) -> str | None:
        """A candidate command (command-joint order). Returns None if taken, else the reason it was
        rejected (counted). Without velocities, they are estimated from the previous candidate."""
        positions = np.asarray(positions, dtype=float)
        if positions.shape != self.lower.shape:
            return self.reject_candidate(f"candidate has {positions.size} positions, expected {self.lower.size}")
        if not np.all(np.isfinite(positions)):
            return self.reject_candidate("candidate has non-finite positions")
        if velocities is not None:
            velocities = np.asarray(velocities, dtype=float)
            if velocities.shape != positions.shape:
                return self.reject_candidate(f"candidate has {velocities.size} velocities for {positions.size} positions")
            if not np.all(np.isfinite(velocities)):
                return self.reject_candidate("candidate has non-finite velocities")
        if stamp is not None:
            if not math.isfinite(stamp):
                return self.reject_candidate("candidate stamp is not finite")
            previous = self._candidate
            if previous is not None and previous.stamp is not None and stamp <= previous.stamp:
                return self.reject_candidate(f"candidate stamp {stamp:.6f} is not newer than {previous.stamp:.6f}")
        if velocities is None:
            velocities = self._estimate_velocity(t, stamp, positions)
        self._candidate = _Candidate(t, stamp, positions.copy(),
                                     np.clip(velocities, -self.max_velocity, self.max_velocity))
        self._candidate_is_new = True
        return None

    def reject_candidate(self, reason: str) -> str:
        """Count a candidate refused before or inside the supervisor (e.g. a message the node could
        not convert); the next tick reports it."""
        self._counters = replace(self._counters, rejected=self._counters.rejected + 1)
        self._pending_rejection = reason
        return reason

    def set_estop_input(self, t: float, asserted: bool) -> bool:
        """The e-stop input (topic). Asserting it latches the e-stop; releasing it only allows a
        reset. Returns True when this call latched the e-stop."""
        self._estop_input = bool(asserted)
        return self._estop_input and self._latch(t, "e-stop topic")

    def trigger_estop(self, t: float, source: str = "trigger_estop service") -> bool:
        """Latch the e-stop (service); returns True if it was not latched already."""
        return self._latch(t, source)

    def reset_estop(self, now: float) -> tuple[bool, str]:
        """Clear a latched e-stop; refused while the e-stop input is asserted or inputs are stale."""
        if not self._estop_latched:
            return True, "e-stop was not latched"
        problems = ["e-stop input is still asserted (release it first)"] if self._estop_input else []
        stale = self._stale_inputs(now)
        if stale:
            problems.append(f"inputs are stale ({stale})")
        if problems:
            return False, "reset refused: " + "; ".join(problems)
        self._estop_latched = False
        return True, "e-stop reset; following candidates again"

    def _latch(self, t: float, source: str) -> bool:
        if self._estop_latched:
            return False
        self._estop_latched = True
        self._estop_source = source
        self._estop_time = t
        self._counters = replace(self._counters, estop_count=self._counters.estop_count + 1)
        return True

    def _estimate_velocity(self, t: float, stamp: float | None, positions: np.ndarray) -> np.ndarray:
        previous = self._candidate
        if previous is not None:
            same_clock = (stamp is None) == (previous.stamp is None)
            elapsed = (stamp - previous.stamp) if stamp is not None and same_clock else t - previous.time
            if same_clock and 0 < elapsed <= self.config.candidate_timeout:
                return (positions - previous.positions) / elapsed
        return np.zeros_like(positions)

    # ----------------------------------------------------------------------------------------- status
    @property
    def estop_latched(self) -> bool:
        return self._estop_latched

    @property
    def counters(self) -> SafetyCounters:
        return self._counters

    @property
    def output(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Position and velocity of the last output (the initial joint state at rest before any tick)."""
        if self._position is None:
            return None
        return self._position.copy(), self._velocity.copy()

    def input_ages(self, now: float) -> tuple[float | None, float | None]:
        """Seconds since the last joint state and the last valid candidate (None: never)."""
        return (None if self._joint_state_time is None else now - self._joint_state_time,
                None if self._candidate is None else now - self._candidate.time)

    def _stale_inputs(self, now: float) -> str:
        joint_age, candidate_age = self.input_ages(now)
        problems = []
        if joint_age is None:
            problems.append("no joint state received")
        elif joint_age > self.config.joint_state_timeout:
            problems.append(f"last joint state {joint_age:.3f} s ago, timeout {self.config.joint_state_timeout} s")
        if candidate_age is None:
            problems.append("no candidate command received")
        elif candidate_age > self.config.candidate_timeout:
            problems.append(f"last candidate {candidate_age:.3f} s ago, timeout {self.config.candidate_timeout} s")
        return "; ".join(problems)

    def hold_reason(self, now: float) -> Hold | None:
        """Why the output must brake right now (e-stop, stale joint states, stale candidates), or None
        when it may track. The node uses it to publish a state change before the next tick."""
        if self._estop_latched:
            asserted = " (input still asserted)" if self._estop_input else ""
            return Hold(SafetyState.ESTOP, "estop", f"e-stop latched by {self._estop_source} "
                        f"{now - self._estop_time:.1f} s ago{asserted}; call reset_estop")
        joint_age, candidate_age = self.input_ages(now)
        if joint_age is None:
            return Hold(SafetyState.HOLD, "watchdog:joint_state", "waiting for the first joint state")
        if joint_age > self.config.joint_state_timeout:
            return Hold(SafetyState.FAULT, "watchdog:joint_state", f"joint states stale: last {joint_age:.3f} s ago "
                        f"(timeout {self.config.joint_state_timeout} s)")
        if candidate_age is None:
            return Hold(SafetyState.HOLD, "watchdog:candidate", "waiting for the first candidate command")
        if candidate_age > self.config.candidate_timeout:
            return Hold(SafetyState.HOLD, "watchdog:candidate", f"no candidate command for {candidate_age:.3f} s "
                        f"(timeout {self.config.candidate_timeout} s)")
        return None

    # ----------------------------------------------------------------------------------------- ticking
    def tick(self, now: float) -> SafetyOutput:
        """Advance the output trajectory by one period and say why it looks the way it does."""
        rejection, self._pending_rejection = self._pending_rejection, None
        self._advance_tick_time(now)
        hold = self.hold_reason(now)
        if self._position is None:
            return self._finish(None, None, hold.state, hold.reason, (hold.limit,))
        limits: list[str] = []
        if hold is not None:
            state, reason = hold.state, hold.reason
            limits.append(hold.limit)
            velocity = braking_velocity(self._velocity, self.speed_step)
            self._last_target = None  # after the hold, an arm whose candidate leaves its box stays where it stopped
        else:
            target, feedforward = self._target(limits)
            velocity = self._tracking_velocity(target, feedforward, limits)
            counted = "passed" if not limits else "modified"
            self._counters = replace(self._counters, **{counted: getattr(self._counters, counted) + 1})
            if rejection is not None:
                limits.append("rejected:candidate")
            state = SafetyState.OK if not limits else SafetyState.LIMITING
            reason = "" if not limits else ("rejected candidate: " + rejection if rejection is not None
                                            else "limited by " + ", ".join(limits))
        self._position = self._position + velocity * self.config.period
        self._velocity = velocity
        return self._finish(self._position.copy(), velocity.copy(), state, reason, tuple(limits))

    def _finish(self, positions, velocities, state: SafetyState, reason: str, limits: tuple[str, ...]) -> SafetyOutput:
        changed = state != self._state
        self._state = state
        return SafetyOutput(positions, velocities, state, limits, reason, self._counters, changed)

    def _advance_tick_time(self, now: float) -> None:
        """Keep tick times on the command-rate grid. Candidates are evaluated at these grid points
        (along their own velocity, from their stamps), so jitter of the timer or of the candidate
        stream never turns into apparent acceleration. A skipped tick advances the grid by whole
        periods; a stall or clock jump restarts it at `now`."""
        period = self.config.period
        if self._tick_time is not None:
            grid = self._tick_time + period * max(1, round((now - self._tick_time) / period))
            if abs(now - grid) <= period:
                self._tick_time = grid
                return
        self._tick_time = now

    def _target(self, limits: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The latest candidate evaluated at this tick's grid time along its velocity (at most
        `max_extrapolation_ticks` periods away from its stamp), clamped to the position limits; an arm whose tool would leave its box keeps its last in-box target (and the
        candidate counts as rejected). Returns the target and the velocity to match there."""
        candidate = self._candidate
        reach = self.config.max_extrapolation_ticks * self.config.period
        age = self._tick_time - (candidate.time if candidate.stamp is None else candidate.stamp)
        raw = candidate.positions + candidate.velocities * min(max(age, -reach), reach)
        target = np.clip(raw, self.lower, self.upper)
        limits.extend(f"position:{self.names[i]}" for i in np.flatnonzero(target != raw))
        poses = self.kinematics.ee_poses(target)
        fallback = self._last_target if self._last_target is not None else self._position
        outside = [arm for arm, box in self.boxes.items() if not box.contains(poses[arm][:3, 3])]
        for arm in outside:
            target[self.arm_slices[arm]] = fallback[self.arm_slices[arm]]
            limits.append(f"workspace:{arm}")
        if outside and self._candidate_is_new:  # reported this tick through the workspace limits
            self._counters = replace(self._counters, rejected=self._counters.rejected + 1)
        self._candidate_is_new = False
        self._last_target = target.copy()
        # beyond the extrapolation reach the target stands still: there is no velocity to match
        return target, np.where((target == raw) & (abs(age) <= reach), candidate.velocities, 0.0)

    def _tracking_velocity(self, target: np.ndarray, feedforward: np.ndarray, limits: list[str]) -> np.ndarray:
        """The velocity of this step: towards the target (matching its velocity, braking so as to stop
        on it without overshoot), inside the per-joint interval that keeps every guarantee."""
        period, step = self.config.period, self.speed_step
        position, velocity = self._position, self._velocity
        gap = target - position - feedforward * period
        # one call for the three stopping speeds: to the target, to the upper and to the lower limit
        to_target, to_upper, to_lower = stopping_speed(
            np.concatenate([np.abs(gap), self.upper - position, position - self.lower]), self._stopping_steps,
            period).reshape(3, -1)
        desired = feedforward + np.sign(gap) * to_target

        bounds_high = np.array([self.max_velocity, velocity + step, to_upper])
        bounds_low = np.array([-self.max_velocity, velocity - step, -to_lower])
        high, low = bounds_high.min(axis=0), bounds_low.max(axis=0)
        brake = braking_velocity(velocity, step)
        empty = low > high  # only by rounding when a braking trajectory is exactly at a limit
        high, low = np.where(empty, brake, high), np.where(empty, brake, low)
        chosen = np.clip(desired, low, high)

        kinds = ("velocity", "acceleration", "position")
        for i in np.flatnonzero(np.abs(position + chosen * period - target) > _PASSED_TOLERANCE):
            if desired[i] > high[i]:
                kind = kinds[bounds_high[:, i].argmin()]
            elif desired[i] < low[i]:
                kind = kinds[bounds_low[:, i].argmax()]
            else:
                kind = "acceleration"  # braking at the limit so as to stop on a target that jumped away
            limits.append(f"{kind}:{self.names[i]}")
        return self._keep_tools_in_boxes(chosen, (np.clip(velocity, low, high), brake), limits)

    def _keep_tools_in_boxes(self, velocity: np.ndarray, fallbacks: tuple[np.ndarray, np.ndarray],
                             limits: list[str]) -> np.ndarray:
        """Check each arm's step: after it and a full braking, the tool must not be outside its box by
        more than it already is (0 once inside). An arm that fails first tries keeping its current
        velocity (no chatter between accelerating and braking along a face), then brakes, which
        always passes (its braking trajectory is a suffix of the previous one)."""
        keep, brake = fallbacks
        pending = list(self.boxes)
        for attempt in range(2):
            poses = self.kinematics.ee_poses(self._position + velocity * self.config.period)
            failed = []
            for arm in pending:
                joints = self.arm_slices[arm]
                travel = braking_distance(velocity[joints], self.speed_step[joints], self.config.period)
                box = self.boxes[arm]
                excess = _box_excess(poses[arm][:3, 3], box.min, box.max) + float(self.reach[arm] @ travel)
                if excess <= self._box_budget[arm]:
                    self._box_budget[arm] = max(0.0, excess)
                else:
                    failed.append(arm)
                    velocity[joints] = (keep if attempt == 0 else brake)[joints]
                    if f"workspace:{arm}" not in limits:
                        limits.append(f"workspace:{arm}")
            if not failed:
                break
            pending = failed
        return velocity
