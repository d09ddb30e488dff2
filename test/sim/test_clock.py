"""The simulated clock the sim publishes on /clock: it advances by the physics steps, scaled by the
real-time factor, and a stalled process resumes instead of jumping."""
from __future__ import annotations

import pytest

from wall_oss_core.sim.clock import SimulatedClock


def test_clock_advances_by_scaled_steps_and_caps_stalls():
    clock = SimulatedClock(1000.0, real_time_factor=0.5, max_step=0.05)
    assert clock.advance(0.004) == pytest.approx(0.002)
    assert clock.advance(2.0) == pytest.approx(0.025)  # a 2 s stall: at most max_step of wall time counts
    assert clock.advance(-1.0) == 0.0  # time never runs backwards
    assert clock.now == pytest.approx(1000.027)


@pytest.mark.parametrize("factor", [0.0, -1.0, float("nan"), 11.0])
def test_clock_refuses_a_meaningless_real_time_factor(factor):
    with pytest.raises(ValueError, match="real_time_factor"):
        SimulatedClock(0.0, real_time_factor=factor)
