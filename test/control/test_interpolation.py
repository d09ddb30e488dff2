"""Trajectory pieces of the chunk executor: the smoothed chunk curve and the ruckig segments."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wall_oss_core.control.interpolation import (
    SNAP,
    ChunkCurve,
    MotionLimits,
    plan_correction,
    plan_rest_at,
    plan_stop,
    plan_tracking,
)

LIMITS = MotionLimits(lower=np.array([-2.0, -2.0, 0.0]), upper=np.array([2.0, 2.0, 0.04]),
                      velocity=np.array([2.0, 3.0, 0.1]), acceleration=np.array([6.0, 6.0, 0.5]),
                      jerk=np.array([60.0, 60.0, 5.0]))
TICK = 0.005


def real(low, high):
    return st.floats(low, high, allow_nan=False, allow_subnormal=False)


def sampled(segment, start, stop):
    times = np.arange(start, stop, TICK)
    return times, np.array([segment.state(t)[0] for t in times])


def assert_finite_differences_within(positions, limits, slack=1.0):
    for order, bound in ((1, limits.velocity), (2, limits.acceleration), (3, limits.jerk)):
        differences = np.abs(np.diff(positions, n=order, axis=0)) / TICK ** order
        assert np.all(differences <= slack * bound * (1 + 1e-6) + 1e-9), (order, np.max(differences / bound))


# --------------------------------------------------------------------------------------- ChunkCurve

@given(hnp.arrays(float, (4, 2), elements=real(-0.5, 0.5)), st.sampled_from([0.02, 0.033, 0.1]),
       st.integers(4, 40))
@settings(deadline=None)
def test_curve_reproduces_any_cubic_motion_exactly(coefficients, dt, horizon):
    times = 3.0 + dt * np.arange(horizon)
    s = (times - times[0])[:, None]
    targets = coefficients[0] + coefficients[1] * s + coefficients[2] * s ** 2 + coefficients[3] * s ** 3
    limits = MotionLimits(np.full(2, -1e3), np.full(2, 1e3), np.ones(2), np.ones(2), np.ones(2))
    curve = ChunkCurve(times, targets, 0.25, limits)
    for t in np.linspace(times[0], times[-1], 23)[:-1]:
        position, velocity, acceleration = curve.state(t)
        u = t - times[0]
        np.testing.assert_allclose(position, coefficients[0] + coefficients[1] * u + coefficients[2] * u ** 2
                                   + coefficients[3] * u ** 3, atol=1e-9)
        np.testing.assert_allclose(velocity, coefficients[1] + 2 * coefficients[2] * u + 3 * coefficients[3] * u ** 2,
                                   atol=1e-7)
        np.testing.assert_allclose(acceleration, 2 * coefficients[2] + 6 * coefficients[3] * u, atol=1e-5)


def test_curve_averages_per_action_noise_away():
    """32 actions at 30 Hz with 2 mrad independent noise: the fit is 2-3x closer to the motion than
    the actions are, and its acceleration stays near the motion's (a naive spline through the
    actions would have ~ noise / dt^2 = 2 rad/s^2 of noise)."""
    rng = np.random.default_rng(7)
    times = np.arange(32) / 30.0
    truth = 0.3 * np.sin(np.pi * times)
    limits = MotionLimits(np.array([-2.0]), np.array([2.0]), np.array([2.0]), np.array([6.0]), np.array([60.0]))
    errors, accelerations = [], []
    for _ in range(200):
        curve = ChunkCurve(times, (truth + rng.normal(0, 0.002, 32))[:, None], 0.25, limits)
        errors.append([curve.state(t)[0][0] - value for t, value in zip(times, truth)])
        accelerations.append(curve.peak_acceleration[0])
    assert np.sqrt(np.mean(np.square(errors))) < 0.5 * 0.002
    assert np.percentile(accelerations, 95) < 0.3 * np.pi ** 2 + 0.5


def test_curve_peaks_bound_its_sampled_derivatives():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.02, 0.1, 30))
    curve = ChunkCurve(times, rng.uniform(-1, 1, (30, 3)), 0.2,
                       MotionLimits(np.full(3, -9.0), np.full(3, 9.0), np.ones(3), np.ones(3), np.ones(3)))
    probe = np.linspace(times[0], times[-1], 3001)[:-1]  # at `end` it is at rest
    states = [curve.state(t) for t in probe]
    assert np.all(np.max([np.abs(v) for _, v, _ in states], axis=0) <= curve.peak_velocity + 1e-9)
    assert np.all(np.max([np.abs(a) for _, _, a in states], axis=0) <= curve.peak_acceleration * 1.01 + 1e-9)
    jerk = np.abs(np.diff([a for _, _, a in states], axis=0)) / np.diff(probe)[:, None]
    assert np.all(jerk <= curve.peak_jerk + 1e-6)


def test_curve_ends_short_chunks_and_limits():
    times = np.array([1.0, 1.1, 1.2])
    curve = ChunkCurve(times, np.array([[0.0, 0.0, 0.01], [0.1, 0.0, 0.02], [0.2, 0.0, 0.05]]), 0.25, LIMITS)
    # before the first action: linear with the start velocity; after the last: at rest
    np.testing.assert_allclose(curve.state(0.9)[0][0], curve.state(1.0)[0][0] - 0.1 * curve.state(1.0)[1][0])
    assert np.all(curve.state(5.0)[1] == 0) and np.all(curve.state(5.0)[2] == 0)
    # the gripper's last target lies beyond its limit: clipped, and not moving there
    position, velocity, acceleration = curve.state(1.2)
    assert position[2] == 0.04 and velocity[2] == 0 and acceleration[2] == 0
    single = ChunkCurve(np.array([2.0]), np.array([[0.5, 0.5, 0.02]]), 0.25, LIMITS)
    np.testing.assert_array_equal(single.state(1.0)[0], [0.5, 0.5, 0.02])
    assert np.all(single.peak_velocity == 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        ChunkCurve(np.array([0.0, 0.0]), np.zeros((2, 3)), 0.25, LIMITS)
    with pytest.raises(ValueError, match="need K times"):
        ChunkCurve(np.array([0.0, 1.0]), np.zeros(2), 0.25, LIMITS)


# ------------------------------------------------------------------------------------ ruckig segments

errors = st.tuples(hnp.arrays(float, 3, elements=real(-0.5, 0.5)), hnp.arrays(float, 3, elements=real(-1.0, 1.0)),
                   hnp.arrays(float, 3, elements=real(-3.0, 3.0)))


@given(errors)
@settings(max_examples=60, deadline=None)
def test_correction_drives_any_error_to_zero_within_its_budgets(error):
    # a start the limits can hold: speed at most half the limit, so the acceleration can be jerked
    # away before it carries the speed past the limit
    error = (error[0], np.minimum(np.abs(error[1]), 0.5 * LIMITS.velocity) * np.sign(error[1]),
             np.minimum(np.abs(error[2]), LIMITS.acceleration) * np.sign(error[2]))
    segment = plan_correction(1.0, error, LIMITS.velocity, LIMITS.acceleration, LIMITS.jerk)
    start = segment.state(1.0)
    for value, expected, snap in zip(start, error, SNAP):  # rounding-size errors count as zero
        np.testing.assert_allclose(value, np.where(np.abs(expected) < snap, 0.0, expected), atol=1e-9)
    _, positions = sampled(segment, 1.0, segment.end + 0.05)
    assert_finite_differences_within(positions, LIMITS)
    assert all(np.all(part == 0) for part in segment.state(segment.end + 0.01)[1:])
    np.testing.assert_allclose(segment.state(segment.end + 0.01)[0], 0.0, atol=1e-7)  # ruckig's precision


def test_correction_of_rounding_noise_is_exactly_nothing():
    """ruckig plans erratic profiles for 1e-14 inputs; such errors are zero."""
    tiny = (np.full(3, 1e-15), np.full(3, 1.5e-14), np.full(3, -2e-14))
    segment = plan_correction(0.0, tiny, LIMITS.velocity, LIMITS.acceleration, LIMITS.jerk)
    assert segment.trajectory.duration == 0
    assert np.all(segment.state(0.01)[0] == 0)


@given(hnp.arrays(float, 3, elements=real(-1.5, 1.5)), hnp.arrays(float, 3, elements=real(-1.0, 1.0)))
@settings(max_examples=60, deadline=None)
def test_stop_brakes_to_rest_within_the_limits_and_never_past_a_position_limit(position, velocity):
    position = np.clip(position, LIMITS.lower, LIMITS.upper)
    velocity = np.clip(velocity, -LIMITS.velocity, LIMITS.velocity)
    segment = plan_stop(0.0, (position, velocity, np.zeros(3)), LIMITS)
    _, positions = sampled(segment, 0.0, segment.end + 0.05)
    assert_finite_differences_within(positions, LIMITS)
    rest = segment.state(segment.end + 1.0)
    assert np.all(rest[1] == 0) and np.all(rest[2] == 0)
    assert np.all(rest[0] >= LIMITS.lower - 1e-9) and np.all(rest[0] <= LIMITS.upper + 1e-9)


def test_tracking_and_rest_reach_their_targets_within_the_limits():
    state = (np.array([0.0, 0.5, 0.02]), np.zeros(3), np.zeros(3))
    target = (np.array([0.3, 0.5, 0.03]), np.array([0.5, 0.0, 0.0]), np.zeros(3))
    segment = plan_tracking(0.0, state, target, 0.1, LIMITS)
    assert segment.end >= 0.1
    np.testing.assert_allclose(segment.state(segment.end)[0], target[0], atol=1e-9)
    np.testing.assert_allclose(segment.state(segment.end)[1], target[1], atol=1e-9)
    _, positions = sampled(segment, 0.0, segment.end)
    assert_finite_differences_within(positions, LIMITS)
    rest = plan_rest_at(0.0, state, np.array([5.0, 0.5, 0.02]), LIMITS)  # beyond the limit: at the limit
    np.testing.assert_allclose(rest.state(rest.end)[0], [2.0, 0.5, 0.02], atol=1e-9)


def test_limits_admit_only_states_within_every_bound():
    previous = (np.zeros(3), np.zeros(3), np.zeros(3))
    assert LIMITS.admits(previous, (np.array([0.0, 0.0, 0.01]), np.zeros(3), np.array([0.2, 0.2, 0.02])), TICK)
    assert not LIMITS.admits(previous, (np.array([3.0, 0.0, 0.01]), np.zeros(3), np.zeros(3)), TICK)
    assert not LIMITS.admits(previous, (np.array([0.0, 0.0, 0.01]), np.array([2.5, 0, 0]), np.zeros(3)), TICK)
    assert not LIMITS.admits(previous, (np.array([0.0, 0.0, 0.01]), np.zeros(3), np.array([1.0, 0, 0])), TICK)
