"""Live replay timing: how closely `wall-oss replay` keeps a bag's message spacing, at rate 1 and rate 2.

Plays a synthetic bag (joint states at 50 Hz, the test suite's generator) with `wall-oss replay
--topics /joint_states --no-compare` in its own process, timestamps every joint state as it arrives in
this process, and compares arrival times with the bag's stamps divided by the rate (after removing the
median offset). Reports |lag| p50 / p90 / max, the median arrival period and the span ratio per rate,
side by side. (The test suite asserts only order, completeness and that playback never runs ahead.)

    .venv/bin/python bench/bench_live_replay.py [--seconds 5]

Last line: live_replay_lag_p50_ms_rate1=<median |lag| at rate 1>.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))  # the synthetic bag generator the tests use

from synthetic_bags import write_synthetic_bag  # noqa: E402

RATES = (1.0, 2.0)


def measure(bag: Path, out: Path, rate: float) -> dict[str, float]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_live_replay", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    arrivals = []
    node.create_subscription(JointState, "/joint_states", lambda msg: arrivals.append(
        (time.monotonic(), msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)),
        QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    resume = node.create_client(Trigger, "/wall_oss_replay/resume")
    player = subprocess.Popen([sys.executable, "-m", "wall_oss_ros.cli_replay", "--bag", str(bag), "--out", str(out),
                               "--topics", "/joint_states", "--no-compare", "--rate", str(rate), "--drain", "0.2",
                               "--start-paused"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (resume.service_is_ready() and node.count_publishers("/joint_states") > 0):
            executor.spin_once(timeout_sec=0.05)
            if time.monotonic() > deadline:
                raise RuntimeError("the replay did not come up")
        future = resume.call_async(Trigger.Request())
        while player.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.01)
    finally:
        if player.poll() is None:
            player.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert future.done() and player.returncode == 0, "the replay failed"
    times = np.array([a for a, _ in arrivals])
    stamps = np.array([s for _, s in arrivals])
    expected = (stamps - stamps[0]) / rate
    lag = (times - times[0]) - expected
    lag = np.abs(lag - np.median(lag)) * 1e3
    return {"messages": float(len(times)), "lag_p50_ms": float(np.median(lag)),
            "lag_p90_ms": float(np.percentile(lag, 90)), "lag_max_ms": float(lag.max()),
            "period_p50_ms": float(np.median(np.diff(times)) * 1e3), "nominal_period_ms": 20.0 / rate,
            "span_ratio": float((times[-1] - times[0]) / expected[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="bag duration")
    args = parser.parse_args()
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds.xml"))
    with tempfile.TemporaryDirectory() as scratch:
        bag = write_synthetic_bag(Path(scratch) / "bag", duration=args.seconds, with_chunks=False).path
        results = {rate: measure(bag, Path(scratch) / f"out_{rate:g}", rate) for rate in RATES}
    keys = list(results[RATES[0]])
    print(f"{'':22}" + "".join(f"{f'rate {rate:g}':>14}" for rate in RATES))
    for key in keys:
        print(f"{key:22}" + "".join(f"{results[rate][key]:14.3f}" for rate in RATES))
    print(f"live_replay_lag_p50_ms_rate1={results[1.0]['lag_p50_ms']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
