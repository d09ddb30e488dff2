"""Command period jitter at the controllers, 200 Hz vs 500 Hz, measured in one run.

Runs launch/sim.launch.yaml (simulated arm + policy replaying the scripted demonstration + chunk
executor + safety supervisor) once per rate, one after the other, and timestamps every command the
safety supervisor publishes on /left_arm_controller/commands as it arrives in this process (a
subscriber like the simulated controller, taking raw bytes so that deserialization does not add
to the measurement). Reports the period p50 / p99 / max and the jitter (|period - nominal|) p50 /
p99 / max per rate, side by side.

    .venv/bin/python bench/bench_command_jitter.py [--seconds 10] [--warmup 3]

Last line: command_jitter_p99_ms_500hz=<p99 of |period - 2 ms| at 500 Hz>.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from wall_oss_core.backends.replay import save_recording
from wall_oss_core.paths import share_file
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.demo_trajectory import DEMO_INSTRUCTION, DemoTrajectory
from wall_oss_ros.launch_plan import plan_launch
from wall_oss_ros.launch_runner import LaunchRunner

RATES = (200.0, 500.0)
COMMAND_TOPIC = "/left_arm_controller/commands"
# Cameras small and slow: the benchmark is about the command path, and on a small machine full-size
# rendering and image transport would mostly measure CPU contention.
IMAGE_SIZE = (320, 240)
CAMERA_RATE_HZ = 10.0


def measure(rate: float, replay_source: Path, seconds: float, warmup: float, log_dir: Path,
            startup_timeout: float = 120.0) -> np.ndarray:
    """Arrival times [s] of the commands over `seconds`, after the graph is up and `warmup` has passed."""
    import rclpy
    from rclpy.experimental import EventsExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String
    from wall_oss.msg import ActionChunk

    plan = plan_launch(share_file("launch/sim.launch.yaml"),
                       {"rate_hz": f"{rate:.1f}", "replay_source": str(replay_source), "backend": "replay",
                        "image_width": str(IMAGE_SIZE[0]), "image_height": str(IMAGE_SIZE[1]),
                        "camera_rate_hz": f"{CAMERA_RATE_HZ:.1f}", "robot_config": str(default_config_path())})
    runner = LaunchRunner(plan, stream=None, log_dir=log_dir / f"{rate:g}hz")
    runner.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("command_jitter_probe", context=context)
    executor = EventsExecutor(context=context)  # the lightest executor here: the probe must not be the bottleneck
    executor.add_node(node)
    arrivals: list[float] = []
    chunks = []
    node.create_subscription(Float64MultiArray, COMMAND_TOPIC, lambda _: arrivals.append(time.monotonic()),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)
    node.create_subscription(ActionChunk, "/wall_oss/action_chunk", lambda _: chunks.append(1), 10, raw=True)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_publisher(String, "/wall_oss/instruction", latched).publish(String(data=DEMO_INSTRUCTION))
    try:
        deadline = time.monotonic() + startup_timeout
        while not (arrivals and chunks):
            executor.spin_once(timeout_sec=0.05)
            dead = runner.dead_node()
            if dead is not None:
                raise RuntimeError(f"node {dead[0]} died (exit code {dead[1]}); logs in {runner.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no commands and chunks within {startup_timeout:g} s; logs in {runner.log_dir}")
        start = time.monotonic() + warmup
        while time.monotonic() < start + seconds:
            executor.spin_once(timeout_sec=0.01)
        dead = runner.dead_node()
        if dead is not None:
            raise RuntimeError(f"node {dead[0]} died during the measurement (exit code {dead[1]})")
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        runner.stop()
    times = np.asarray(arrivals)
    return times[(times >= start) & (times < start + seconds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per rate [s]")
    parser.add_argument("--warmup", type=float, default=3.0, help="time after the first command before measuring [s]")
    args = parser.parse_args()
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share_file("config/fastdds.xml")))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    results = {}
    with tempfile.TemporaryDirectory(prefix="wall_oss_jitter_") as scratch:
        scratch = Path(scratch)
        replay_source = scratch / "demo_chunks.npz"
        save_recording(replay_source, DemoTrajectory(BimanualKinematics(load_robot_config(default_config_path())))
                       .recording())
        for rate in RATES:
            print(f"measuring {rate:g} Hz for {args.seconds:g} s ...", file=sys.stderr)
            results[rate] = measure(rate, replay_source, args.seconds, args.warmup, scratch / "logs")

    print(f"command period on {COMMAND_TOPIC} (executor -> safety supervisor -> controller), "
          f"{args.seconds:g} s per rate, {os.cpu_count()} CPU cores, cameras {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} "
          f"at {CAMERA_RATE_HZ:g} Hz, load average before {os.getloadavg()[0]:.1f}")
    header = ("rate_hz", "commands", "achieved_hz", "period_p50_ms", "period_p99_ms", "period_max_ms",
              "jitter_p50_ms", "jitter_p99_ms", "jitter_max_ms", "p99/nominal")
    print(" ".join(f"{h:>13}" for h in header))
    jitter_p99 = {}
    for rate, times in results.items():
        periods = np.diff(times) * 1000.0
        nominal = 1000.0 / rate
        jitter = np.abs(periods - nominal)
        jitter_p99[rate] = float(np.percentile(jitter, 99))
        row = (rate, len(times), (len(times) - 1) / (times[-1] - times[0]), np.percentile(periods, 50),
               np.percentile(periods, 99), periods.max(), np.percentile(jitter, 50), jitter_p99[rate], jitter.max(),
               np.percentile(periods, 99) / nominal)
        print(" ".join(f"{value:>13.0f}" if i in (0, 1) else f"{value:>13.3f}" for i, value in enumerate(row)))
    print(f"jitter p99 ratio 500 Hz / 200 Hz: {jitter_p99[500.0] / jitter_p99[200.0]:.2f}")
    print(f"command_jitter_p99_ms_500hz={jitter_p99[500.0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
