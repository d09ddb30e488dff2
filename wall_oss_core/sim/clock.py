"""The graph's clock when the simulator is its source (`/clock`, nodes on `use_sim_time`).

On a machine that cannot run the graph in real time (this 2-core box shared with other work), a sim
that steps by the wall clock falls behind whenever it is starved, while the policy's plan and the
executor go on by the wall clock: the arm then lags its commands and a grasp closes on air. With the
sim as the clock, time is what the physics simulated: a starved sim stops time for every node, and a
real-time factor below 1 gives every process that much more wall time per simulated second."""
from __future__ import annotations

import math


class SimulatedClock:
    """Starts at `start` [s] (the wall time, so stamps look like a live robot's) and advances by each
    physics step: `real_time_factor` × the wall time since the last step, at most `max_step` [s] of
    wall time at once (a stalled process resumes instead of jumping)."""

    def __init__(self, start: float, real_time_factor: float = 1.0, max_step: float = 0.05):
        if not (math.isfinite(real_time_factor) and 0 < real_time_factor <= 10):
            raise ValueError(f"real_time_factor must be within (0, 10], got {real_time_factor}")
        self.now = float(start)
        self.real_time_factor = real_time_factor
        self.max_step = max_step

    def advance(self, wall_elapsed: float) -> float:
        """Simulated seconds for `wall_elapsed` wall seconds; the clock moves on by them."""
        step = min(max(wall_elapsed, 0.0), self.max_step) * self.real_time_factor
        self.now += step
        return step
