"""The chunk executor core: alignment, skipping, stitching, holding, EE→joint conversion, rejections.

Everything runs on explicit times (no clocks), on the shipped URDF and robot config.
"""
import numpy as np
import pytest
from conftest import ROBOT_CONFIG
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wall_oss_core.control import executor as ex
from wall_oss_core.control.executor import ChunkExecutor, ExecutorConfig, JointStateHistory
from wall_oss_core.policy import action_space as aspace
from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

RATE = 200.0
TICK = 1.0 / RATE


# module-level rather than fixtures: hypothesis would print the whole config in every failure report
CONFIG = load_robot_config(ROBOT_CONFIG)
KINEMATICS = BimanualKinematics(CONFIG)
ARM = ~np.isin(CONFIG.command_joints, CONFIG.gripper_joints)  # arm joints (not the grippers)


def ready_executor(t=0.0, positions=None, **settings) -> ChunkExecutor:
    executor = ChunkExecutor(KINEMATICS, ExecutorConfig(**settings))
    executor.on_joint_state(t, CONFIG.home_positions() if positions is None else positions)
    return executor


def joint_chunk(targets, stamp, dt=0.05, offset=0.0, instruction="") -> Chunk:
    return Chunk(np.asarray(targets, dtype=float), dt, ex.JOINT_POSITION, list(CONFIG.command_joints), stamp,
                 instruction=instruction, first_action_offset=offset)


def ramp(times, speed):
    """Targets moving every arm joint at `speed` [rad/s] from home (t = 0)."""
    targets = np.tile(CONFIG.home_positions(), (len(times), 1))
    arm_joints = [i for i, name in enumerate(CONFIG.command_joints) if name not in CONFIG.gripper_joints]
    targets[:, arm_joints] += speed * np.asarray(times)[:, None]
    return targets


def ticks(executor, start, stop):
    return [executor.step(t) for t in np.arange(start, stop, TICK)]


# ------------------------------------------------------------------------------------------- basics

def test_nothing_is_commanded_before_a_joint_state_then_it_holds_the_measured_position():
    executor = ChunkExecutor(KINEMATICS)
    assert executor.step(0.0) is None
    rejected = executor.submit(joint_chunk(ramp([0, 0.05], 0.1), 0.0), 0.0)
    assert rejected.reason == ex.NOT_READY
    measured = CONFIG.home_positions() + 0.01
    executor.on_joint_state(0.0, measured)
    for command in ticks(executor, 0.0, 0.5):
        assert command.source == "hold"
        np.testing.assert_array_equal(command.positions, measured)
        np.testing.assert_array_equal(command.velocities, 0.0)


def test_bad_joint_states_raise_with_a_reason():
    executor = ready_executor(t=1.0)
    with pytest.raises(ValueError, match="needs 14 positions"):
        executor.on_joint_state(1.1, np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        executor.on_joint_state(1.1, np.full(14, np.nan))
    with pytest.raises(ValueError, match="older than the newest"):
        executor.on_joint_state(0.5, CONFIG.home_positions())


def test_settings_are_validated():
    with pytest.raises(ValueError, match="smoothing_interval must be a positive number"):
        ExecutorConfig(smoothing_interval=-0.1)
    with pytest.raises(ValueError, match="limit_fraction must be at most 1"):
        ExecutorConfig(limit_fraction=1.5)
    with pytest.raises(ValueError, match="joint_history_duration must cover max_chunk_age"):
        ExecutorConfig(max_chunk_age=3.0, joint_history_duration=1.0)


def test_joint_state_history_interpolates_to_the_stamp_and_refuses_far_lookups():
    history = JointStateHistory(duration=1.0)
    history.add(0.0, np.array([0.0, 1.0]))
    history.add(0.04, np.array([0.4, 1.0]))
    np.testing.assert_allclose(history.at(0.01, max_gap=0.05), [0.1, 1.0])
    np.testing.assert_allclose(history.at(0.06, max_gap=0.05), [0.4, 1.0])  # nearest, within the gap
    assert history.at(0.5, max_gap=0.05) is None
    history.add(2.0, np.array([2.0, 2.0]))  # older than `duration` before it: forgotten
    assert history.at(0.0, max_gap=0.05) is None


# ------------------------------------------------------------------- limits of the command stream

def assert_within_limits(commands, limits=None, slack=1.0):
    """Finite differences of the positions (what a controller sees) within velocity, acceleration and
    jerk limits, positions within the joint limits; returns the peak ratios (velocity, acc, jerk)."""
    limits = limits or KINEMATICS.limits
    positions = np.array([c.positions for c in commands])
    assert np.all(positions >= limits.lower - 1e-9) and np.all(positions <= limits.upper + 1e-9)
    ratios = []
    for order, bound in ((1, limits.velocity), (2, limits.acceleration), (3, limits.jerk)):
        differences = np.abs(np.diff(positions, n=order, axis=0)) / TICK ** order
        ratio = float(np.max(differences / bound, initial=0.0))
        assert ratio <= slack + 1e-6, (order, ratio)
        ratios.append(ratio)
    return ratios


# ----------------------------------------------------------------------------- alignment and skipping

@given(latency=st.floats(0.0, 0.4), dt=st.sampled_from([0.02, 0.033, 0.05, 0.1]),
       offset=st.floats(0.0, 0.1), speed=st.floats(-0.3, 0.3))
@settings(max_examples=30, deadline=None)
def test_actions_elapsed_during_inference_are_skipped_not_replayed(latency, dt, offset, speed):
    """Two chunks of the same motion; the second arrives `latency` after its observation. Once on the
    motion the command stays on it exactly: no snap back to the second chunk's first (stale) targets."""
    executor = ready_executor()
    horizon = int(1.0 / dt)
    long_horizon = int(2.5 / dt)  # still running when the second chunk arrives
    first = joint_chunk(ramp(offset + dt * np.arange(long_horizon), speed), 0.0, dt, offset)
    executor.submit(first, 0.0)
    stamp = 1.5  # the command has converged onto the first chunk by then
    ticks(executor, 0.0, stamp)
    np.testing.assert_allclose(executor.step(stamp).positions, ramp([stamp], speed)[0], atol=1e-9)
    now = stamp + latency
    ticks(executor, stamp + TICK, now)
    second = joint_chunk(ramp(stamp + offset + dt * np.arange(horizon), speed), stamp, dt, offset)
    accepted = executor.submit(second, now)
    expected_skipped = sum(1 for k in range(horizon) if stamp + offset + k * dt <= now)
    assert accepted and accepted.skipped_actions == expected_skipped
    for t in np.arange(now, second.action_times()[-1], TICK):
        command = executor.step(t)
        np.testing.assert_allclose(command.positions, ramp([t], speed)[0], atol=1e-9)


@given(latency=st.floats(0.0, 0.3), dt=st.sampled_from([0.033, 0.05, 0.1]),
       coefficients=hnp.arrays(float, (3, 14), elements=st.floats(-0.3, 0.3)))
@settings(max_examples=25, deadline=None)
def test_a_smooth_chunk_is_followed_exactly_once_the_command_is_on_it(latency, dt, coefficients):
    """Targets on a cubic in time: the least-squares fit is exact, and once the transition ends the
    command hits every remaining action at its time."""
    executor = ready_executor()
    times = 0.5 + dt * np.arange(int(2.5 / dt))
    s = (times - times[0])[:, None] / (times[-1] - times[0])
    scale = np.where(ARM, 1.0, 0.02)
    targets = CONFIG.home_positions() + scale * (coefficients[0] * s + coefficients[1] * s ** 2
                                                 + coefficients[2] * s ** 3)
    chunk = joint_chunk(targets, 0.5, dt)
    assert executor.submit(chunk, 0.5 + latency)
    on_chunk = False
    # ticks on the actions' grid; at the last action the brake takes over
    for t in np.arange(0.5 + np.ceil(latency / TICK) * TICK, times[-1] - TICK / 2, TICK):
        command = executor.step(t)
        on_chunk = on_chunk or command.source == "chunk"
        k = np.flatnonzero(np.abs(times - t) < 1e-9)
        if on_chunk and len(k):
            np.testing.assert_allclose(command.positions, targets[k[0]], atol=1e-9)
    assert on_chunk


# ------------------------------------------------------------------------- switching (property based)

AMPLITUDE = 0.08
FREQUENCY = 2 * np.pi * 0.5


def motion(t, phase):
    """The 'true' motion successive chunks predict (with their own offsets)."""
    amplitude = np.where(ARM, AMPLITUDE, 0.004)
    return CONFIG.home_positions() + amplitude * np.sin(FREQUENCY * np.asarray(t)[..., None] + phase)


stream_events = st.lists(st.tuples(
    st.sampled_from(["chunk"] * 6 + ["pause", "resume", "instruction", "clock_back"]),
    st.floats(0.01, 0.5),                            # gap since the previous event [s]
    st.floats(0.0, 0.3),                             # inference latency (arrival - stamp) [s]
    st.sampled_from([0.02, 0.033, 0.05, 0.1]),      # time step
    st.integers(1, 32),                              # horizon
    st.floats(0.0, 0.1),                             # first action offset
    st.floats(-0.5, 0.5),                            # prediction offset of this chunk [rad]
    st.floats(0.0, 0.01),                            # per-action noise [rad]
), min_size=1, max_size=8)


@given(events=stream_events, phase=st.floats(0, 2 * np.pi), seed=st.integers(0, 2 ** 16))
@settings(max_examples=30, deadline=None)
def test_whatever_the_chunk_stream_the_command_stays_within_the_limits(events, phase, seed):
    """Chunks at random times with random latencies, horizons, offsets (up to 0.5 rad: far chunks) and
    noise, some reordered or stale, mixed with pauses, instruction changes and the clock going back:
    the finite differences of the command never exceed the velocity, acceleration or jerk limits, the
    positions never leave the joint limits, and the stream comes to rest at the end."""
    rng = np.random.default_rng(seed)
    executor = ready_executor(positions=motion(0.0, phase))
    executor.set_instruction("task a", 0.0)
    instruction = "task a"
    commands = []
    now = 0.0
    for kind, gap, latency, dt, horizon, offset, shift, noise in events:
        count = max(1, round(gap / TICK))  # every tick TICK after the previous one (the clock jump too)
        commands += [executor.step(now + i * TICK) for i in range(count)]
        now += count * TICK
        if kind == "pause":
            executor.set_instruction("", now)
        elif kind == "resume":
            executor.set_instruction(instruction, now)
        elif kind == "instruction":
            instruction = "task b" if instruction == "task a" else "task a"
            executor.set_instruction(instruction, now)
        elif kind == "clock_back":
            now -= 1.0
        else:
            stamp = now - latency
            times = stamp + offset + dt * np.arange(horizon)
            targets = motion(times, phase) + ARM * (shift + rng.normal(0.0, noise, (horizon, 14)))
            executor.submit(joint_chunk(targets, stamp, dt, offset, instruction), now)
    running = executor.running_chunk
    count = round((max(now, running.action_times()[-1] if running else now) + 1.5 - now) / TICK)
    commands += [executor.step(now + i * TICK) for i in range(count)]
    assert_within_limits(commands)
    assert commands[-1].source == "hold" and np.all(commands[-1].velocities == 0)


def test_a_distant_chunk_is_approached_within_the_limits_and_then_followed():
    """Issue 10: the old blend capped at 1 s approached a far chunk at 4.3x the velocity limit."""
    executor = ready_executor()
    target = CONFIG.home_positions()
    target[2] += 1.2  # 1.2 rad away from the held position
    chunk = joint_chunk(np.tile(target, (80, 1)), 0.0, 0.05)
    assert executor.submit(chunk, 0.0)
    commands = ticks(executor, 0.0, 3.5)
    ratios = assert_within_limits(commands)
    assert ratios[0] > 0.5  # it does move fast, up to its limits
    assert commands[-1].source == "chunk"
    np.testing.assert_allclose(commands[-1].positions, target, atol=1e-9)


def test_a_pause_mid_transition_towards_a_limit_stops_within_the_joint_limits():
    """Issue 10: a pause mid-blend stopped 4.8 rad past a joint limit."""
    executor = ready_executor()
    target = CONFIG.home_positions()
    target[2] = KINEMATICS.limits.upper[2]  # the elbow's upper limit, 1.25 rad away
    assert executor.submit(joint_chunk(np.tile(target, (80, 1)), 0.0, 0.05, instruction=""), 0.0)
    commands = ticks(executor, 0.0, 0.6)  # moving fast towards the limit
    assert np.abs(commands[-1].velocities[2]) > 0.5
    executor.set_instruction("", 0.6)
    commands += ticks(executor, 0.6, 2.0)
    assert_within_limits(commands)
    assert commands[-1].source == "hold" and np.all(commands[-1].velocities == 0)


# ------------------------------------------------------------------------------------------- holding

def test_chunks_running_out_brake_to_a_hold_within_the_limits():
    executor = ready_executor()
    times = 0.05 * np.arange(40)
    executor.submit(joint_chunk(ramp(times, 0.4), 0.0), 0.0)
    commands = ticks(executor, 0.0, times[-1] + 1.5)
    sources = [c.source for c in commands]
    first_hold = sources.index("hold", 1)  # the first tick holds the measured position
    assert set(sources[1:first_hold]) <= {"transition", "chunk"} and set(sources[first_hold:]) == {"hold"}
    assert commands[first_hold].time >= times[-1]
    assert_within_limits(commands)
    held = commands[first_hold:]
    assert np.all(held[-1].velocities == 0) and np.all(held[-1].accelerations == 0)
    np.testing.assert_array_equal(held[-1].positions, held[-2].positions)
    # it comes to rest a little past the last target, along the motion
    last_target = ramp(times[-1:], 0.4)[0]
    assert np.all((held[-1].positions - last_target)[ARM] >= -1e-9)
    assert np.all(np.abs(held[-1].positions - last_target) <= 0.1)
    assert executor.counters.holds == 1


def test_empty_instruction_pauses_and_a_new_one_discards_the_running_chunk():
    executor = ready_executor()
    assert not executor.set_instruction("stack the cups", 0.0)  # nothing running yet
    times = 0.05 * np.arange(60)
    assert executor.submit(joint_chunk(ramp(times, 0.3), 0.0, instruction="stack the cups"), 0.0)
    ticks(executor, 0.0, 0.5)
    assert executor.set_instruction("", 0.5)
    commands = ticks(executor, 0.5, 1.0)
    assert {c.source for c in commands} == {"hold"}
    assert np.all(commands[-1].velocities == 0)
    assert executor.counters.discarded == 1
    paused = executor.submit(joint_chunk(ramp(1.0 + times, 0.3), 1.0, instruction=""), 1.0)
    assert paused.reason == ex.PAUSED

    assert not executor.set_instruction("stack the cups", 1.0)
    assert executor.submit(joint_chunk(ramp(1.0 + times, 0.3), 1.0, instruction="stack the cups"),
                           1.0)
    ticks(executor, 1.0, 1.3)
    assert executor.set_instruction("open the drawer", 1.3)
    assert executor.counters.discarded == 2
    assert executor.step(1.3).source == "hold"
    stale_task = joint_chunk(ramp(1.3 + times, 0.3), 1.3, instruction="stack the cups")
    assert executor.submit(stale_task, 1.35).reason == ex.INSTRUCTION_MISMATCH
    new_task = joint_chunk(ramp(1.3 + times, 0.3), 1.3, instruction="open the drawer")
    assert executor.submit(new_task, 1.35)
    assert executor.counters.rejected == {ex.PAUSED: 1, ex.INSTRUCTION_MISMATCH: 1}


# ---------------------------------------------------------------------------------------- rejections

def test_bad_chunks_are_rejected_with_reasons_and_leave_the_command_untouched():
    clean = ready_executor()
    dirty = ready_executor()
    times = 0.05 * np.arange(20)
    good = joint_chunk(ramp(0.5 + times, 0.2), 0.5)
    for executor in (clean, dirty):
        ticks(executor, 0.0, 0.52)
        assert executor.submit(good, 0.52)
    now = 0.6
    targets = ramp(now + times, 0.2)
    nan_targets = targets.copy()
    nan_targets[3, 4] = np.nan
    swapped = list(CONFIG.command_joints)
    swapped[0] = "left_shoulder_pan"
    bad = {
        ex.NON_FINITE: joint_chunk(nan_targets, now),
        ex.WRONG_DIMENSIONS: Chunk(targets[:, :13], 0.05, ex.JOINT_POSITION, list(CONFIG.command_joints[:13]), now),
        ex.WRONG_NAMES: Chunk(targets, 0.05, ex.JOINT_POSITION, swapped, now),
        ex.UNKNOWN_ACTION_SPACE: Chunk(targets, 0.05, "joint_velocity", list(CONFIG.command_joints), now),
        ex.REORDERED: joint_chunk(targets, 0.4),
        ex.STALE: joint_chunk(ramp(-0.6 + times, 0.2), now - 1.2),
        ex.FUTURE_STAMP: joint_chunk(targets, now + 0.5),
        ex.TOO_FAST: joint_chunk(targets + np.where(np.arange(20) % 2 == 0, 0.5, 0.0)[:, None] * ARM, now),
        ex.BAD_TIMING: joint_chunk(targets, now, offset=np.inf),
    }
    for reason, chunk in bad.items():
        result = dirty.submit(chunk, now)
        assert not result and result.reason == reason, (reason, result)
        assert dirty.last_rejection == result and result.detail
    # a chunk whose every action elapsed while it was computed
    elapsed = joint_chunk(ramp(0.55 + 0.01 * np.arange(3), 0.2), 0.55, dt=0.01)
    assert dirty.submit(elapsed, now).reason == ex.STALE
    assert dirty.counters.rejected == {**{reason: 1 for reason in bad}, ex.STALE: 2}
    assert dirty.counters.accepted == 1
    for t in np.arange(0.52, 2.0, TICK):
        a, b = clean.step(t), dirty.step(t)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.velocities, b.velocities)


def test_ee_chunk_with_wrong_names_or_size_is_rejected():
    executor = ready_executor()
    names = aspace.wall_oss_names(relative=False)  # absolute names: not the relative action space
    assert executor.submit(Chunk(np.zeros((5, 26)), 0.1, ex.EE_RELATIVE, names, 0.0), 0.0).reason == ex.WRONG_NAMES
    short = Chunk(np.zeros((5, 20)), 0.1, ex.EE_RELATIVE, aspace.wall_oss_names(True)[:20], 0.0)
    assert executor.submit(short, 0.0).reason == ex.WRONG_DIMENSIONS


def test_prepared_chunk_is_checked_again_when_accepted():
    """IK runs on a worker thread between `prepare` and `accept`; whatever happened meanwhile counts."""
    executor = ready_executor()
    times = 0.05 * np.arange(10)
    older = executor.prepare(joint_chunk(ramp(0.1 + times, 0.1), 0.1), 0.1)
    newer = executor.prepare(joint_chunk(ramp(0.2 + times, 0.1), 0.2), 0.2)
    assert older and newer
    assert executor.accept(newer, 0.2)
    assert executor.accept(older, 0.21).reason == ex.REORDERED
    late = executor.prepare(joint_chunk(ramp(0.3 + times, 0.1), 0.3), 0.3)
    assert executor.accept(late, 0.3 + 0.5).reason == ex.STALE


# ------------------------------------------------------------------------ end-effector action space

def ee_chunk_from_joint_motion(reference, joint_targets, stamp, dt):
    """Relative Wall-OSS actions that encode FK of `joint_targets` relative to FK(reference)."""
    poses = [KINEMATICS.ee_poses(q) for q in joint_targets]
    per_arm = {arm: np.array([p[arm] for p in poses]) for arm in aspace.ARMS}
    grippers = {arm: joint_targets[:, KINEMATICS.gripper_index(arm)] for arm in aspace.ARMS}
    actions = aspace.poses_to_relative_actions(per_arm, grippers, KINEMATICS.ee_poses(reference))
    return Chunk(actions, dt, ex.EE_RELATIVE, aspace.wall_oss_names(relative=True), stamp), per_arm


@given(offsets=hnp.arrays(float, (2, 14), elements=st.floats(-0.25, 0.25)), latency=st.floats(0.0, 0.2))
@settings(max_examples=8, deadline=None)
def test_ee_relative_chunk_reaches_its_targets(offsets, latency):
    """Reachable targets (FK of a joint motion) come out of IK and out of the command stream."""
    home = CONFIG.home_positions()
    executor = ready_executor(positions=home)
    executor.on_joint_state(1.0, home)
    horizon, dt = 30, 0.05
    blend = np.linspace(0, 1, horizon)[:, None]
    motion_targets = home + (1 - blend) * offsets[0] * 0.2 + blend * offsets[1]
    for arm in aspace.ARMS:
        motion_targets[:, KINEMATICS.gripper_index(arm)] = 0.02 + 0.01 * blend[:, 0]
    chunk, target_poses = ee_chunk_from_joint_motion(home, motion_targets, 1.0, dt)
    now = 1.0 + latency
    prepared = executor.prepare(chunk, now)
    assert prepared, prepared
    for k in range(horizon):
        reached = KINEMATICS.ee_poses(prepared.targets[k])
        for arm in aspace.ARMS:
            np.testing.assert_allclose(reached[arm], target_poses[arm][k], atol=2e-3)
            assert prepared.targets[k, KINEMATICS.gripper_index(arm)] == pytest.approx(motion_targets[k, 6])
    assert executor.accept(prepared, now)
    # joint targets linear in time: the smoothed curve goes through them, and once the command is on
    # it every remaining action is reached at its time (but the last one, where the brake takes over)
    on_chunk, checked = False, 0
    action_times = chunk.action_times()
    for t in np.arange(1.0 + np.ceil(latency / TICK) * TICK, action_times[-1] - TICK / 2, TICK):  # action grid
        command = executor.step(t)
        on_chunk = on_chunk or command.source == "chunk"
        k = np.flatnonzero(np.abs(action_times - t) < 1e-9)
        if on_chunk and len(k):
            reached = KINEMATICS.ee_poses(command.positions)
            for arm in aspace.ARMS:
                np.testing.assert_allclose(reached[arm], target_poses[arm][k[0]], atol=2e-3)
            checked += 1
    assert checked > 0


def test_ee_reference_is_the_joint_state_measured_at_the_chunk_stamp():
    home = CONFIG.home_positions()
    moved = home.copy()
    moved[KINEMATICS.arm_slice("left")] += 0.2
    executor = ready_executor(positions=home)
    for t in np.arange(0.01, 1.0, 0.01):
        executor.on_joint_state(t, home if t < 0.5 else moved)
    # zero relative motion = "stay where the end-effector was at the observation"
    still = np.zeros((10, aspace.WALL_OSS_DIM))
    for arm in aspace.ARMS:
        still[:, aspace.arm_block(arm).start + 3] = 1.0  # identity rotation in 6D: rows (1,0,0), (0,1,0)
        still[:, aspace.arm_block(arm).start + 7] = 1.0
        still[:, aspace.arm_block(arm).start + 9] = 0.02
    early = executor.prepare(Chunk(still, 0.1, ex.EE_RELATIVE, aspace.wall_oss_names(True), 0.3), 0.95)
    late = executor.prepare(Chunk(still, 0.1, ex.EE_RELATIVE, aspace.wall_oss_names(True), 0.9), 0.95)
    np.testing.assert_allclose(KINEMATICS.ee_poses(early.targets[0])["left"], KINEMATICS.ee_poses(home)["left"],
                               atol=1e-3)
    np.testing.assert_allclose(KINEMATICS.ee_poses(late.targets[0])["left"], KINEMATICS.ee_poses(moved)["left"],
                               atol=1e-3)


def test_ee_chunk_without_a_reference_state_or_unreachable_is_rejected():
    home = CONFIG.home_positions()
    executor = ready_executor(t=0.0, positions=home, max_chunk_age=2.0, joint_history_duration=2.0)
    executor.on_joint_state(1.0, home)
    still = np.zeros((4, aspace.WALL_OSS_DIM))
    for arm in aspace.ARMS:
        still[:, aspace.arm_block(arm).start + 3] = 1.0
        still[:, aspace.arm_block(arm).start + 7] = 1.0
    names = aspace.wall_oss_names(True)
    # joint states at 0.0 and 1.0 only: nothing measured within max_reference_gap of 0.5
    gap = executor.submit(Chunk(still, 0.2, ex.EE_RELATIVE, names, 0.5), 1.0)
    assert gap.reason == ex.NO_REFERENCE_STATE
    far = still.copy()
    far[:, 0] = 2.0  # 2 m beyond the left tool: out of reach
    unreachable = executor.submit(Chunk(far, 0.2, ex.EE_RELATIVE, names, 1.0), 1.0)
    assert unreachable.reason == ex.IK_FAILED and "left" in unreachable.detail
    degenerate = still.copy()
    degenerate[:, 3:9] = 0.0
    assert executor.submit(Chunk(degenerate, 0.2, ex.EE_RELATIVE, names, 1.0), 1.0).reason == ex.NON_FINITE


def test_targets_beyond_the_joint_limits_are_clipped():
    executor = ready_executor(max_speed_factor=100.0)
    targets = np.tile(CONFIG.home_positions(), (30, 1))
    targets[:, 2] = 5.0  # elbow far above its limit
    assert executor.submit(joint_chunk(targets, 0.0), 0.0)
    commands = ticks(executor, 0.0, 1.4)
    assert_within_limits(commands)
    assert commands[-1].positions[2] == pytest.approx(KINEMATICS.limits.upper[2])


# --------------------------------------------------------------- fuzzed edge cases (issue 10, measured)

def test_a_chunk_of_absurd_magnitude_is_rejected_not_clipped_and_executed():
    executor = ready_executor()
    targets = np.tile(CONFIG.home_positions(), (10, 1))
    targets[:, 2] = 1e12
    result = executor.submit(joint_chunk(targets, 0.0), 0.0)
    assert result.reason == ex.OUT_OF_RANGE and "left_elbow_joint" in result.detail
    assert executor.counters.rejected == {ex.OUT_OF_RANGE: 1} and executor.running_chunk is None
    for command in ticks(executor, 0.0, 0.2):
        np.testing.assert_array_equal(command.positions, CONFIG.home_positions())


def test_action_times_that_collapse_in_float64_are_a_counted_rejection_not_an_exception():
    epoch = 1.767e9  # a real ROS stamp: 1e-9 s steps vanish at this magnitude
    executor = ready_executor(t=epoch)
    chunk = joint_chunk(np.tile(CONFIG.home_positions(), (32, 1)), epoch, dt=1e-9)
    assert len(set(chunk.action_times())) < chunk.horizon
    result = executor.prepare(chunk, epoch + 0.01)
    assert result.reason == ex.BAD_TIMING and "float64" in result.detail
    assert executor.accept(result, epoch + 0.01).reason == ex.BAD_TIMING
    assert executor.counters.rejected == {ex.BAD_TIMING: 1}


def test_prepare_never_raises_an_unexpected_error_becomes_a_counted_rejection():
    executor = ready_executor()
    chunk = joint_chunk(ramp(0.05 * np.arange(10), 0.1), 0.0)
    chunk.actions = None  # a malformed object (Chunk is a plain mutable dataclass)
    result = executor.prepare(chunk, 0.0)
    assert result.reason == ex.PREPARE_FAILED and "AttributeError" in result.detail
    assert executor.accept(result, 0.0).reason == ex.PREPARE_FAILED
    assert executor.submit(joint_chunk(ramp(0.05 * np.arange(10), 0.1), 0.0), 0.0)  # and it goes on


def test_first_action_offset_is_bounded_so_nothing_extrapolates_past_the_limits():
    executor = ready_executor()
    targets = ramp(10.0 + 0.05 * np.arange(20), 0.3)
    result = executor.submit(joint_chunk(targets, 0.0, offset=10.0), 0.0)
    assert result.reason == ex.BAD_TIMING and "first action offset" in result.detail
    assert executor.submit(joint_chunk(ramp(0.05 * np.arange(60), 0.1), 0.0, offset=-1.5), 0.0).reason == ex.BAD_TIMING
    assert executor.submit(joint_chunk(ramp(-0.1 + 0.05 * np.arange(60), 0.1), 0.0, offset=-0.1), 0.0)  # allowed
    for command in ticks(executor, 0.0, 1.0):
        assert np.all(command.positions >= KINEMATICS.limits.lower) and np.all(command.positions <= KINEMATICS.limits.upper)


def test_chunk_age_is_checked_again_at_accept():
    executor = ready_executor()
    prepared = executor.prepare(joint_chunk(ramp(0.05 * np.arange(60), 0.1), 0.0), 0.1)
    assert prepared
    # IK on the worker thread took long: by `accept` the observation is older than max_chunk_age
    result = executor.accept(prepared, executor.config.max_chunk_age + 0.01)
    assert result.reason == ex.STALE and "old" in result.detail


def test_after_pause_and_resume_an_older_chunk_is_not_accepted_again():
    executor = ready_executor()
    executor.set_instruction("wipe", 0.0)
    newer = joint_chunk(ramp(0.5 + 0.05 * np.arange(40), 0.1), 0.5, instruction="wipe")
    older = joint_chunk(ramp(0.3 + 0.05 * np.arange(40), 0.1), 0.3, instruction="wipe")
    assert executor.submit(newer, 0.55)
    executor.set_instruction("", 0.6)
    executor.set_instruction("wipe", 0.7)
    assert executor.running_chunk is None
    assert executor.submit(older, 0.75).reason == ex.REORDERED


def test_a_future_stamped_joint_state_is_refused_and_does_not_poison_the_history():
    executor = ready_executor(t=1.0)
    with pytest.raises(ValueError, match="ahead of the clock"):
        executor.on_joint_state(100.0, CONFIG.home_positions(), now=1.01)
    executor.on_joint_state(1.01, CONFIG.home_positions() + 0.01, now=1.01)  # later, correct stamps still go in
    np.testing.assert_array_equal(executor.history.latest()[1], CONFIG.home_positions() + 0.01)


def test_the_clock_going_back_holds_without_a_step_then_resumes_on_fresh_data():
    executor = ready_executor()
    times = 0.05 * np.arange(80)
    assert executor.submit(joint_chunk(ramp(times, 0.5), 0.0), 0.0)
    before = ticks(executor, 0.0, 1.5)
    # ROS time steps back 1 s (a bag restarted, a sim reset)
    after = ticks(executor, 0.5, 1.5)
    assert executor.counters.clock_jumps == 1
    # the command goes on from where it was as if the ticks were TICK apart: within every limit
    assert_within_limits(before + after)
    assert {c.source for c in after} == {"hold"} and np.all(after[-1].velocities == 0)
    # fresh data on the new time line: joint states and a chunk stamped after the jump are accepted
    executor.on_joint_state(1.5, after[-1].positions, now=1.5)
    assert executor.submit(joint_chunk(ramp(1.5 + times, 0.5) + (after[-1].positions - ramp([1.5], 0.5)[0]), 1.5),
                           1.5)
    assert executor.step(1.5 + TICK).source in ("transition", "chunk")
