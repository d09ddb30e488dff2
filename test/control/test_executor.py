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
    with pytest.raises(ValueError, match="blend_time must be a positive number"):
        ExecutorConfig(blend_time=-0.1)
    with pytest.raises(ValueError, match="max_blend_time"):
        ExecutorConfig(blend_time=0.5, max_blend_time=0.2)
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


# ----------------------------------------------------------------------------- alignment and skipping

@given(latency=st.floats(0.0, 0.4), dt=st.sampled_from([0.02, 0.033, 0.05, 0.1]),
       offset=st.floats(0.0, 0.1), speed=st.floats(-0.3, 0.3))
@settings(max_examples=40, deadline=None)
def test_actions_elapsed_during_inference_are_skipped_not_replayed(latency, dt, offset, speed):
    """Two chunks of the same motion; the second arrives `latency` after its observation. The command
    stays on the motion exactly: no snap back to the second chunk's first (stale) targets."""
    executor = ready_executor()
    horizon = int(1.0 / dt)
    long_horizon = int(2.0 / dt)  # still running when the second chunk arrives
    first = joint_chunk(ramp(offset + dt * np.arange(long_horizon), speed), 0.0, dt, offset)
    executor.submit(first, 0.0)
    # let the first chunk settle onto the motion, then deliver the second one late
    stamp = 1.0
    now = stamp + latency
    ticks(executor, 0.0, stamp)
    second = joint_chunk(ramp(stamp + offset + dt * np.arange(horizon), speed), stamp, dt, offset)
    accepted = executor.submit(second, now)
    expected_skipped = sum(1 for k in range(horizon) if stamp + offset + k * dt <= now)
    assert accepted and accepted.skipped_actions == expected_skipped
    for t in np.arange(now, second.action_times()[-1], TICK):
        command = executor.step(t)
        np.testing.assert_allclose(command.positions, ramp([t], speed)[0], atol=1e-9)


@given(latency=st.floats(0.0, 0.3), dt=st.sampled_from([0.033, 0.05, 0.1]), offset=st.floats(0.0, 0.1),
       targets=hnp.arrays(float, (12, 14), elements=st.floats(-0.3, 0.3)))
@settings(max_examples=40, deadline=None)
def test_after_the_blend_every_remaining_action_is_hit_at_its_time(latency, dt, offset, targets):
    executor = ready_executor(max_speed_factor=100.0)
    targets = CONFIG.home_positions() + targets * np.where(np.isin(CONFIG.command_joints, CONFIG.gripper_joints),
                                                           0.05, 1.0)
    chunk = joint_chunk(targets, 0.5, dt, offset)
    accepted = executor.submit(chunk, 0.5 + latency)
    assert accepted
    lower, upper = KINEMATICS.limits.lower, KINEMATICS.limits.upper
    for time, target in zip(chunk.action_times(), targets):
        if time >= 0.5 + latency + accepted.blend_duration:
            command = executor.step(time)
            # at the last action the chunk is over and the stop (from that exact state) takes over
            assert command.source == ("chunk" if time < chunk.action_times()[-1] else "hold")
            np.testing.assert_allclose(command.positions, np.clip(target, lower, upper), atol=1e-9)


# ------------------------------------------------------------------------- stitching (property based)

AMPLITUDE = 0.08
FREQUENCY = 2 * np.pi * 0.5


def motion(t, phase):
    """The 'true' motion successive chunks predict (with their own offsets)."""
    grippers = np.isin(CONFIG.command_joints, CONFIG.gripper_joints)
    amplitude = np.where(grippers, 0.004, AMPLITUDE)
    return CONFIG.home_positions() + amplitude * np.sin(FREQUENCY * np.asarray(t)[..., None] + phase)


chunk_events = st.lists(st.tuples(
    st.floats(0.01, 0.5),                            # gap since the previous arrival [s]
    st.floats(0.0, 0.3),                             # inference latency (arrival - stamp) [s]
    st.sampled_from([0.02, 0.033, 0.05, 0.1]),      # time step
    st.integers(1, 30),                              # horizon
    st.floats(0.0, 0.1),                             # first action offset
    hnp.arrays(float, 14, elements=st.floats(-0.05, 0.05)),  # prediction offset of this chunk
), min_size=1, max_size=6)


@given(events=chunk_events, phase=st.floats(0, 2 * np.pi))
@settings(max_examples=60, deadline=None)
def test_any_chunk_sequence_gives_a_smooth_command_stream(events, phase):
    """Chunks arrive at random times with random latencies, horizons and offsets (some reordered,
    some stale). The command never steps in position or velocity: between ticks the position moves
    as the velocities say and the velocity changes at most by an acceleration bound; at every stitch
    the command is exactly continuous; and no joint exceeds its URDF velocity limit."""
    executor = ready_executor(positions=motion(0.0, phase), max_blend_time=10.0)
    limits = KINEMATICS.limits
    grippers = np.isin(CONFIG.command_joints, CONFIG.gripper_joints)
    motion_acceleration = np.where(grippers, 0.004, AMPLITUDE) * FREQUENCY ** 2
    # the splines through samples of the motion stay within 2x its acceleration (sampled at >= 10 Hz)
    acceleration_bound = (2 * motion_acceleration + executor.config.blend_acceleration_fraction * limits.acceleration
                          + executor.config.stop_deceleration_fraction * limits.acceleration)
    arrivals = []
    t = 0.2
    for gap, latency, dt, horizon, offset, prediction_offset in events:
        t += gap
        stamp = max(t - latency, 0.0)
        times = stamp + offset + dt * np.arange(horizon)
        prediction_offset = np.where(grippers, 0.0, prediction_offset)
        chunk = joint_chunk(motion(times, phase) + prediction_offset, stamp, dt, offset)
        arrivals.append((t, chunk))
    commands = []
    now = 0.0
    end = max(max(arrival, chunk.action_times()[-1]) for arrival, chunk in arrivals) + 1.0
    while now < end:
        while arrivals and arrivals[0][0] <= now:
            arrival, chunk = arrivals.pop(0)
            before = executor.step(arrival)
            executor.submit(chunk, arrival)
            after = executor.step(arrival)
            np.testing.assert_allclose(after.positions, before.positions, atol=1e-12)
            np.testing.assert_allclose(after.velocities, before.velocities, atol=1e-12)
        commands.append(executor.step(now))
        now += TICK
    positions = np.array([c.positions for c in commands])
    velocities = np.array([c.velocities for c in commands])
    velocity_change = np.abs(np.diff(velocities, axis=0))
    assert np.all(velocity_change <= acceleration_bound * TICK + 1e-9), np.max(velocity_change / acceleration_bound)
    trapezoid = positions[:-1] + 0.5 * TICK * (velocities[:-1] + velocities[1:])
    assert np.all(np.abs(positions[1:] - trapezoid) <= acceleration_bound * TICK ** 2 / 4 + 1e-12)
    assert np.all(np.abs(velocities) <= limits.velocity)
    assert np.all(np.abs(np.diff(positions, axis=0)) <= limits.velocity * TICK)
    # with the stream at rest in the end, the executor holds
    assert commands[-1].source == "hold" and np.all(commands[-1].velocities == 0)
    assert executor.counters.accepted + executor.counters.rejected_total == len(events)


def test_stitch_onto_a_distant_chunk_converges_within_the_blend_budgets():
    executor = ready_executor()
    target = CONFIG.home_positions()
    target[2] += 0.3  # 0.3 rad away from the held position
    chunk = joint_chunk(np.tile(target, (40, 1)), 0.0, 0.05)
    accepted = executor.submit(chunk, 0.0)
    assert accepted.blend_duration > executor.config.blend_time  # stretched by the acceleration budget
    commands = ticks(executor, 0.0, accepted.blend_duration + 0.1)
    velocities = np.array([c.velocities for c in commands])
    accelerations = np.abs(np.diff(velocities, axis=0)) / TICK
    budget = executor.config.blend_acceleration_fraction * KINEMATICS.limits.acceleration
    assert np.all(accelerations <= budget * (1 + 1e-9))
    assert {c.source for c in commands[:-30]} == {"blend"}
    assert commands[-1].source == "chunk"
    np.testing.assert_allclose(commands[-1].positions, target, atol=1e-12)


# ------------------------------------------------------------------------------------------- holding

def test_chunks_running_out_decelerate_to_a_hold_without_a_jump():
    executor = ready_executor()
    times = 0.05 * np.arange(30)
    executor.submit(joint_chunk(ramp(times, 0.4), 0.0), 0.0)
    commands = ticks(executor, 0.0, times[-1] + 1.0)
    sources = [c.source for c in commands]
    first_hold = sources.index("hold")
    assert set(sources[first_hold:]) == {"hold"}
    held = commands[first_hold:]
    speeds = np.array([np.abs(c.velocities) for c in held])
    assert np.all(np.diff(speeds, axis=0) <= 1e-12)
    decelerations = np.abs(np.diff([c.velocities for c in commands[first_hold - 1:]], axis=0)) / TICK
    assert np.all(decelerations <= executor.config.stop_deceleration_fraction * KINEMATICS.limits.acceleration + 1e-9)
    assert np.all(held[-1].velocities == 0)
    np.testing.assert_array_equal(held[-1].positions, held[-2].positions)
    # it comes to rest just past the last target: v²/(2a) further along the motion
    last_target = ramp(times[-1:], 0.4)[0]
    stopping_distance = 0.4 ** 2 / (2 * executor.config.stop_deceleration_fraction * KINEMATICS.limits.acceleration)
    assert np.all(np.abs(held[-1].positions - last_target) <= stopping_distance + 1e-9)
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
    horizon, dt = 12, 0.05
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
    accepted = executor.accept(prepared, now)
    for k, t in enumerate(chunk.action_times()):
        if t >= now + accepted.blend_duration:
            reached = KINEMATICS.ee_poses(executor.step(t).positions)
            for arm in aspace.ARMS:
                np.testing.assert_allclose(reached[arm], target_poses[arm][k], atol=2e-3)


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
    accepted = executor.submit(joint_chunk(targets, 0.0), 0.0)
    command = executor.step(accepted.blend_duration + 0.05)
    assert command.positions[2] == pytest.approx(KINEMATICS.limits.upper[2])


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
    assert executor.submit(joint_chunk(ramp(0.05 * np.arange(20), 0.1), 0.0, offset=-0.5), 0.0).reason == ex.BAD_TIMING
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
    step = np.abs(after[0].positions - before[-1].positions)
    assert np.all(step <= KINEMATICS.limits.velocity * TICK + 1e-12), np.max(step)
    stop_acceleration = executor.config.stop_deceleration_fraction * KINEMATICS.limits.acceleration
    velocities = np.array([c.velocities for c in before[-1:] + after])
    assert np.all(np.abs(np.diff(velocities, axis=0)) <= stop_acceleration * TICK + 1e-9)
    assert {c.source for c in after} == {"hold"} and np.all(after[-1].velocities == 0)
    # fresh data on the new time line: joint states and a chunk stamped after the jump are accepted
    executor.on_joint_state(1.5, after[-1].positions, now=1.5)
    assert executor.submit(joint_chunk(ramp(1.5 + times, 0.5) + (after[-1].positions - ramp([1.5], 0.5)[0]), 1.5),
                           1.5)
    assert executor.step(1.6).source in ("blend", "chunk")
