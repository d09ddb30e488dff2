"""E-stop latency across processes: e-stop message sent → first hold command observed.

Three processes over real DDS (isolated domain, localhost):
  * the safety supervisor node (200 Hz, namespace /wall_oss);
  * a driver (this script with --driver) that feeds joint states and a moving candidate stream at
    200 Hz and, once the supervisor has been tracking for a while and the wrist is moving fast, sends
    `estop: true` and, right after, its CLOCK_MONOTONIC send time on `estop_sent`; then releases the
    e-stop, resets it through the service and waits for tracking again;
  * this process, which only listens: left arm commands, SafetyStatus and the send times, each
    stamped with CLOCK_MONOTONIC on arrival (one clock for all processes on a machine).
The hold command is the first command received after the send from which on the wrist speed falls by
exactly one acceleration step per command down to zero and stays there (tracking never does that while
the candidate keeps moving). A trial whose last command before the send already belonged to such a
braking (the output was decelerating at the limit to catch a late candidate) cannot be timed and is
counted as excluded. Reported: p50 / p99 / max of that latency and of the first ESTOP status.

Last line: `estop_latency_p99_ms=X.X`.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RATE = 200.0
PERIOD = 1.0 / RATE
WRIST = 4                   # left_wrist_yaw_joint: rotates the tool about its own axis, far from any box face
AMPLITUDE, OMEGA = 0.5, 2.0  # rad, rad/s → at most 1 rad/s and 2 rad/s^2 (a third of the limit)


def _ros_environment(domain: int) -> dict:
    env = os.environ.copy()
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds.xml"), PYTHONPATH=str(REPO))
    return env


def run_driver(trials: int) -> int:
    """Feed the supervisor and press the e-stop `trials` times, each while the wrist moves fast."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Bool, Float64
    from std_srvs.srv import Trigger

    from wall_oss.msg import SafetyStatus
    from wall_oss_core.robot_config import default_config_path, load_robot_config
    from wall_oss_ros.conversions import vector_to_joint_state

    robot = load_robot_config(default_config_path())
    home, names = robot.home_positions(), robot.command_joints
    rclpy.init()
    node = rclpy.create_node("estop_driver")
    joints = node.create_publisher(type(vector_to_joint_state([], [])), "/joint_states", 10)
    candidates = node.create_publisher(type(vector_to_joint_state([], [])), "/wall_oss/candidate_command", 10)
    estop = node.create_publisher(Bool, "/wall_oss/estop", 10)
    sent = node.create_publisher(Float64, "/wall_oss/estop_sent", 10)
    reset = node.create_client(Trigger, "/wall_oss/reset_estop")
    # since when the supervisor has been tracking (OK or LIMITING: late candidates flip between them)
    state = {"name": "", "since": time.monotonic()}

    def on_status(msg):
        tracking_before = state["name"] in ("OK", "LIMITING")
        if msg.state_name != state["name"] and not (tracking_before and msg.state_name in ("OK", "LIMITING")):
            state["since"] = time.monotonic()
        state["name"] = msg.state_name

    node.create_subscription(SafetyStatus, "/wall_oss/safety_status", on_status, 10)
    start = time.monotonic()
    selector = np.arange(len(names)) == WRIST

    def feed():
        t = time.monotonic() - start
        stamp = node.get_clock().now().to_msg()
        joints.publish(vector_to_joint_state(names, home, stamp=stamp))
        candidates.publish(vector_to_joint_state(names, home + selector * AMPLITUDE * math.sin(OMEGA * t),
                                                 selector * AMPLITUDE * OMEGA * math.cos(OMEGA * t), stamp=stamp))

    node.create_timer(PERIOD, feed)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_until(condition, timeout):
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.005)
        return condition()

    done = 0
    try:
        if not spin_until(lambda: sent.get_subscription_count() > 0 and estop.get_subscription_count() > 0, 30.0):
            print("driver: the supervisor or the probe never subscribed", file=sys.stderr)
            return 1
        while done < trials:
            tracking = lambda: (state["name"] in ("OK", "LIMITING")  # noqa: E731
                                and time.monotonic() - state["since"] > 0.3)
            fast = lambda: abs(math.cos(OMEGA * (time.monotonic() - start))) > 0.7  # noqa: E731
            if not spin_until(lambda: tracking() and fast(), 60.0):
                print(f"driver: supervisor not tracking (state {state['name']!r}); giving up", file=sys.stderr)
                return 1
            estop.publish(Bool(data=True))
            sent.publish(Float64(data=time.monotonic()))
            spin_until(lambda: state["name"] == "ESTOP", 5.0)
            # hold a while: braking from the fastest candidate (1 rad/s, more while catching up) takes < 0.3 s
            spin_until(lambda: time.monotonic() - state["since"] > 0.5, 1.0)
            estop.publish(Bool(data=False))
            future, deadline = None, time.monotonic() + 30.0
            while state["name"] not in ("OK", "LIMITING"):
                if time.monotonic() > deadline:
                    print(f"driver: e-stop not reset (state {state['name']!r}); giving up", file=sys.stderr)
                    return 1
                if future is None or future.done():
                    future = reset.call_async(Trigger.Request())
                spin_until(lambda: future.done(), 1.0)
            done += 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def measure(trials: int) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64, Float64MultiArray

    from wall_oss.msg import SafetyStatus
    from wall_oss_core.kinematics import BimanualKinematics
    from wall_oss_core.robot_config import default_config_path, load_robot_config

    limits = BimanualKinematics(load_robot_config(default_config_path())).limits
    speed_step = limits.acceleration[WRIST] * PERIOD  # rad/s per command when braking
    domain = 100 + os.getpid() % 100
    env = _ros_environment(domain)
    os.environ.update(env)
    supervisor = subprocess.Popen([sys.executable, "-m", "wall_oss_ros.safety_supervisor_node", "--ros-args",
                                   "-r", "__ns:=/wall_oss", "-p", f"command_rate:={RATE}"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("estop_latency_probe")
    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    commands, statuses, sends = [], [], []
    node.create_subscription(Float64MultiArray, "/left_arm_controller/commands",
                             lambda m: commands.append((time.monotonic(), m.data[WRIST])), reliable)
    node.create_subscription(SafetyStatus, "/wall_oss/safety_status",
                             lambda m: statuses.append((time.monotonic(), m.state_name)), reliable)
    node.create_subscription(Float64, "/wall_oss/estop_sent", lambda m: sends.append(m.data), reliable)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    driver = subprocess.Popen([sys.executable, __file__, "--driver", "--trials", str(trials)], env=env,
                              start_new_session=True)
    try:
        while driver.poll() is None:
            executor.spin_once(timeout_sec=0.01)
        drained = time.monotonic() + 1.0  # what the driver sent last is still on its way
        while time.monotonic() < drained:
            executor.spin_once(timeout_sec=0.01)
    finally:
        for process in (driver, supervisor):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                process.wait(10)
        node.destroy_node()
        rclpy.try_shutdown()
    if driver.returncode != 0 or len(sends) < trials:
        print(f"driver failed (exit {driver.returncode}, {len(sends)} e-stops sent)", file=sys.stderr)
        return 1

    times = np.array([t for t, _ in commands])
    positions = np.array([p for _, p in commands])
    speeds = np.abs(np.diff(positions)) / PERIOD  # speed of command i+1 w.r.t. command i

    def braking(i: int) -> bool:
        """Command i is one acceleration step slower than the one before (or at rest like it), and so
        are all the next ones down to zero, which then holds for 5 commands."""
        k = i - 1  # speeds[k] is the speed of command i
        if k < 1:
            return False
        while True:
            if k >= len(speeds) or abs(speeds[k] - max(speeds[k - 1] - speed_step, 0.0)) > 1e-6:
                return False
            if speeds[k] < 1e-9:
                return bool(np.all(speeds[k:k + 5] < 1e-9)) and k + 5 <= len(speeds)
            k += 1

    command_ms, status_ms, braking_from, excluded, unidentified = [], [], [], 0, 0
    for send, next_send in zip(sends, sends[1:] + [math.inf]):
        after = np.flatnonzero((times > send) & (times < next_send))  # this trial's commands
        status_ms.append(1e3 * next(t - send for t, name in statuses if t > send and name == "ESTOP"))
        if braking(after[0] - 1):
            excluded += 1
            continue
        hold = next((i for i in after if braking(i)), None)
        if hold is None:  # no exact braking to a hold in this trial (e.g. commands cut short): not timed
            unidentified += 1
            continue
        command_ms.append(1e3 * (times[hold] - send))
        braking_from.append(speeds[hold - 2])

    def summary(values):
        return f"p50 {np.percentile(values, 50):6.2f} ms   p99 {np.percentile(values, 99):6.2f} ms   max {max(values):6.2f} ms"

    print(f"{len(sends)} e-stops, {len(command_ms)} timed while the wrist moved at {min(braking_from):.2f}.."
          f"{max(braking_from):.2f} rad/s, {excluded} excluded (already braking), {unidentified} without an "
          f"identifiable braking; supervisor at {RATE:g} Hz "
          f"(one period = {PERIOD * 1e3:g} ms)")
    if len(command_ms) < 50:
        print(f"warning: only {len(command_ms)} timed e-stops; run more --trials for a meaningful p99")
    print(f"e-stop sent → first braking command received:  {summary(command_ms)}")
    print(f"e-stop sent → first ESTOP SafetyStatus:         {summary(status_ms)}")
    print(f"estop_latency_p99_ms={np.percentile(command_ms, 99):.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=70, help="e-stops to send (at least 50 timed for a p99)")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return run_driver(args.trials) if args.driver else measure(args.trials)


if __name__ == "__main__":
    raise SystemExit(main())
