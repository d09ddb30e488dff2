"""The executor stays on target over a simulated chunk stream (simulated clock, no timing): chunk
periods 30 ms .. 1 s, inference delays 5 .. 40 % of the period, 2 mrad per-action noise."""
import numpy as np
import pytest
from conftest import ROBOT_CONFIG

from wall_oss_core.control.executor import ChunkExecutor
from wall_oss_core.control.stream_simulation import ChunkStream, StreamConfig, run_executor
from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

CONFIG = load_robot_config(ROBOT_CONFIG)
KINEMATICS = BimanualKinematics(CONFIG)
ARM = ~np.isin(CONFIG.command_joints, CONFIG.gripper_joints)
NOISE = 0.002


def stream(period, delay_fraction, offset_sigma=0.0, duration=8.0):
    # enough actions to cover the period and the delay (32 at 30 Hz = 1.07 s)
    horizon = max(32, int(np.ceil((1 + delay_fraction) * period * 30)) + 4)
    config = StreamConfig(period=period, delay=delay_fraction * period, horizon=horizon, offset_sigma=offset_sigma,
                          noise_sigma=NOISE, duration=duration)
    return ChunkStream(config, CONFIG.home_positions(), ARM, CONFIG.command_joints)


@pytest.mark.parametrize("period", [0.03, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("delay_fraction", [0.05, 0.4])
def test_per_action_noise_does_not_drift_the_command_off_the_policy_trajectory(period, delay_fraction):
    """Issue 10: at 50 ms chunk periods the old executor wandered 0.27 rad off (RMS 0.063) on noise
    alone. Here the RMS distance to the motion the chunks predict stays within 2x the per-action noise,
    in every 2 s window (no accumulation)."""
    chunks = stream(period, delay_fraction)
    positions = run_executor(ChunkExecutor(KINEMATICS), chunks)
    errors = (positions - chunks.motion(chunks.ticks()))[:, ARM]
    windows = errors[: len(errors) // 400 * 400].reshape(-1, 400, ARM.sum())
    # the first 2 s hold the robot still until the first chunk arrives (0.4 s at a 1 s period, 40 %
    # delay) while the motion already moves, then converge: that start is not tracking
    window_rms = np.sqrt(np.mean(windows[1:] ** 2, axis=(1, 2)))
    assert np.all(window_rms <= 2 * NOISE), window_rms
    assert np.max(np.abs(errors[400:])) < 10 * NOISE


@pytest.mark.parametrize("period", [0.5, 1.0])
def test_after_a_transition_the_command_is_on_the_newest_chunk(period):
    """With per-chunk offsets (0.02 rad) the command converges onto each new chunk: in the last 30 % of
    every period it is within 2x the per-action noise of the newest chunk's noise-free trajectory."""
    chunks = stream(period, 0.2, offset_sigma=0.02)
    positions = run_executor(ChunkExecutor(KINEMATICS), chunks)
    ticks = chunks.ticks()
    errors = (positions - chunks.newest_reference(ticks))[:, ARM]
    since_arrival = (ticks - 0.2 * period) % period
    settled = (since_arrival > 0.7 * period) & (ticks > period)
    assert np.sqrt(np.mean(errors[settled] ** 2)) <= 2 * NOISE
