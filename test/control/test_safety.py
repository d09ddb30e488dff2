"""The safety supervisor core: every rule on its own, the e-stop latch, and property tests showing that
no input sequence makes the output violate a position, velocity or acceleration limit or leave a box."""
from dataclasses import replace

import numpy as np
import pytest
from conftest import ROBOT_CONFIG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wall_oss_core.control.safety import (
    SafetyConfig,
    SafetyState,
    SafetySupervisor,
    braking_distance,
    chain_reach,
    stopping_speed,
)
from wall_oss_core.robot.config import WorkspaceBox, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

PERIOD = 0.005
TOL = 1e-9


def _with_boxes(config, boxes: dict[str, tuple]):
    arms = tuple(replace(arm, workspace=WorkspaceBox(np.array(boxes[arm.name][0]), np.array(boxes[arm.name][1])))
                 for arm in config.arms)
    return BimanualKinematics(replace(config, arms=arms))


@pytest.fixture(scope="module")
def robot():
    return load_robot_config(ROBOT_CONFIG)


@pytest.fixture(scope="module")
def kinematics(robot):
    return BimanualKinematics(robot)


@pytest.fixture(scope="module")
def open_kinematics(robot):
    """Boxes so large that only the joint limits act."""
    return _with_boxes(robot, {"left": ([-5, -5, -5], [5, 5, 5]), "right": ([-5, -5, -5], [5, 5, 5])})


@pytest.fixture(scope="module")
def tight_kinematics(robot, kinematics):
    """Boxes 8 cm around each tool at home, so workspace limits act all the time."""
    home = kinematics.ee_poses(robot.home_positions())
    return _with_boxes(robot, {arm: (pose[:3, 3] - 0.08, pose[:3, 3] + 0.08) for arm, pose in home.items()})


class Run:
    """Drives a supervisor tick by tick at PERIOD and records what it sent."""

    def __init__(self, kinematics, config: SafetyConfig = SafetyConfig(period=PERIOD), start=None):
        self.kinematics = kinematics
        self.supervisor = SafetySupervisor(kinematics, config)
        self.start = kinematics.config.home_positions() if start is None else np.asarray(start, dtype=float)
        self.measured = self.start.copy()
        self.t = 0.0
        self.outputs = []
        self.supervisor.on_joint_state(self.t, self.measured)

    def tick(self, candidate=None, velocities=None, joint_state=True):
        self.t += PERIOD
        if joint_state:
            self.supervisor.on_joint_state(self.t, self.measured)
        if candidate is not None:
            self.supervisor.on_candidate(self.t, candidate, velocities)
        out = self.supervisor.tick(self.t)
        self.outputs.append(out)
        return out

    def positions(self):
        return np.array([self.start] + [o.positions for o in self.outputs])

    def velocities(self):
        return np.array([o.velocities for o in self.outputs])


def assert_safe(run: Run, within_limits_from_start=True):
    """Every output finite, inside the limits and boxes, and within velocity / acceleration limits
    relative to the output before it (the first relative to the start at rest)."""
    limits = run.kinematics.limits
    positions = run.positions()
    assert np.all(np.isfinite(positions))
    velocity = np.diff(positions, axis=0) / PERIOD
    assert np.allclose(velocity, run.velocities(), atol=1e-6)
    assert np.all(np.abs(velocity) <= limits.velocity + 1e-6), "velocity limit violated"
    acceleration = np.diff(np.vstack([np.zeros(len(limits.names)), velocity]), axis=0) / PERIOD
    assert np.all(np.abs(acceleration) <= limits.acceleration * (1 + 1e-6) + 1e-6), "acceleration limit violated"
    if within_limits_from_start:
        assert np.all(positions >= limits.lower - TOL) and np.all(positions <= limits.upper + TOL), "position limit"
    for p in positions:
        for arm in run.kinematics.config.arms:
            tool = run.kinematics.ee_poses(p)[arm.name][:3, 3]
            assert np.all(tool >= arm.workspace.min - TOL) and np.all(tool <= arm.workspace.max + TOL), \
                f"{arm.name} tool {tool} left its box"


# ------------------------------------------------------------------------------------------ building blocks
@given(st.floats(0.0, 5.0), st.floats(0.01, 10.0), st.floats(0.001, 0.02))
def test_stopping_speed_inverts_step_plus_braking(distance, acceleration, period):
    step = np.array([acceleration * period])
    speed = stopping_speed(np.array([distance]), step, period)
    covered = speed * period + braking_distance(speed, step, period)
    assert covered[0] <= distance + 1e-12
    assert covered[0] == pytest.approx(distance, rel=1e-9, abs=1e-12)


def test_braking_distance_matches_simulated_braking():
    step, period = np.array([0.03]), 0.005
    for speed in (0.0, 0.01, 0.03, 0.5, 1.234, 2.0):
        velocity, travelled = speed, 0.0
        while velocity > 0:
            velocity = max(velocity - step[0], 0.0)
            travelled += velocity * period
        assert braking_distance(np.array([speed]), step, period)[0] == pytest.approx(travelled, abs=1e-12)


def test_chain_reach_bounds_tool_speed(kinematics):
    """|d tool/dq_i| measured by finite differences never exceeds the reach bound, in random poses."""
    rng = np.random.default_rng(0)
    limits = kinematics.limits
    reach = {arm: chain_reach(kinematics, arm) for arm in ("left", "right")}
    assert np.all(reach["left"][kinematics.arm_slice("right")] == 0)
    assert reach["left"][kinematics.gripper_index("left")] == 0  # the fingers do not move the tool frame
    for _ in range(20):
        q = rng.uniform(limits.lower, limits.upper)
        base = kinematics.ee_poses(q)
        for i in range(len(q)):
            dq = np.zeros_like(q)
            dq[i] = 1e-6
            moved = kinematics.ee_poses(q + dq)
            for arm in ("left", "right"):
                speed = np.linalg.norm(moved[arm][:3, 3] - base[arm][:3, 3]) / 1e-6
                assert speed <= reach[arm][i] + 1e-4


def test_config_is_validated():
    with pytest.raises(ValueError, match="period"):
        SafetyConfig(period=0.0)
    with pytest.raises(ValueError, match="at least one command period"):
        SafetyConfig(period=0.01, candidate_timeout=0.005)
    with pytest.raises(ValueError, match="max_extrapolation_ticks"):
        SafetyConfig(max_extrapolation_ticks=-1)


# ------------------------------------------------------------------------------------------ rules
def test_nothing_is_sent_before_a_joint_state(kinematics):
    supervisor = SafetySupervisor(kinematics, SafetyConfig(period=PERIOD))
    supervisor.on_candidate(0.0, kinematics.config.home_positions())
    out = supervisor.tick(0.005)
    assert out.positions is None and out.velocities is None
    assert out.state == SafetyState.HOLD and "joint state" in out.reason
    with pytest.raises(ValueError, match="non-finite"):
        supervisor.on_joint_state(0.01, np.full(14, np.nan))
    with pytest.raises(ValueError, match="expected 14"):
        supervisor.on_joint_state(0.01, np.zeros(3))
    assert supervisor.tick(0.01).positions is None


def test_holds_measured_position_until_a_candidate_arrives(kinematics):
    run = Run(kinematics)
    out = run.tick()
    assert out.state == SafetyState.HOLD and "first candidate" in out.reason
    np.testing.assert_array_equal(out.positions, run.start)
    np.testing.assert_array_equal(out.velocities, 0.0)


def test_feasible_candidates_pass_unchanged(kinematics):
    run = Run(kinematics)
    times = PERIOD * np.arange(1, 201)
    signs = np.array([1, -1, 1, -1, 1, 1, 0] * 2)
    for t in times:  # from rest, 0.2 rad/s and 0.4 rad/s^2 at most: well inside every limit
        candidate = run.start + signs * 0.1 * (1.0 - np.cos(2.0 * t))
        out = run.tick(candidate, signs * 0.2 * np.sin(2.0 * t))
        np.testing.assert_allclose(out.positions, candidate, atol=TOL)
        assert out.state == SafetyState.OK and out.active_limits == ()
    assert run.supervisor.counters.passed == 200 and run.supervisor.counters.modified == 0
    assert_safe(run)


def test_position_limit_brakes_before_the_limit(open_kinematics):
    run = Run(open_kinematics)
    limits = open_kinematics.limits
    candidate = run.start.copy()
    candidate[4] = 5.0  # wrist yaw far beyond its upper limit (1.35 with margin)
    for _ in range(300):
        out = run.tick(candidate)
    assert out.positions[4] == pytest.approx(limits.upper[4], abs=1e-6)
    assert out.velocities[4] == 0.0
    assert out.state == SafetyState.LIMITING and "position:left_wrist_yaw_joint" in out.active_limits
    speeds = run.velocities()[:, 4]
    peak = int(np.argmax(speeds))
    assert speeds[peak] > 1.0 and np.all(np.diff(speeds[peak:]) <= 0)  # slows down before reaching it
    assert_safe(run)


def test_velocity_and_acceleration_limits_shape_a_jump(open_kinematics):
    run = Run(open_kinematics)
    limits = open_kinematics.limits
    candidate = run.start.copy()
    candidate[0] += 2.0  # shoulder pan: a 2 rad jump
    first = run.tick(candidate)
    assert first.velocities[0] == pytest.approx(limits.acceleration[0] * PERIOD)
    assert "acceleration:left_shoulder_pan_joint" in first.active_limits
    cruise = [run.tick(candidate) for _ in range(80)][-1]
    assert cruise.velocities[0] == pytest.approx(limits.velocity[0])
    assert "velocity:left_shoulder_pan_joint" in cruise.active_limits
    for _ in range(300):
        out = run.tick(candidate)
    np.testing.assert_allclose(out.positions, candidate, atol=TOL)  # arrives without overshoot
    assert np.max(run.positions()[:, 0]) <= candidate[0] + TOL
    assert out.state == SafetyState.OK
    assert_safe(run)


def test_candidate_outside_workspace_is_not_followed(kinematics):
    run = Run(kinematics)
    candidate = run.start.copy()
    candidate[1] += 0.8  # left shoulder lift down: the left tool goes below the table (z < 0.02)
    candidate[8] += 0.1  # the right arm moves a little, inside its box
    out = run.tick(candidate)
    assert "workspace:left" in out.active_limits and out.state == SafetyState.LIMITING
    assert run.supervisor.counters.rejected == 1
    for _ in range(100):
        out = run.tick(candidate)
    np.testing.assert_allclose(out.positions[kinematics.arm_slice("left")], run.start[:6], atol=TOL)
    assert out.positions[8] == pytest.approx(candidate[8])
    assert run.supervisor.counters.rejected == 101
    assert_safe(run)


def test_fast_motion_towards_a_face_stops_inside_the_box(tight_kinematics):
    """In-box candidates that march towards a face and beyond: the output slows down early enough."""
    run = Run(tight_kinematics)
    for k in range(400):
        candidate = run.start.copy()
        candidate[0] = run.start[0] + min(0.01 * k, 1.5)  # pan sweeps the tool sideways at 2 rad/s
        run.tick(candidate, np.where(np.arange(14) == 0, 2.0, 0.0))
    assert any("workspace:left" in o.active_limits for o in run.outputs)
    assert run.outputs[-1].velocities[0] == 0.0
    assert_safe(run)


def test_stale_candidate_decelerates_to_a_hold(open_kinematics):
    run = Run(open_kinematics, SafetyConfig(period=PERIOD, candidate_timeout=0.05))
    step = open_kinematics.limits.acceleration * PERIOD
    for k in range(1, 101):
        candidate = run.start.copy()
        candidate[2] += 1.0 * PERIOD * k  # elbow at 1 rad/s
        run.tick(candidate, np.where(np.arange(14) == 2, 1.0, 0.0))
    moving = run.outputs[-1]
    position, speed = moving.positions[2], moving.velocities[2]
    hold = [run.tick() for _ in range(150)]
    first_hold = next(i for i, o in enumerate(hold) if o.state == SafetyState.HOLD)
    assert "no candidate command" in hold[first_hold].reason
    assert hold[first_hold].active_limits == ("watchdog:candidate",)
    speeds = np.array([moving.velocities[2]] + [o.velocities[2] for o in hold])
    assert np.all(np.diff(speeds[first_hold:]) == pytest.approx(-np.minimum(step[2], speeds[first_hold:-1])))
    assert speeds[-1] == 0.0
    coasted = hold[first_hold - 1].positions[2] if first_hold else position
    coast_speed = hold[first_hold - 1].velocities[2] if first_hold else speed
    expected = coasted + braking_distance(np.array([coast_speed]), step[2:3], PERIOD)[0]
    assert hold[-1].positions[2] == pytest.approx(expected, abs=1e-9)  # the hold is where braking stops
    assert np.all(np.isfinite(hold[-1].positions)) and np.any(hold[-1].positions != 0)
    assert_safe(run)


def test_stale_joint_states_fault_then_recover_smoothly(open_kinematics):
    run = Run(open_kinematics, SafetyConfig(period=PERIOD, joint_state_timeout=0.02))
    candidate = run.start.copy()
    candidate[3] += 0.5
    for _ in range(20):
        run.tick(candidate)
    faults = [run.tick(candidate, joint_state=False) for _ in range(40)]
    assert faults[-1].state == SafetyState.FAULT and "joint states stale" in faults[-1].reason
    assert faults[-1].active_limits == ("watchdog:joint_state",)
    assert faults[-1].velocities[3] == 0.0
    for _ in range(200):
        out = run.tick(candidate)
    assert out.state == SafetyState.OK
    np.testing.assert_allclose(out.positions, candidate, atol=TOL)
    assert_safe(run)


def test_rejected_candidates_are_counted_and_ignored(kinematics):
    run = Run(kinematics)
    good = run.start.copy()
    good[0] += 0.01
    supervisor = run.supervisor
    for _ in range(60):
        run.tick(good)
    before = run.outputs[-1].positions
    nan = good.copy()
    nan[5] = np.nan
    assert "non-finite positions" in supervisor.on_candidate(run.t, nan)
    out = run.tick()
    assert out.state == SafetyState.LIMITING and "non-finite" in out.reason
    assert "rejected:candidate" in out.active_limits
    np.testing.assert_allclose(out.positions, before, atol=TOL)
    assert "expected 14" in supervisor.on_candidate(run.t, good[:3])
    assert "velocities" in supervisor.on_candidate(run.t, good, np.full(14, np.inf))
    assert supervisor.on_candidate(run.t, good, stamp=2.0) is None
    assert "not newer" in supervisor.on_candidate(run.t, good, stamp=1.0)
    assert "could not convert" in supervisor.reject_candidate("could not convert the message")
    assert supervisor.counters.rejected == 5
    assert run.tick().state == SafetyState.LIMITING
    assert run.tick().state == SafetyState.OK
    assert_safe(run)


def test_late_candidate_is_carried_along_its_velocity(open_kinematics):
    run = Run(open_kinematics)
    joint = np.arange(14) == 5
    accelerate, cruise = 3.0, 0.6  # rad/s^2 up to 0.6 rad/s (0.2 s), then constant speed

    def state(k):
        t, t_cruise = PERIOD * k, cruise / accelerate
        if t <= t_cruise:
            return run.start + joint * 0.5 * accelerate * t ** 2, joint * accelerate * t
        return run.start + joint * (0.5 * cruise * t_cruise + cruise * (t - t_cruise)), joint * cruise

    for k in range(1, 121):
        late = k > 60 and k % 7 == 0  # this tick's candidate is late: the last one is carried forward
        out = run.tick() if late else run.tick(*state(k))
        if k > 60:
            np.testing.assert_allclose(out.positions, state(k)[0], atol=TOL)
            assert out.state == SafetyState.OK
    assert_safe(run)


def test_timing_jitter_is_not_mistaken_for_acceleration(open_kinematics):
    """Candidates stamped at jittery times and ticks that fire late: candidates are evaluated at the
    tick grid along their velocity, so a smooth trajectory passes with no limit acting."""
    supervisor = SafetySupervisor(open_kinematics, SafetyConfig(period=PERIOD))
    home = open_kinematics.config.home_positions()
    joint = np.arange(14) == 3
    rng = np.random.default_rng(1)
    wave = lambda t: home + joint * 0.3 * (1 - np.cos(2.0 * t))  # noqa: E731
    speed = lambda t: joint * 0.6 * np.sin(2.0 * t)  # noqa: E731
    supervisor.on_joint_state(0.0, home)
    ticks = PERIOD * np.arange(1, 301) + 0.002 + rng.uniform(0.0, 0.002, 300)
    for k, now in enumerate(ticks, start=1):
        stamp = k * PERIOD + rng.uniform(-0.0015, 0.0015)
        supervisor.on_joint_state(now, home)
        supervisor.on_candidate(now, wave(stamp), speed(stamp), stamp=stamp)
        out = supervisor.tick(now)
        assert out.state == SafetyState.OK, out.active_limits
        grid_time = ticks[0] + (k - 1) * PERIOD  # the grid keeps the phase of the first tick
        assert np.abs(out.positions - wave(grid_time)).max() < 5e-5  # first-order extrapolation over <6 ms
    assert supervisor.counters.modified == 0


def test_velocity_is_estimated_when_candidates_have_none(open_kinematics):
    """Positions only (no velocity field): a constant-speed ramp is followed unchanged after one tick."""
    run = Run(open_kinematics)
    for k in range(1, 61):
        candidate = run.start.copy()
        candidate[9] += 0.005 * PERIOD * k  # slow enough for the first step to be within one speed step
        out = run.tick(candidate)
        np.testing.assert_allclose(out.positions, candidate, atol=TOL)
    assert run.supervisor.counters.modified == 0
    assert_safe(run)


def test_start_outside_the_limits_moves_only_inwards(kinematics):
    start = kinematics.config.home_positions()
    start[6] = 0.0  # a closed gripper reads below its lower limit with margin (0.001)
    run = Run(kinematics, start=start)
    for _ in range(50):
        out = run.tick(start)
    assert out.positions[6] == pytest.approx(kinematics.limits.lower[6])
    assert np.all(np.diff(run.positions()[:, 6]) >= 0)
    assert_safe(run, within_limits_from_start=False)


# ------------------------------------------------------------------------------------------ e-stop
def test_estop_latches_until_reset_and_refuses_while_asserted_or_stale(open_kinematics):
    run = Run(open_kinematics)
    supervisor = run.supervisor
    target = run.start.copy()
    target[0] += 1.0
    for _ in range(40):
        run.tick(target)
    assert supervisor.set_estop_input(run.t, True) is True
    assert supervisor.set_estop_input(run.t, True) is False  # already latched: counted once
    out = run.tick(target)
    assert out.state == SafetyState.ESTOP and out.state_changed and "input still asserted" in out.reason
    assert out.velocities[0] < run.outputs[-2].velocities[0]
    ok, message = supervisor.reset_estop(run.t)
    assert not ok and "still asserted" in message
    supervisor.set_estop_input(run.t, False)
    for _ in range(60):
        out = run.tick(target)
    assert out.state == SafetyState.ESTOP and out.velocities[0] == 0.0  # released input: still latched
    held = out.positions.copy()
    for _ in range(50):
        out = run.tick(joint_state=False)  # inputs go stale while latched
    np.testing.assert_array_equal(out.positions, held)
    ok, message = supervisor.reset_estop(run.t)
    assert not ok and "stale" in message and "joint state" in message and "candidate" in message
    run.tick(target)
    assert supervisor.reset_estop(run.t) == (True, "e-stop reset; following candidates again")
    assert supervisor.reset_estop(run.t)[0] is True
    for _ in range(300):
        out = run.tick(target)
    assert out.state == SafetyState.OK
    np.testing.assert_allclose(out.positions, target, atol=TOL)
    assert supervisor.counters.estop_count == 1
    assert_safe(run)


def test_trigger_service_latches_and_counts(kinematics):
    run = Run(kinematics)
    run.tick(run.start)
    assert run.supervisor.trigger_estop(run.t) is True
    assert run.supervisor.trigger_estop(run.t) is False
    out = run.tick(run.start)
    assert out.state == SafetyState.ESTOP and "trigger_estop service" in out.reason
    assert run.supervisor.hold_reason(run.t).state == SafetyState.ESTOP and out.active_limits == ("estop",)
    assert out.counters.estop_count == 1
    assert run.supervisor.reset_estop(run.t)[0]
    assert run.tick(run.start).state == SafetyState.OK


# ------------------------------------------------------------------------------------------ properties
def _vector(lo, hi):
    return st.lists(st.floats(lo, hi, allow_nan=False), min_size=14, max_size=14).map(np.array)


EVENTS = st.one_of(
    st.tuples(st.just("anywhere"), _vector(-4.0, 4.0), st.booleans()),        # any position, maybe velocities
    st.tuples(st.just("near"), _vector(-0.3, 0.3), st.booleans()),            # close to the current output
    st.tuples(st.just("huge"), _vector(-1e6, 1e6), st.booleans()),
    st.tuples(st.just("nan"), st.integers(0, 13), st.sampled_from([np.nan, np.inf, -np.inf])),
    st.tuples(st.just("candidate_gap"), st.integers(1, 40)),
    st.tuples(st.just("joint_state_gap"), st.integers(1, 60)),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("trigger")),
    st.tuples(st.just("reset")),
)


def _play(run: Run, events, rng_velocity):
    supervisor = run.supervisor
    for event in events:
        kind = event[0]
        current = run.outputs[-1].positions if run.outputs else run.start
        if kind in ("anywhere", "near", "huge"):
            positions = current + event[1] if kind == "near" else event[1]
            run.tick(positions, rng_velocity(event[1]) if event[2] else None)
        elif kind == "nan":
            bad = current.copy()
            bad[event[1]] = event[2]
            run.tick(bad)
        elif kind == "candidate_gap":
            for _ in range(event[1]):
                run.tick()
        elif kind == "joint_state_gap":
            for _ in range(event[1]):
                run.tick(current, joint_state=False)
        elif kind == "estop":
            supervisor.set_estop_input(run.t, event[1])
            run.tick()
        elif kind == "trigger":
            supervisor.trigger_estop(run.t)
            run.tick()
        else:
            supervisor.reset_estop(run.t)
            run.tick(current)


@pytest.mark.parametrize("box", ["shipped", "tight"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(EVENTS, min_size=1, max_size=40), velocity_scale=st.floats(0.0, 20.0))
def test_no_input_sequence_breaks_a_limit(box, events, velocity_scale, kinematics, tight_kinematics):
    run = Run(kinematics if box == "shipped" else tight_kinematics,
              SafetyConfig(period=PERIOD, candidate_timeout=0.05, joint_state_timeout=0.05))
    _play(run, events, lambda v: v * velocity_scale)
    # and a long sprint after it: whatever state it left, continuing never breaks a limit either
    for k in range(30):
        run.tick(run.start + 0.5 * np.sin(k), np.full(14, 3.0))
    assert_safe(run)
    assert all(o.positions is not None for o in run.outputs)
