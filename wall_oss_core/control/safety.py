"""The safety supervisor: candidate joint commands in, commands that can never hurt the robot out.

No clocks inside: every call takes the time [s] of a steady (monotonic) clock as an argument, so the
behaviour is a deterministic function of the calls and the tests replay any timing — late, early,
bursty ticks and clock jumps. The ROS clock is only compared with it (`tick(now, ros_now)`): a ROS
clock that steps back or far forward is a FAULT, never a reason to blind a watchdog.

The output is ONE continuous trajectory in position, velocity and acceleration, started at the
measured joint state. Each `tick` advances it by the measured time since the previous tick, clamped to
one period (a late tick never moves more than one period's worth; ticks closer than
`min_tick_interval` resend the last command: no motion in no time). Every piece is a jerk-limited
ruckig trajectory, so on the tick times the commands keep |velocity|, |acceleration| and |jerk| within
the (speed-scaled) limits whatever the tick timing. A piece is only taken if the time-optimal,
jerk-limited stop right after it

* stays inside the (margin-reduced) URDF position limits (a joint that starts outside only moves inward);
* keeps each arm's tool inside its workspace box: the tool position plus `sum_i r_i · excursion_i`,
  where r_i bounds the distance from joint i's axis to the tool (`chain_reach`) and excursion_i is
  joint i's farthest excursion while braking, so one forward-kinematics call proves the whole stop;
* keeps every link at least `collision_margin` away from the other arm, its own arm and the table
  during the whole stop (`wall_oss_core.control.collision`);

otherwise that arm (or gripper) continues the stop it was already proven to have (a suffix of the
previous stop). Holding is that stop (stop category 2, jerk-limited; an e-stop may use category 1,
acceleration-limited, or 0, freeze the command). It never jumps and never sends zeros.

The measured robot is in the loop: the output starts at the measured state; a command that differs
from the measured position by more than the following-error limit is a FAULT that holds where the
arm *is*; joint states that move faster than the limits allow are a FAULT; and after any hold, fault
or e-stop the output restarts from the measured state once at standstill, on a fresh candidate.

Candidates beyond a position limit by more than a tolerance are rejected, not saturated. The e-stop
latches (optionally persisted in a file, so a restarted supervisor comes up latched), optionally
needs a heartbeat, and is reset only at standstill with its input released; motion then resumes on
the next candidate, never by itself.

Counters: `passed` / `modified` count commands sent while tracking a candidate (the candidate
reached vs limited), `rejected` counts candidates refused, `estop_count` e-stop latches, `faults`
FAULT events, `restarts` restarts of the output at the measured state.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ruckig import ControlInterface, InputParameter, Result, Ruckig, RuckigError, Synchronization, Trajectory

from wall_oss_core.control.collision import CollisionChecker
from wall_oss_core.robot.config import WorkspaceBox
from wall_oss_core.robot.kinematics import BimanualKinematics

# Output and target count as equal (candidate "passed") within this distance [rad or m].
_PASSED_TOLERANCE = 1e-9
# Slack for the floating-point rounding of ruckig's stops when checking them against position limits.
_ROUNDING = 1e-9
_RUCKIG_OK = (Result.Working, Result.Finished)
# Configurations sampled along a stop whose collision clearance the cheap bound cannot prove.
_COLLISION_SAMPLES = 6


class SafetyState(IntEnum):
    """Values match wall_oss/SafetyStatus STATE_* constants."""

    OK = 0        # the candidate is sent unchanged
    LIMITING = 1  # the candidate is limited, or a candidate was rejected
    HOLD = 2      # no fresh candidate: braking to / holding a stop
    ESTOP = 3     # latched e-stop: braking to / holding a stop until reset
    FAULT = 4     # stale or implausible joint states, following error, clock jump, two candidate sources


@dataclass(frozen=True)
class SafetyConfig:
    """Timing and limits of the supervisor beyond the URDF. `period` is the nominal command period."""

    period: float = 0.005                 # [s] a tick never advances the output by more than this
    candidate_timeout: float = 0.1        # [s] no valid candidate for this long → HOLD
    joint_state_timeout: float = 0.2      # [s] no joint state for this long → FAULT
    max_extrapolation_ticks: int = 4      # farthest a candidate is carried along its velocity from its stamp [periods]
    min_tick_interval: float = 1e-4       # [s] a tick sooner than this after the last one resends the last command
    # jerk limits (also while braking); None: the robot config's max_jerk, which the executor plans with too
    jerk_revolute: float | None = None    # [rad/s^3] arm joints
    jerk_gripper: float | None = None     # [m/s^3] gripper joints
    following_error_revolute: float = 0.2  # [rad] |command − measured| beyond this → FAULT, hold where the arm is
    # A gripper closing on an object is blocked by design, so its following error is not a fault by default.
    following_error_gripper: float = math.inf
    implausible_speed_factor: float = 1.5  # joint states faster than this × the velocity limit → FAULT
    joint_state_jitter: float = 0.02      # [s] receipt-time slack when judging that speed
    limit_tolerance_revolute: float = 0.05  # [rad] candidates beyond a position limit by more are rejected
    limit_tolerance_gripper: float = 0.005  # [m]
    clock_jump_tolerance: float = 0.1     # [s] ROS time going back, or ahead of steady time, by more per tick → FAULT
    fault_hold_time: float = 1.0          # [s] a FAULT holds at least this long; motion resumes on a fresh candidate
    heartbeat_timeout: float = 0.0        # [s] e-stop heartbeat; none for this long latches the e-stop (0: no heartbeat)
    stop_category: int = 2                # e-stop: 2 jerk-limited stop, 1 acceleration-limited stop, 0 freeze the command
    speed_scale: float = 1.0              # dry run < 1: scales velocity / acceleration / jerk limits, shrinks
    #                                       the workspace boxes and disables the grippers
    dry_run_workspace_margin: float = 0.05  # [m] in a dry run every face of a workspace box moves inward by this
    check_collisions: bool = True         # every link against the other arm, its own arm and the table
    collision_margin: float = 0.01        # [m] clearance kept after the stop that follows every command
    table_height: float = 0.0             # [m] table top (z in the base frame): a half-space below it

    def __post_init__(self):
        positive = ("period", "candidate_timeout", "joint_state_timeout", "following_error_revolute", "following_error_gripper", "implausible_speed_factor",
                    "clock_jump_tolerance")
        for name in ("jerk_revolute", "jerk_gripper"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"safety setting {name} must be a positive number, got {value}")
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and not math.isnan(value)) or (math.isinf(value) and not name.startswith("following")):
                raise ValueError(f"safety setting {name} must be a positive number, got {value}")
        for name in ("min_tick_interval", "joint_state_jitter", "limit_tolerance_revolute",
                     "limit_tolerance_gripper", "fault_hold_time", "heartbeat_timeout", "dry_run_workspace_margin",
                     "collision_margin"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"safety setting {name} must be a non-negative number, got {value}")
        if self.candidate_timeout < self.period or self.joint_state_timeout < self.period:
            raise ValueError(f"timeouts ({self.candidate_timeout} s, {self.joint_state_timeout} s) must be at least "
                             f"one command period ({self.period} s)")
        if self.min_tick_interval >= self.period:
            raise ValueError(f"min_tick_interval ({self.min_tick_interval} s) must be below the period ({self.period} s)")
        if not (isinstance(self.max_extrapolation_ticks, int) and self.max_extrapolation_ticks >= 0):
            raise ValueError(f"max_extrapolation_ticks must be a non-negative integer, got {self.max_extrapolation_ticks}")
        if self.stop_category not in (0, 1, 2):
            raise ValueError(f"stop_category must be 0, 1 or 2, got {self.stop_category}")
        if not (0 < self.speed_scale <= 1):
            raise ValueError(f"speed_scale must be in (0, 1], got {self.speed_scale}")


@dataclass(frozen=True)
class SafetyCounters:
    passed: int = 0
    modified: int = 0
    rejected: int = 0
    estop_count: int = 0
    faults: int = 0
    restarts: int = 0  # the output restarted at rest at the measured position (after a hold, a fault, an e-stop)


class Hold(NamedTuple):
    """Why the output brakes: the state it puts the supervisor in, the limit name, a readable reason."""

    state: SafetyState
    limit: str  # "estop", "watchdog:joint_state", "watchdog:candidate", "fault", "braking"
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


class EstopLatchFile:
    """The e-stop latch on disk, so a supervisor restarted while latched comes up latched. Only a reset
    writes "released"; anything else (missing file, unreadable, "latched") reads as latched (fail-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> bool:
        try:
            return self.path.read_text().strip() != "released"
        except OSError:
            return True

    def save(self, latched: bool) -> None:
        """Write atomically (temporary file + rename) and flush to disk. OSError if it cannot."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w") as handle:
            handle.write("latched\n" if latched else "released\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


def shrink_box(box: WorkspaceBox, margin: float) -> WorkspaceBox:
    """The box with every face moved inward by `margin` (at most to its centre)."""
    margin = np.minimum(margin, (box.max - box.min) / 2)
    return WorkspaceBox(box.min + margin, box.max - margin)


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


class _Stop:
    """A stop trajectory from `origin` (None: at rest there) and how far along it the output is.
    The trajectory is planned relative to the origin: ruckig's position extrema of a velocity-control
    trajectory also count position 0, which is then the start, an extremum candidate anyway."""

    def __init__(self, trajectory: Trajectory | None, origin: np.ndarray):
        self.trajectory = trajectory
        self.origin = origin
        self.elapsed = 0.0

    def state_at(self, elapsed: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.trajectory is None:
            return self.origin.copy(), np.zeros_like(self.origin), np.zeros_like(self.origin)
        if elapsed >= self.trajectory.duration:
            offset = np.array(self.trajectory.at_time(self.trajectory.duration)[0])
            return self.origin + offset, np.zeros_like(self.origin), np.zeros_like(self.origin)
        p, v, a = self.trajectory.at_time(elapsed)
        return self.origin + np.array(p), np.array(v), np.array(a)

    def excursions(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest position of each joint along the stop."""
        if self.trajectory is None:
            return self.origin, self.origin
        extrema = self.trajectory.position_extrema
        return (self.origin + np.array([e.min for e in extrema]),
                self.origin + np.array([e.max for e in extrema]))

    @property
    def finished(self) -> bool:
        return self.trajectory is None or self.elapsed >= self.trajectory.duration


@dataclass
class _Candidate:
    time: float             # receipt time [s, steady clock]
    reference: float        # the time its positions are for [s, steady clock]: its stamp, else its receipt
    stamp: float | None     # stamp from the sender [s, ROS clock], for ordering
    positions: np.ndarray
    velocities: np.ndarray  # given by the sender, or estimated from the previous candidate
    accelerations: np.ndarray  # estimated from the previous candidate's velocities


class SafetySupervisor:
    """Turns candidate commands into safe commands; see the module docstring for the guarantees."""

    def __init__(self, kinematics: BimanualKinematics, config: SafetyConfig = SafetyConfig(),
                 latch_file: EstopLatchFile | None = None):
        self.kinematics = kinematics
        self.config = config
        limits = kinematics.limits
        self.names = limits.names
        self.lower, self.upper = limits.lower, limits.upper
        gripper = np.isin(np.array(self.names), np.array(kinematics.config.gripper_joints))
        self.gripper_mask = gripper
        scale = config.speed_scale
        self.max_velocity = limits.velocity * scale
        self.max_acceleration = limits.acceleration * scale
        robot = kinematics.config
        jerk_gripper = robot.max_jerk_gripper if config.jerk_gripper is None else config.jerk_gripper
        jerk_revolute = robot.max_jerk_revolute if config.jerk_revolute is None else config.jerk_revolute
        self.max_jerk = np.where(gripper, jerk_gripper, jerk_revolute) * scale
        self.following_limit = np.where(gripper, config.following_error_gripper, config.following_error_revolute)
        self.limit_tolerance = np.where(gripper, config.limit_tolerance_gripper, config.limit_tolerance_revolute)
        margin = 0.0 if scale == 1.0 else config.dry_run_workspace_margin
        self.boxes = {arm.name: shrink_box(arm.workspace, margin) for arm in kinematics.config.arms}
        self.arm_slices = {arm: kinematics.arm_slice(arm) for arm in self.boxes}
        self.reach = {arm: chain_reach(kinematics, arm)[self.arm_slices[arm]] for arm in self.boxes}
        # groups that brake together when a check fails: each arm (its tool), each gripper on its own
        self._groups = [(f"workspace:{arm}", np.arange(len(self.names))[s]) for arm, s in self.arm_slices.items()]
        self._groups += [(f"position:{self.names[i]}", np.array([i])) for i in np.flatnonzero(gripper)]

        self.collisions = CollisionChecker(kinematics, config.collision_margin, config.table_height) \
            if config.check_collisions else None
        self._collision_budget = np.zeros(0)  # per pair, how far inside the margin it may be (it started there)
        n = len(self.names)
        self._ruckig = Ruckig(n)
        self._track_input = self._input(n, ControlInterface.Position, Synchronization.Time)
        self._stop_input = self._input(n, ControlInterface.Velocity, Synchronization.No)
        self._stop_input.target_velocity = np.zeros(n)
        self._stop_input.target_acceleration = np.zeros(n)

        # the output trajectory (None until the first joint state)
        self._position: np.ndarray | None = None
        self._velocity: np.ndarray | None = None
        self._acceleration: np.ndarray | None = None
        self._stop: _Stop | None = None  # the proven stop from the current output state
        self._box_budget: dict[str, float] = {}
        self._last_target: np.ndarray | None = None  # last target whose tools were inside their boxes
        self._holding = True
        self._last_tick: float | None = None
        self._clock: tuple[float, float] | None = None  # (steady, ROS) time of the last tick
        self._ros_offset = 0.0                          # ROS time − steady time
        # inputs
        self._measured: np.ndarray | None = None
        self._measured_plausible = True
        self._joint_state_time: float | None = None
        self._candidate: _Candidate | None = None
        self._candidate_is_new = False
        self._candidate_publishers = 1
        self._pending_rejection: str | None = None
        self._fault: tuple[float, str] | None = None
        self._heartbeat_time: float | None = None
        self._heartbeat_start: float | None = None
        self._counters = SafetyCounters()
        self._state = SafetyState.HOLD
        # the e-stop latch, restored from its file: a supervisor restarted while latched comes up latched
        self._latch_file = latch_file
        self._estop_input = False
        self._estop_latched = latch_file is not None and latch_file.load()
        self._estop_source = "the latch file (latched before this start)" if self._estop_latched else ""
        self._estop_time: float | None = None

    def _input(self, n: int, interface: ControlInterface, synchronization: Synchronization) -> InputParameter:
        parameters = InputParameter(n)
        parameters.control_interface = interface
        parameters.synchronization = synchronization
        parameters.max_velocity = self.max_velocity
        parameters.max_acceleration = self.max_acceleration
        parameters.max_jerk = self.max_jerk
        return parameters

    # ----------------------------------------------------------------------------------------- inputs
    def on_joint_state(self, t: float, positions) -> None:
        """A measured joint state (command-joint order) received at steady time t. The first one starts
        the output trajectory at rest there. One that moved faster than the limits allow is a FAULT.
        ValueError if malformed."""
        positions = np.asarray(positions, dtype=float)
        if positions.shape != self.lower.shape:
            raise ValueError(f"joint state has {positions.size} positions, expected {self.lower.size}")
        if not np.all(np.isfinite(positions)):
            raise ValueError("joint state has non-finite positions")
        if self._measured is not None:
            elapsed = max(t - self._joint_state_time, 0.0) + self.config.joint_state_jitter
            allowed = self.config.implausible_speed_factor * self.kinematics.limits.velocity * elapsed + 1e-6
            jumped = np.flatnonzero(np.abs(positions - self._measured) > allowed)
            # an implausible state is not trusted (neither held at nor compared with) until the next
            # one confirms it
            self._measured_plausible = not jumped.size
            if jumped.size:
                i = jumped[0]
                self._raise_fault(t, f"implausible joint state: {self.names[i]} moved "
                                     f"{positions[i] - self._measured[i]:+.4f} in {t - self._joint_state_time:.4f} s")
        self._measured = positions.copy()
        self._joint_state_time = t
        if self._position is None:
            self._restart_from_measured()
            self._last_tick = t

    def on_candidate(self, t: float, positions, velocities=None, stamp: float | None = None) -> str | None:
        """A candidate command (command-joint order) received at steady time t, stamped in ROS time
        (or not). Returns None if taken, else the reason it was rejected (counted). Without
        velocities, they are estimated from the previous candidate."""
        positions = np.asarray(positions, dtype=float)
        if positions.shape != self.lower.shape:
            return self.reject_candidate(f"candidate has {positions.size} positions, expected {self.lower.size}")
        if not np.all(np.isfinite(positions)):
            return self.reject_candidate("candidate has non-finite positions")
        beyond = np.flatnonzero((positions < self.lower - self.limit_tolerance)
                                | (positions > self.upper + self.limit_tolerance))
        if beyond.size:
            i = beyond[0]
            return self.reject_candidate(f"candidate {self.names[i]} = {positions[i]:.4f} is beyond its limits "
                                         f"[{self.lower[i]:.4f}, {self.upper[i]:.4f}] by more than "
                                         f"{self.limit_tolerance[i]:g}")
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
        positions = np.clip(positions, self.lower, self.upper)  # only within the tolerance, by the check above
        reference = t if stamp is None else stamp - self._ros_offset
        if velocities is None:
            velocities = self._rate(reference, positions, lambda c: c.positions)
        velocities = np.clip(velocities, -self.max_velocity, self.max_velocity)
        accelerations = np.clip(self._rate(reference, velocities, lambda c: c.velocities),
                                -self.max_acceleration, self.max_acceleration)
        self._candidate = _Candidate(t, reference, stamp, positions, velocities, accelerations)
        self._candidate_is_new = True
        return None

    def _rate(self, reference: float, values: np.ndarray, of) -> np.ndarray:
        """Rate of change of `of(candidate)` since the previous candidate (0 if none or too old)."""
        previous = self._candidate
        if previous is not None:
            elapsed = reference - previous.reference
            if 0 < elapsed <= self.config.candidate_timeout:
                return (values - of(previous)) / elapsed
        return np.zeros_like(values)

    def reject_candidate(self, reason: str) -> str:
        """Count a candidate refused before or inside the supervisor (e.g. a message the node could
        not convert); the next tick reports it."""
        self._counters = replace(self._counters, rejected=self._counters.rejected + 1)
        self._pending_rejection = reason
        return reason

    def set_candidate_publishers(self, t: float, count: int) -> None:
        """How many publishers the candidate topic has. More than one is a FAULT (commands from two
        sources would interleave); when it is one again, motion resumes on a fresh candidate."""
        if count > 1 and self._candidate_publishers <= 1:
            self._raise_fault(t, f"{count} publishers on the candidate topic (exactly one allowed)")
        if count <= 1 and self._candidate_publishers > 1:
            self._candidate = None
        self._candidate_publishers = count

    def on_heartbeat(self, t: float) -> None:
        """The e-stop device is alive (only used when `heartbeat_timeout` > 0)."""
        self._heartbeat_time = t

    def set_estop_input(self, t: float, asserted: bool) -> bool:
        """The e-stop input (topic). Asserting it latches the e-stop; releasing it only allows a
        reset. Returns True when this call latched the e-stop."""
        self._estop_input = bool(asserted)
        return self._estop_input and self._latch(t, "e-stop topic")

    def trigger_estop(self, t: float, source: str = "trigger_estop service") -> bool:
        """Latch the e-stop (service); returns True if it was not latched already."""
        return self._latch(t, source)

    def reset_estop(self, now: float) -> tuple[bool, str]:
        """Clear a latched e-stop: only with the input released, a live heartbeat, fresh joint states
        and the arm at standstill. Motion resumes on the next candidate, never by itself."""
        if not self._estop_latched:
            return True, "e-stop was not latched"
        problems = ["e-stop input is still asserted (release it first)"] if self._estop_input else []
        heartbeat = self._heartbeat_problem(now)
        if heartbeat:
            problems.append(heartbeat)
        joint_age = self.input_ages(now)[0]
        if joint_age is None or joint_age > self.config.joint_state_timeout:
            problems.append("inputs are stale (" + ("no joint state received" if joint_age is None else
                            f"last joint state {joint_age:.3f} s ago, timeout {self.config.joint_state_timeout} s") + ")")
        if self._stop is not None and not self._stop.finished:
            problems.append("the arm is still braking (reset at standstill)")
        if not problems and self._latch_file is not None:
            try:
                self._latch_file.save(False)
            except OSError as error:
                problems.append(f"cannot record the reset in {self._latch_file.path}: {error}")
        if problems:
            return False, "reset refused: " + "; ".join(problems)
        self._estop_latched = False
        self._candidate = None
        return True, "e-stop reset; motion resumes on the next candidate command"

    def _latch(self, t: float, source: str) -> bool:
        if self._estop_latched:
            return False
        self._estop_latched = True
        self._estop_source = source
        self._estop_time = t
        self._counters = replace(self._counters, estop_count=self._counters.estop_count + 1)
        if self._latch_file is not None:
            try:
                self._latch_file.save(True)
            except OSError as error:
                self._estop_source += f" (could not persist the latch: {error})"
        if self._position is not None and self.config.stop_category != 2:
            self._stop = self._brake(self._position, self._velocity, self._acceleration,
                                     freeze=self.config.stop_category == 0, unlimited_jerk=True)
        return True

    def _raise_fault(self, t: float, reason: str) -> None:
        """A FAULT: hold for at least `fault_hold_time`, then resume only on a fresh candidate."""
        self._fault = (t, reason)
        self._candidate = None
        self._counters = replace(self._counters, faults=self._counters.faults + 1)

    # ----------------------------------------------------------------------------------------- status
    @property
    def estop_latched(self) -> bool:
        return self._estop_latched

    @property
    def counters(self) -> SafetyCounters:
        return self._counters

    @property
    def candidate_publishers(self) -> int:
        return self._candidate_publishers

    @property
    def output(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Position, velocity and acceleration of the last output (None before the first joint state)."""
        if self._position is None:
            return None
        return self._position.copy(), self._velocity.copy(), self._acceleration.copy()

    def input_ages(self, now: float) -> tuple[float | None, float | None]:
        """Seconds since the last joint state and the last valid candidate (None: never)."""
        return (None if self._joint_state_time is None else now - self._joint_state_time,
                None if self._candidate is None else now - self._candidate.time)

    def _heartbeat_problem(self, now: float) -> str:
        timeout = self.config.heartbeat_timeout
        if timeout <= 0:
            return ""
        if self._heartbeat_time is None:
            return "no e-stop heartbeat received"
        age = now - self._heartbeat_time
        return f"last e-stop heartbeat {age:.3f} s ago (timeout {timeout} s)" if age > timeout else ""

    def hold_reason(self, now: float) -> Hold | None:
        """Why the output must brake right now, or None when it may track."""
        if self._estop_latched:
            asserted = " (input still asserted)" if self._estop_input else ""
            since = "" if self._estop_time is None else f" {now - self._estop_time:.1f} s ago"
            return Hold(SafetyState.ESTOP, "estop", f"e-stop latched by {self._estop_source}{since}{asserted}; "
                        "call reset_estop at standstill")
        joint_age, candidate_age = self.input_ages(now)
        if joint_age is None:
            return Hold(SafetyState.HOLD, "watchdog:joint_state", "waiting for the first joint state")
        if joint_age > self.config.joint_state_timeout:
            return Hold(SafetyState.FAULT, "watchdog:joint_state", f"joint states stale: last {joint_age:.3f} s ago "
                        f"(timeout {self.config.joint_state_timeout} s)")
        if self._candidate_publishers > 1:
            return Hold(SafetyState.FAULT, "fault", f"{self._candidate_publishers} publishers on the candidate "
                        "topic (exactly one allowed)")
        if self._fault is not None:
            if now - self._fault[0] < self.config.fault_hold_time or self._candidate is None:
                return Hold(SafetyState.FAULT, "fault", self._fault[1] + "; motion resumes on a fresh candidate")
            self._fault = None
        if candidate_age is None:
            return Hold(SafetyState.HOLD, "watchdog:candidate", "waiting for a candidate command")
        if candidate_age > self.config.candidate_timeout:
            return Hold(SafetyState.HOLD, "watchdog:candidate", f"no candidate command for {candidate_age:.3f} s "
                        f"(timeout {self.config.candidate_timeout} s)")
        return None

    # ----------------------------------------------------------------------------------------- ticking
    def tick(self, now: float, ros_now: float | None = None) -> SafetyOutput:
        """Advance the output by the steady time since the last tick (at most one period) and say why
        it looks the way it does. `ros_now`, the ROS clock at the same instant, is checked for jumps."""
        rejection, self._pending_rejection = self._pending_rejection, None
        self._check_clock(now, ros_now)
        if self.config.heartbeat_timeout > 0:
            if self._heartbeat_start is None:
                self._heartbeat_start = now
            waited = now - (self._heartbeat_time if self._heartbeat_time is not None else self._heartbeat_start)
            if waited > self.config.heartbeat_timeout:
                self._latch(now, "e-stop heartbeat lost")
        if self._position is None:
            hold = self.hold_reason(now)
            return self._finish(None, None, hold.state, hold.reason, (hold.limit,))
        dt = self._elapsed(now)
        self._check_following_error(now)
        hold = self.hold_reason(now)
        if hold is None and self._holding:
            if self._stop.finished and self._measured_plausible:  # a hold ends at standstill, from where the arm is
                self._restart_from_measured()
            else:
                hold = Hold(self._state, "braking", "finishing the stop before following candidates again")
        limits: list[str] = []
        if hold is not None:
            self._holding = True
            self._last_target = None  # after the hold, an arm whose candidate leaves its box stays where it stopped
            state, reason = hold.state, hold.reason
            limits.append(hold.limit)
            self._continue_stop(dt, np.arange(len(self.names)))
        else:
            self._track(now, dt, limits)
            counted = "passed" if not limits else "modified"
            self._counters = replace(self._counters, **{counted: getattr(self._counters, counted) + 1})
            if rejection is not None:
                limits.append("rejected:candidate")
            state = SafetyState.OK if not limits else SafetyState.LIMITING
            reason = "" if not limits else ("rejected candidate: " + rejection if rejection is not None
                                            else "limited by " + ", ".join(limits))
        return self._finish(self._position.copy(), self._velocity.copy(), state, reason, tuple(limits))

    def _finish(self, positions, velocities, state: SafetyState, reason: str, limits: tuple[str, ...]) -> SafetyOutput:
        changed = state != self._state
        self._state = state
        return SafetyOutput(positions, velocities, state, limits, reason, self._counters, changed)

    def _elapsed(self, now: float) -> float:
        """Steady time since the last tick, clamped to one period; ticks sooner than
        `min_tick_interval` (or a clock that went back) do not advance the output at all."""
        elapsed = now - self._last_tick
        if elapsed < self.config.min_tick_interval:
            return 0.0
        self._last_tick = now
        return min(elapsed, self.config.period)

    def _check_clock(self, now: float, ros_now: float | None) -> None:
        if ros_now is None:
            return
        if self._clock is not None:
            # A jump is ROS time going back, or leaping ahead of the steady clock. ROS time that runs slower
            # (a simulator's /clock below real time, or stalled while the simulator is starved) is not one.
            ros_delta = ros_now - self._clock[1]
            ahead = ros_delta - (now - self._clock[0])
            if ros_delta < -self.config.clock_jump_tolerance or ahead > self.config.clock_jump_tolerance:
                jump = ros_delta if ros_delta < 0 else ahead
                self._raise_fault(now, f"ROS clock jumped {jump:+.3f} s against the steady clock")
        self._clock = (now, ros_now)
        self._ros_offset = ros_now - now

    def _check_following_error(self, now: float) -> None:
        """Command vs measured position; beyond the limit: FAULT, and the output holds where the arm is."""
        if (self._joint_state_time is None or now - self._joint_state_time > self.config.joint_state_timeout
                or not self._measured_plausible):
            return
        error = self._position - self._measured
        over = np.flatnonzero(np.abs(error) > self.following_limit)
        if over.size:
            i = over[0]
            self._raise_fault(now, f"following error: {self.names[i]} command − measured = {error[i]:+.4f} "
                                   f"(limit {self.following_limit[i]:g})")
            self._restart_from_measured()

    def _restart_from_measured(self) -> None:
        """Output at rest at the measured position (no step relative to the robot, ever)."""
        if self._position is not None:
            self._counters = replace(self._counters, restarts=self._counters.restarts + 1)
        self._position = self._measured.copy()
        self._velocity = np.zeros_like(self._position)
        self._acceleration = np.zeros_like(self._position)
        self._stop = _Stop(None, self._position.copy())
        self._holding = self._fault is not None or self._estop_latched
        self._last_target = None
        poses = self.kinematics.ee_poses(self._position)
        self._box_budget = {arm: max(0.0, _box_excess(poses[arm][:3, 3], box.min, box.max))
                            for arm, box in self.boxes.items()}
        if self.collisions is not None:
            clearance = self.collisions.distances(self._position) - self.collisions.margin
            self._collision_budget = np.maximum(0.0, -clearance)

    def _brake(self, p: np.ndarray, v: np.ndarray, a: np.ndarray, freeze: bool = False,
               unlimited_jerk: bool = False) -> _Stop:
        """The time-optimal stop from (p, v, a), every joint on its own: jerk-limited (stop category 2),
        acceleration-limited (category 1) or none (category 0, freeze the command)."""
        if freeze or (not np.any(v) and not np.any(a)):
            return _Stop(None, p.copy())
        parameters = self._stop_input
        parameters.max_jerk = np.full_like(p, np.inf) if unlimited_jerk else self.max_jerk
        parameters.current_position = np.zeros_like(p)
        parameters.current_velocity, parameters.current_acceleration = v, a
        trajectory = Trajectory(len(p))
        if not self._calculate(parameters, trajectory):  # only for inputs ruckig cannot take: freezing is left
            return _Stop(None, p.copy())
        return _Stop(trajectory, p.copy())

    def _continue_stop(self, dt: float, joints: np.ndarray) -> None:
        """Joints `joints` go on along the stop proven earlier."""
        self._stop.elapsed += dt
        p, v, a = self._stop.state_at(self._stop.elapsed)
        self._position[joints], self._velocity[joints], self._acceleration[joints] = p[joints], v[joints], a[joints]

    def _target(self, now: float, limits: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The latest candidate evaluated now along its velocity (at most `max_extrapolation_ticks`
        periods from its stamp), kept in the position limits; an arm whose tool would leave its box
        keeps its last in-box target (the candidate counts as rejected). Dry run: grippers stay put."""
        candidate = self._candidate
        reach = self.config.max_extrapolation_ticks * self.config.period
        age = now - candidate.reference
        raw = candidate.positions + candidate.velocities * min(max(age, -reach), reach)
        target = np.clip(raw, self.lower, self.upper)
        limits.extend(f"position:{self.names[i]}" for i in np.flatnonzero(np.abs(target - raw) > _PASSED_TOLERANCE))
        moving = (target == raw) & (abs(age) <= reach)  # beyond the reach the target stands still
        velocity = np.where(moving, candidate.velocities, 0.0)
        acceleration = np.where(moving, candidate.accelerations, 0.0)
        if self.config.speed_scale < 1.0:
            target[self.gripper_mask] = self._position[self.gripper_mask]
            velocity[self.gripper_mask] = acceleration[self.gripper_mask] = 0.0
        poses = self.kinematics.ee_poses(target)
        fallback = self._last_target if self._last_target is not None else self._position
        outside = [arm for arm, box in self.boxes.items() if not box.contains(poses[arm][:3, 3])]
        for arm in outside:
            joints = self.arm_slices[arm]
            target[joints], velocity[joints], acceleration[joints] = fallback[joints], 0.0, 0.0
            limits.append(f"workspace:{arm}")
        if outside and self._candidate_is_new:  # reported this tick through the workspace limits
            self._counters = replace(self._counters, rejected=self._counters.rejected + 1)
        self._candidate_is_new = False
        self._last_target = target.copy()
        return target, velocity, acceleration

    def _track(self, now: float, dt: float, limits: list[str]) -> None:
        """One jerk-limited piece towards the target that arrives on it within dt when it can; a group
        (arm or gripper) whose stop after it would break a position limit or leave its box continues
        the stop it already has instead."""
        target, target_velocity, target_acceleration = self._target(now, limits)
        if dt == 0.0:
            return
        planned = self._plan(dt, target, target_velocity, target_acceleration)
        if planned is None:  # no piece ruckig accepts: everything continues its stop
            limits.append("dynamics:infeasible")
            self._continue_stop(dt, np.arange(len(self.names)))
            return
        p, v, a = planned
        stop = self._brake(p, v, a)
        low, high = stop.excursions()
        inside = (low >= np.minimum(self.lower, self._position) - _ROUNDING) & \
                 (high <= np.maximum(self.upper, self._position) + _ROUNDING)
        poses = self.kinematics.ee_poses(p)
        failed: list[np.ndarray] = []
        budgets = {}
        for label, joints in self._groups:
            arm = label.removeprefix("workspace:") if label.startswith("workspace:") else None
            ok = bool(np.all(inside[joints]))
            if arm is not None and ok:
                box = self.boxes[arm]
                travel = np.maximum(high[joints] - p[joints], p[joints] - low[joints])
                budgets[arm] = _box_excess(poses[arm][:3, 3], box.min, box.max) + float(self.reach[arm] @ travel)
                ok = budgets[arm] <= self._box_budget[arm]
            if not ok:
                failed.append(joints)
                limits.extend(f"position:{self.names[i]}" for i in joints if not inside[i])
                if arm is not None and all(inside[joints]):
                    limits.append(label)
        for arm, excess in budgets.items():
            if excess <= self._box_budget[arm]:
                self._box_budget[arm] = max(0.0, excess)
        if failed:
            p, v, a, stop = self._mix(dt, np.concatenate(failed), p, v, a)
            low, high = stop.excursions()
        if self.collisions is not None:
            clearance = self._clearance(p, stop)
            too_close = np.flatnonzero(clearance < -self._collision_budget)
            if too_close.size:  # the arms involved brake; if that is not clear either, everything brakes
                worst = too_close[np.argmin(clearance[too_close])]
                limits.append(f"collision:{self.collisions.pair_names[worst]}")
                arms = set().union(*(self.collisions.arms_of(i) for i in too_close))
                joints = np.concatenate([np.arange(len(p))[self.arm_slices[arm]] for arm in sorted(arms)]
                                        + [np.flatnonzero(self.gripper_mask)])
                p, v, a, stop = self._mix(dt, joints, p, v, a)
                clearance = self._clearance(p, stop)
                if np.any(clearance < -self._collision_budget):
                    p, v, a, stop = self._mix(dt, np.arange(len(p)), p, v, a)
                    clearance = None  # the stop it was already proven to have: nothing new to learn
            if clearance is not None:
                self._collision_budget = np.minimum(self._collision_budget, np.maximum(0.0, -clearance))
        self._position, self._velocity, self._acceleration, self._stop = p, v, a, stop
        reached = np.abs(self._position - target) <= _PASSED_TOLERANCE
        for i in np.flatnonzero(~reached):
            if self.gripper_mask[i] and self.config.speed_scale < 1.0:
                continue
            if abs(self._velocity[i]) >= self.max_velocity[i] * (1 - 1e-9):
                kind = "velocity"
            elif abs(self._acceleration[i]) >= self.max_acceleration[i] * (1 - 1e-9):
                kind = "acceleration"
            else:
                kind = "jerk"
            label = f"{kind}:{self.names[i]}"
            if label not in limits and f"position:{self.names[i]}" not in limits:
                limits.append(label)

    def _clearance(self, p: np.ndarray, stop: _Stop) -> np.ndarray:
        """Collision clearance per pair of the stop from p (see CollisionChecker.clearance), with the
        stop sampled at `_COLLISION_SAMPLES` segments where the cheap bound is not enough."""
        low, high = stop.excursions()
        duration = 0.0 if stop.trajectory is None else stop.trajectory.duration
        segment = np.minimum(high - low, self.max_velocity * duration / _COLLISION_SAMPLES)

        def samples():
            return [stop.state_at(duration * k / _COLLISION_SAMPLES)[0] for k in range(_COLLISION_SAMPLES + 1)]
        return self.collisions.clearance(p, np.maximum(high - p, p - low), -self._collision_budget, samples, segment)

    def _mix(self, dt: float, braking: np.ndarray, p: np.ndarray, v: np.ndarray, a: np.ndarray):
        """Joints `braking` continue the proven stop from the current output, the others take (p, v, a);
        returns the mixed state and the stop from it."""
        mask = np.zeros(len(p), dtype=bool)
        mask[braking] = True
        if mask.all():  # the whole stop goes on: exactly the proven trajectory
            self._stop.elapsed += dt
            return (*self._stop.state_at(self._stop.elapsed), self._stop)
        state = self._stop.state_at(self._stop.elapsed + dt)
        p, v, a = (np.where(mask, s, x) for s, x in zip(state, (p, v, a), strict=True))
        return p, v, a, self._brake(p, v, a)

    def _plan(self, dt: float, target: np.ndarray, velocity: np.ndarray,
              acceleration: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The state after dt along the time-optimal jerk-limited trajectory to the target state,
        stretched to arrive no sooner than dt (so a reachable target is reached exactly).

        Planned in the frame that moves with the target's velocity (the velocity limits shift by it):
        towards a target frozen in place, a trajectory that already moves with the target would have
        to slow down to arrive on it, and replanning every tick would lag behind a moving candidate
        for good. In the moving frame the target is at rest and the plan converges onto it."""
        velocity = np.clip(velocity, -self.max_velocity * (1 - 1e-6), self.max_velocity * (1 - 1e-6))
        parameters = self._track_input
        parameters.current_position = self._position - (target - velocity * dt)
        parameters.current_velocity = self._velocity - velocity
        parameters.current_acceleration = self._acceleration
        parameters.max_velocity = self.max_velocity - velocity
        parameters.min_velocity = -self.max_velocity - velocity
        parameters.target_position = np.zeros_like(target)
        parameters.target_velocity = np.zeros_like(target)
        parameters.minimum_duration = dt
        trajectory = Trajectory(len(target))
        for target_acceleration in (acceleration, np.zeros_like(acceleration)):
            parameters.target_acceleration = target_acceleration
            if not self._calculate(parameters, trajectory):
                continue
            if trajectory.duration <= dt:  # reached: exactly the target (no rounding on a pass-through)
                return target.copy(), velocity, target_acceleration.copy()
            p, v, a = trajectory.at_time(dt)
            return target + np.array(p), velocity + np.array(v), np.array(a)
        return None

    def _calculate(self, parameters: InputParameter, trajectory: Trajectory) -> bool:
        """ruckig's calculation; False where it finds no trajectory (it refuses some target states,
        e.g. at the velocity limit and still accelerating, with an exception or an error code)."""
        try:
            return self._ruckig.calculate(parameters, trajectory) in _RUCKIG_OK
        except (RuckigError, RuntimeError, ValueError):
            return False
