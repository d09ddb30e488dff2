"""Trajectory pieces of the chunk executor: the spline, the stitch blend and the stop profile."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wall_oss_core.control.interpolation import (
    Blend,
    HermiteSpline,
    StopProfile,
    blend_duration,
    finite_difference_velocities,
)


def real(low, high):
    """Floats in [low, high] without subnormals (they only test float underflow, not the maths)."""
    return st.floats(low, high, allow_nan=False, allow_subnormal=False)


finite = real(-2.0, 2.0)


def knots(min_size=2, max_size=12, joints=3):
    """Strictly increasing times (steps 0.01..0.2 s) and positions in [-2, 2]."""
    return st.integers(min_size, max_size).flatmap(lambda k: st.tuples(
        hnp.arrays(float, k, elements=real(0.01, 0.2)).map(lambda steps: np.cumsum(steps)),
        hnp.arrays(float, (k, joints), elements=finite)))


@given(knots())
@settings(deadline=None)
def test_spline_passes_through_every_target_with_continuous_velocity(data):
    times, positions = data
    spline = HermiteSpline.through(times, positions)
    for k, t in enumerate(times):
        position, velocity = spline.evaluate(t)
        np.testing.assert_allclose(position, positions[k], atol=1e-9)
        # left and right limits agree (C1 at every knot); tolerances scale with the largest slope /
        # curvature the knots allow over the tiny probe distance
        eps = 1e-9
        steepest = 4.0 / np.min(np.diff(times))
        before, after = spline.evaluate(t - eps), spline.evaluate(t + eps)
        np.testing.assert_allclose(before[0], after[0], atol=4 * eps * steepest + 1e-12)
        np.testing.assert_allclose(before[1], after[1], atol=24 * eps * steepest / np.min(np.diff(times)) + 1e-9)


@given(knots(), real(0.0, 1.0))
@settings(deadline=None)
def test_spline_velocity_is_the_derivative_of_its_position(data, fraction):
    times, positions = data
    spline = HermiteSpline.through(times, positions)
    t = times[0] + fraction * (times[-1] - times[0])
    eps = 1e-6
    numeric = (spline.evaluate(t + eps)[0] - spline.evaluate(t - eps)[0]) / (2 * eps)
    # the curve is C1, not C2: at a knot the central difference is off by up to eps x the jump in
    # acceleration, which is at most 2 x 48 / h_min^2 for positions in [-2, 2]
    curvature = 96.0 / np.min(np.diff(times)) ** 2
    np.testing.assert_allclose(spline.evaluate(t)[1], numeric, rtol=1e-4, atol=1e-4 + eps * curvature)


@given(real(-1, 1), real(-3, 3), st.integers(2, 10), real(0.01, 0.2))
@settings(deadline=None)
def test_spline_reproduces_constant_velocity_motion(offset, speed, count, dt):
    times = 10.0 + dt * np.arange(count)
    positions = (offset + speed * (times - times[0]))[:, None]
    spline = HermiteSpline.through(times, positions)
    for t in np.linspace(times[0] - dt, times[-1] + dt, 17):
        position, velocity = spline.evaluate(t)
        assert position[0] == pytest.approx(offset + speed * (t - times[0]), abs=1e-9)
        assert velocity[0] == pytest.approx(speed, abs=1e-9)


@given(knots())
@settings(deadline=None)
def test_max_speed_bounds_the_sampled_speed_and_is_reached(data):
    times, positions = data
    spline = HermiteSpline.through(times, positions)
    probe_times = np.concatenate([np.linspace(a, b, 60) for a, b in zip(times[:-1], times[1:])])
    samples = np.array([spline.evaluate(t)[1] for t in probe_times])
    bound = spline.max_speed()
    assert np.all(np.abs(samples) <= bound + 1e-9)
    # sampled at 60 points per segment the peak is close to the analytic one
    assert np.all(np.max(np.abs(samples), axis=0) >= 0.9 * bound - 1e-6)


def test_finite_differences_are_centred_inside_and_one_sided_at_the_ends():
    times = np.array([0.0, 1.0, 3.0])
    positions = np.array([[0.0], [1.0], [5.0]])
    np.testing.assert_allclose(finite_difference_velocities(times, positions)[:, 0], [1.0, 5.0 / 3.0, 2.0])
    assert np.all(finite_difference_velocities(times[:1], positions[:1]) == 0)


def test_spline_rejects_bad_knots():
    with pytest.raises(ValueError, match="strictly increasing"):
        HermiteSpline.through([0.0, 0.0], [[0.0], [1.0]])
    with pytest.raises(ValueError, match="need K times"):
        HermiteSpline.through([0.0, 1.0], [0.0, 1.0])


offsets = hnp.arrays(float, 4, elements=real(-0.5, 0.5))
velocity_offsets = hnp.arrays(float, 4, elements=real(-2.0, 2.0))


@given(offsets, velocity_offsets, real(0.05, 0.3))
@settings(max_examples=60, deadline=None)
def test_blend_starts_at_the_offset_and_decays_within_its_budgets(e, ev, minimum):
    acceleration_budget = np.array([3.0, 3.0, 3.0, 0.25])
    velocity_budget = np.array([1.0, 1.0, 1.5, 0.05])
    duration = blend_duration(e, ev, acceleration_budget, velocity_budget, minimum, 100.0)
    assert duration >= minimum
    blend = Blend(5.0, duration, e, ev)
    position, velocity = blend.evaluate(5.0)
    np.testing.assert_allclose(position, e)
    np.testing.assert_allclose(velocity, ev)
    for t in (blend.end, blend.end + 1.0):
        assert np.all(blend.evaluate(t)[0] == 0) and np.all(blend.evaluate(t)[1] == 0)
    ts = np.linspace(5.0, blend.end, 801)
    samples = np.array([blend.evaluate(t) for t in ts])
    accelerations = np.diff(samples[:, 1], axis=0) / np.diff(ts)[:, None]
    assert np.all(np.abs(accelerations) <= acceleration_budget * (1 + 1e-6) + 1e-9)
    # beyond the unavoidable initial velocity offset, catching up adds at most the velocity budget
    assert np.all(np.abs(samples[:, 1]) <= np.abs(ev) + velocity_budget * (1 + 1e-6) + 1e-9)


def test_blend_duration_is_capped_and_floored():
    zero = np.zeros(2)
    assert blend_duration(zero, zero, np.ones(2), np.ones(2), 0.1, 1.0) == 0.1
    assert blend_duration(np.array([10.0, 0.0]), zero, np.ones(2), np.ones(2), 0.1, 1.0) == 1.0


@given(hnp.arrays(float, 3, elements=real(-2, 2)), hnp.arrays(float, 3, elements=real(-3, 3)))
@settings(deadline=None)
def test_stop_profile_decelerates_all_joints_together_to_rest(position, velocity):
    deceleration = np.array([4.0, 4.0, 0.4])
    stop = StopProfile.from_state(1.0, position, velocity, deceleration)
    np.testing.assert_allclose(stop.evaluate(1.0)[0], position, atol=1e-12)
    np.testing.assert_allclose(stop.evaluate(1.0)[1], velocity, atol=1e-12)
    end = 1.0 + stop.duration
    # the slowest joint (relative to its budget) brakes at exactly its budget
    assert stop.duration == pytest.approx(np.max(np.abs(velocity) / deceleration))
    ts = np.linspace(1.0, end + 0.5, 600)
    samples = np.array([stop.evaluate(t) for t in ts])
    accelerations = np.diff(samples[:, 1], axis=0) / np.diff(ts)[:, None]
    assert np.all(np.abs(accelerations) <= deceleration * (1 + 1e-6) + 1e-9)
    # speeds only decrease, never change sign, and reach zero together at the end
    assert np.all(np.diff(np.abs(samples[:, 1]), axis=0) <= 1e-12)
    assert np.all(samples[:, 1] * velocity >= -1e-12)
    after = ts > end
    assert np.all(samples[after, 1] == 0)
    # constant deceleration: the rest position is half the initial velocity times the stopping time further
    rest = position + 0.5 * velocity * stop.duration
    np.testing.assert_allclose(samples[after, 0], np.broadcast_to(rest, samples[after, 0].shape), atol=1e-12)
