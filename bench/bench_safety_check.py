"""Cost of one safety check per command: `SafetySupervisor.on_candidate` + `tick` (a jerk-limited ruckig
piece towards the candidate, the jerk-limited stop after it checked against the position limits and,
through forward kinematics, the workspace boxes; following error against the measured state) vs the
plain `np.clip` to the position limits that most ROS wrappers stop at, timed side by side in
interleaved blocks on the same candidate stream. The measured state is the previous command (an
ideal servo).

Last line: `safety_check_us=X.X` (median per command).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from wall_oss_core.control.safety import SafetyConfig, SafetySupervisor
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

PERIOD = 0.005


def candidate_stream(home: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth bimanual motion from rest (every arm joint swings 0.3 rad, up to 0.6 rad/s, with zero
    acceleration at the start) and its velocities: feasible, so the supervisor passes it unchanged and
    the timing is of the common case."""
    t = PERIOD * np.arange(1, count + 1)[:, None]
    direction = np.array([1, -1, 1, -1, 1, 1, 0] * 2)[None, :]
    wave = 1.0 - np.cos(2.0 * t)
    return home + direction * 0.075 * wave ** 2, direction * 0.3 * wave * np.sin(2.0 * t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=4000, help="commands per method")
    parser.add_argument("--block", type=int, default=200, help="commands per interleaved block")
    args = parser.parse_args()

    kinematics = BimanualKinematics(load_robot_config(default_config_path()))
    home = kinematics.config.home_positions()
    positions, velocities = candidate_stream(home, args.commands)
    lower, upper = kinematics.limits.lower, kinematics.limits.upper
    supervisor = SafetySupervisor(kinematics, SafetyConfig(period=PERIOD, candidate_timeout=1.0, joint_state_timeout=1.0))
    supervisor.on_joint_state(0.0, home)

    safety_ns, clip_ns, states, limits = [], [], {}, set()
    for start in range(0, args.commands, args.block):
        for k in range(start, min(start + args.block, args.commands)):
            now = PERIOD * (k + 1)
            supervisor.on_joint_state(now, supervisor.output[0])
            begin = time.perf_counter_ns()
            supervisor.on_candidate(now, positions[k], velocities[k])
            out = supervisor.tick(now)
            safety_ns.append(time.perf_counter_ns() - begin)
            states[out.state.name] = states.get(out.state.name, 0) + 1
            limits.update(out.active_limits)
        for k in range(start, min(start + args.block, args.commands)):
            begin = time.perf_counter_ns()
            np.clip(positions[k], lower, upper)
            clip_ns.append(time.perf_counter_ns() - begin)

    safety_us = statistics.median(safety_ns) / 1e3
    clip_us = statistics.median(clip_ns) / 1e3
    p99 = np.percentile(safety_ns, 99) / 1e3
    print(f"commands: {args.commands} per method, states {states}, limits that acted: {sorted(limits) or 'none'}")
    print(f"safety check (on_candidate + tick, 2 FK):    p50 {safety_us:8.1f} us   p99 {p99:8.1f} us")
    print(f"np.clip to position limits (baseline):       p50 {clip_us:8.1f} us")
    print(f"ratio safety / clip: {safety_us / clip_us:.1f}x; share of a {PERIOD * 1e3:g} ms command period: "
          f"{100 * safety_us / (PERIOD * 1e6):.1f} %")
    print(f"safety_check_us={safety_us:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
