"""Chunk stitching side by side on one realistic chunk stream: this executor vs the usual ways.

Stream (`wall_oss_core.control.stream_simulation`): a smooth motion (0.2 rad, 0.5 Hz, every arm joint),
32-action chunks at 30 Hz, each with its own offset (sigma 0.02 rad) and per-action noise (0.002 rad),
commands at 200 Hz; a new observation is taken when the previous chunk arrives, so the chunk period is
the inference delay (5-40 % of a chunk, rounded to whole actions). Simulated clock, no timing.

Methods (each produces the 200 Hz command stream a position controller would get):
- ours: `ChunkExecutor` (least-squares smoothing, ruckig jerk-limited switching).
- naive: the newest chunk, elapsed actions skipped, linear interpolation between its actions.
- act_te: ACT temporal ensembling (Zhao et al. 2023): every arrived prediction for an action step,
  weighted exp(-0.01 i), i = 0 for the oldest; linear interpolation between the ensembled actions.
- lerobot_async: LeRobot async inference's robot client: an action queue per step; an arriving chunk's
  actions for steps not yet executed are merged into it with the default `weighted_average`
  aggregate, 0.3 old + 0.7 new (new steps appended); executed at 30 Hz, linearly interpolated.

Per delay: p99 jerk and max acceleration (finite differences of the commanded positions, arm joints),
tracking RMS to the newest chunk's noise-free trajectory and to the motion itself.
Last line: `stitching_jerk_ratio=<best baseline's p99 jerk / ours>` (worst delay).
"""
from __future__ import annotations

import argparse

import numpy as np

from wall_oss_core.control.executor import ChunkExecutor
from wall_oss_core.control.stream_simulation import ChunkStream, StreamConfig, finite_differences, run_executor
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

HORIZON, ACTION_RATE, RATE = 32, 30.0, 200.0


def interpolate(step_times: np.ndarray, step_actions: np.ndarray, times: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(times, step_times, step_actions[:, j]) for j in range(step_actions.shape[1])], axis=1)


def naive(stream: ChunkStream) -> np.ndarray:
    positions, newest = [], None
    start = stream.motion(0.0)
    for now in stream.ticks():
        for arrival in stream.arrivals:
            if arrival.time <= now:
                newest = arrival.chunk
        if newest is None:
            positions.append(start)
        else:  # np.interp holds the first / last action outside the chunk: elapsed actions are skipped
            positions.append(interpolate(newest.action_times(), newest.actions, np.array([now]))[0])
    return np.array(positions)


def step_commands(stream: ChunkStream, actions_at_step) -> np.ndarray:
    """Commands interpolated between per-step actions, each step's action as known when it executes."""
    dt = 1.0 / ACTION_RATE
    steps = np.arange(int(stream.config.duration * ACTION_RATE) + 2)
    executed = np.array([actions_at_step(int(k), k * dt) for k in steps])
    return interpolate(steps * dt, executed, stream.ticks())


def act_temporal_ensembling(stream: ChunkStream, m: float = 0.01) -> np.ndarray:
    start = stream.motion(0.0)
    dt = 1.0 / ACTION_RATE

    def action(step, t):
        predictions = []
        for arrival in stream.arrivals:  # in arrival order: i = 0 is the oldest
            k = round((step * dt - arrival.chunk.stamp) / dt)
            if arrival.time <= t and 0 <= k < arrival.chunk.horizon:
                predictions.append(arrival.chunk.actions[k])
        if not predictions:
            return start
        weights = np.exp(-m * np.arange(len(predictions)))
        return np.average(predictions, axis=0, weights=weights)

    return step_commands(stream, action)


def lerobot_async(stream: ChunkStream, old_weight: float = 0.3) -> np.ndarray:
    dt = 1.0 / ACTION_RATE
    queue: dict[int, np.ndarray] = {}
    pending = list(stream.arrivals)
    last = stream.motion(0.0)

    def action(step, t):
        nonlocal last
        while pending and pending[0].time <= t:
            chunk = pending.pop(0).chunk
            first = round(chunk.stamp / dt)
            for k, value in enumerate(chunk.actions):
                if first + k < step:  # already executed
                    continue
                queue[first + k] = old_weight * queue[first + k] + (1 - old_weight) * value \
                    if first + k in queue else value
        if step in queue:
            last = queue.pop(step)
        return last  # an empty queue holds the last action

    return step_commands(stream, action)


def metrics(stream: ChunkStream, positions: np.ndarray, arm: np.ndarray, settle: float = 1.0) -> dict:
    ticks = stream.ticks()
    keep = ticks >= settle  # after the first chunk and the start-up
    moving = positions[:, arm]
    jerk = finite_differences(moving, RATE, 3)[keep[3:]]
    acceleration = finite_differences(moving, RATE, 2)[keep[2:]]
    to_newest = (positions - stream.newest_reference(ticks))[keep][:, arm]
    to_motion = (positions - stream.motion(ticks))[keep][:, arm]
    return {"p99_jerk": float(np.percentile(jerk, 99)), "max_acc": float(np.max(acceleration)),
            "rms_newest": float(np.sqrt(np.mean(to_newest ** 2))), "rms_motion": float(np.sqrt(np.mean(to_motion ** 2)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4],
                        help="inference delays as fractions of a chunk (rounded to whole actions)")
    parser.add_argument("--duration", type=float, default=10.0, help="simulated seconds per stream")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    robot = load_robot_config(default_config_path())
    kinematics = BimanualKinematics(robot)
    limits = kinematics.limits
    arm = ~np.isin(robot.command_joints, robot.gripper_joints)
    methods = {"ours": lambda s: run_executor(ChunkExecutor(kinematics), s), "naive": naive,
               "act_te": act_temporal_ensembling, "lerobot_async": lerobot_async}
    print(f"limits (arm joints): velocity {limits.velocity[arm].min():g}-{limits.velocity[arm].max():g} rad/s, "
          f"acceleration {limits.acceleration[arm].max():g} rad/s^2, jerk {limits.jerk[arm].max():g} rad/s^3")
    print(f"{'delay':>14} {'method':>14} {'p99 jerk':>12} {'max acc':>9} {'rms newest':>11} {'rms motion':>11}")
    ratios = []
    for fraction in args.delays:
        actions = max(1, round(fraction * HORIZON))
        delay = actions / ACTION_RATE
        stream = ChunkStream(StreamConfig(period=delay, delay=delay, horizon=HORIZON, action_rate=ACTION_RATE,
                                          command_rate=RATE, duration=args.duration, seed=args.seed),
                             robot.home_positions(), arm, robot.command_joints)
        rows = {name: metrics(stream, method(stream), arm) for name, method in methods.items()}
        for name, row in rows.items():
            print(f"{actions:3d} act {100 * actions / HORIZON:4.1f}% {name:>14} {row['p99_jerk']:12.1f} "
                  f"{row['max_acc']:9.2f} {row['rms_newest']:11.4f} {row['rms_motion']:11.4f}")
        best_baseline = min(row["p99_jerk"] for name, row in rows.items() if name != "ours")
        ratios.append(best_baseline / rows["ours"]["p99_jerk"])
        within = rows["ours"]["max_acc"] <= limits.acceleration[arm].max() + 1e-6
        print(f"{'':>14} ours within the acceleration limit: {within}; best baseline / ours p99 jerk: "
              f"{ratios[-1]:.1f}x")
    print(f"stitching_jerk_ratio={min(ratios):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
