"""E-stop latency across processes: e-stop message sent → first ESTOP status and first hold command.

Two processes over real DDS (isolated domain, localhost): the safety supervisor node (200 Hz,
namespace /wall_oss) and this script, which feeds joint states and a candidate stream, presses the
e-stop (std_msgs/Bool on /wall_oss/estop), listens to /left_arm_controller/commands and
/wall_oss/safety_status, and resets through the reset_estop service. Arrival times are the DDS
reception stamps of each sample (MessageInfo.received_timestamp, system clock, taken by the
middleware's receive thread), so this script's own Python scheduling does not inflate them; the send
time is the same clock read right before publishing.

How the hold command is told apart from tracking, without ambiguity: the candidate ramps ONE joint
(left wrist yaw, which turns the tool about its own axis) up at a constant speed v = half an
acceleration step per tick (0.015 rad/s) for the whole run, stamped, from near its lower limit. With
the supervisor's extrapolation reach (0.5 s) longer than its candidate timeout (0.25 s), every
candidate it tracks, late or not, gives the same target: an exact, increasing linear function of tick
time. Tracking such a target never moves the joint slower than v (skipped ticks on a loaded machine
only make it catch up faster) and never slows down by more than half a step per tick (the approach
deceleration), and the target never reverses. Braking, from any state, lowers the speed by exactly
one full step per tick and then stands still. So per trial the hold command is the first command of
the final standstill, followed back through exact full-step decreases when the output was catching up
when the e-stop came. Each identification is cross-checked with the supervisor's own DDS source
stamps (the command before the hold was published before the first ESTOP status, the hold command
after it; the e-stop callback publishes that status at once, the braking tick comes after), commands
are checked for gaps with the DDS publication sequence numbers, and any HOLD/FAULT status before the
ESTOP one (a watchdog brake) disqualifies the trial. The first ESTOP status is the one whose
estop_count is one more than before the trial. After each reset the output catches up with the ramp;
the next e-stop waits until the supervisor has been tracking for `settle` seconds.

A trial that misses any check or deadline is counted as failed with its reason, never dropped.
Reference measured in the same run: the round trip of a no-op reset_estop service call (sent while
the e-stop is not latched) between the same two processes, timed in this script.

Last line: `estop_latency_p99_ms=X.XX` (e-stop sent → first hold command received, p99).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WRIST = "left_wrist_yaw_joint"  # turns the tool about its own axis: no workspace face nearby
ARM_CONTROLLER = "left_arm_controller"
TRACKING_STATES = ("OK", "LIMITING")


@dataclass(frozen=True)
class BenchConfig:
    trials: int = 100
    command_rate: float = 200.0          # [Hz] the supervisor's default
    feed_rate: float = 100.0             # [Hz] joint states and candidates
    candidate_timeout: float = 0.25      # [s] supervisor watchdogs, widened so a starved machine seldom
    joint_state_timeout: float = 0.5     #     trips them (a trip is visible in the status: failed trial)
    max_extrapolation_ticks: int = 100   # 0.5 s: a candidate is always extrapolated up to its timeout
    settle: float = 0.25                 # [s] tracking this long before each e-stop
    hold_commands: int = 12              # commands observed after the first ESTOP status
    commands_before: int = 40            # commands before the e-stop kept for following a braking run back
    trial_timeout: float = 3.0           # [s] deadline of each wait inside a trial
    startup_timeout: float = 60.0        # [s] supervisor start and first tracking
    time_budget: float = 105.0           # [s] whole run; trials not started by then count as failed

    @property
    def period(self) -> float:
        return 1.0 / self.command_rate


@dataclass
class Trial:
    status_ms: float | None = None
    command_ms: float | None = None
    tick_wait_ms: float | None = None    # supervisor side: ESTOP status published → hold command published
    braking_commands: int = 0            # hold command to standstill (1 when tracking at v)
    ping_ms: float | None = None
    failure: str | None = None


@dataclass
class Received:
    """Every left-arm command and status, in arrival order, with their DDS stamps [ns]."""

    command_seq: list = field(default_factory=list)
    command_received: list = field(default_factory=list)
    command_source: list = field(default_factory=list)
    command_wrist: list = field(default_factory=list)
    statuses: list = field(default_factory=list)  # (received, source, state_name, estop_count)


def _ros_environment(domain: int) -> dict:
    env = os.environ.copy()
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds.xml"), PYTHONPATH=str(REPO),
               RCUTILS_COLORIZED_OUTPUT="0")
    return env


def identify_hold(window: slice, received: Received, send_ns: int, status_source_ns: int, speed: float,
                  speed_step: float, period: float) -> tuple[int | None, int, str]:
    """(index of the first hold command of one trial, commands until the standstill, "") or
    (None, 0, why it cannot be timed); see the module docstring for the rule."""
    if np.any(np.diff(received.command_seq[window]) != 1):
        return None, 0, "commands lost (sequence gap)"
    u = np.diff(received.command_wrist[window]) / period  # u[i]: wrist speed of command i + 1
    tolerance = 1e-6 * speed_step
    moving = np.flatnonzero(np.abs(u) > tolerance)
    if moving.size == 0:
        return None, 0, "already holding before the e-stop"
    standstill = first = int(moving[-1]) + 1  # the first command of the final standstill
    if first == u.size:
        return None, 0, "no hold command"
    last_speed = u[first - 1]
    braked_before = first >= 2 and abs(u[first - 2] - last_speed - speed_step) <= tolerance
    if not (0 < last_speed <= speed_step + tolerance and (last_speed >= speed - tolerance or braked_before)):
        return None, 0, "the standstill was not reached by braking"
    while first >= 2 and abs(u[first - 2] - u[first - 1] - speed_step) <= tolerance:
        first -= 1  # the output was catching up faster than the candidate: the braking began earlier
    if first < 2:
        return None, 0, "the braking run starts before the observed commands"
    hold = window.start + first + 1
    if received.command_received[hold] <= send_ns:
        return None, 0, "already braking when the e-stop was sent"
    if not received.command_source[hold - 1] < status_source_ns <= received.command_source[hold]:
        return None, 0, "hold command and ESTOP status out of order at the supervisor"
    return hold, standstill - first + 1, ""


def run(config: BenchConfig) -> int:
    with tempfile.TemporaryFile("w+", prefix="estop_bench_supervisor_", suffix=".log") as supervisor_log:
        return measure(config, supervisor_log)


def measure(config: BenchConfig, log) -> int:
    """Start the supervisor (its output goes to `log`), run the trials, report."""
    env = _ros_environment(100 + os.getpid() % 100)
    os.environ.update(env)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, Float64MultiArray
    from std_srvs.srv import Trigger
    from wall_oss.msg import SafetyStatus

    from wall_oss_core.robot.config import default_config_path, load_robot_config
    from wall_oss_core.robot.kinematics import BimanualKinematics
    from wall_oss_ros.conversions import seconds_to_stamp, vector_to_joint_state

    robot = load_robot_config(default_config_path())
    names, home = robot.command_joints, robot.home_positions()
    wrist = names.index(WRIST)
    limits = BimanualKinematics(robot).limits
    arm_index = robot.arm("left").joints.index(WRIST)
    speed_step = limits.acceleration[wrist] * config.period
    speed = speed_step / 2
    selector = np.arange(len(names)) == wrist
    ramp_start = limits.lower[wrist] + 0.1
    longest_run = config.time_budget + 4 * config.trial_timeout  # the last trial may start just in budget
    if ramp_start + speed * longest_run > limits.upper[wrist]:
        raise ValueError(f"the wrist ramp does not fit in its range for a {config.time_budget:g} s budget")
    started = time.monotonic()

    params = {"command_rate": config.command_rate, "candidate_timeout": config.candidate_timeout,
              "joint_state_timeout": config.joint_state_timeout,
              "max_extrapolation_ticks": config.max_extrapolation_ticks}
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "wall_oss_ros.safety_supervisor_node", "--ros-args", "-r", "__ns:=/wall_oss",
         *(arg for key, value in params.items() for arg in ("-p", f"{key}:={value}"))],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    rclpy.init()
    node = rclpy.create_node("estop_latency_bench")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    listening = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    joint_states = node.create_publisher(JointState, "/joint_states", reliable)
    candidates = node.create_publisher(JointState, "/wall_oss/candidate_command", reliable)
    estop = node.create_publisher(Bool, "/wall_oss/estop", reliable)
    reset = node.create_client(Trigger, "/wall_oss/reset_estop")
    received = Received()

    def on_command(msg, info):
        received.command_seq.append(info["publication_sequence_number"])
        received.command_received.append(info["received_timestamp"])
        received.command_source.append(info["source_timestamp"])
        received.command_wrist.append(msg.data[arm_index])

    def on_status(msg, info):
        received.statuses.append((info["received_timestamp"], info["source_timestamp"], msg.state_name,
                                  msg.estop_count))

    node.create_subscription(Float64MultiArray, f"/{ARM_CONTROLLER}/commands", on_command, listening)
    node.create_subscription(SafetyStatus, "/wall_oss/safety_status", on_status, listening)
    # the robot stands with the wrist at the start of the ramp (the supervisor's output starts there);
    # the candidate ramps the wrist up from there at `speed` for the whole run
    standing = np.where(selector, ramp_start, home)
    ramp_since = time.time()

    def feed():
        now = time.time()
        stamp = seconds_to_stamp(now)
        joint_states.publish(vector_to_joint_state(names, standing, stamp=stamp))
        candidates.publish(vector_to_joint_state(names, np.where(selector, ramp_start + speed * (now - ramp_since), home),
                                                 selector * speed, stamp=stamp))

    node.create_timer(1.0 / config.feed_rate, feed)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or supervisor.poll() is not None:
                return False
            executor.spin_once(timeout_sec=0.005)
        return True

    def tracking_for(seconds: float) -> bool:
        """The latest statuses, back to `seconds` ago, all say tracking."""
        if not received.statuses or received.statuses[-1][2] not in TRACKING_STATES:
            return False
        since = time.time_ns() - int(seconds * 1e9)
        for arrival, _, state, _ in reversed(received.statuses):
            if state not in TRACKING_STATES:
                return False
            if arrival < since:
                return True
        return False

    def call(request_timeout: float):
        """reset_estop once: (response or None on timeout, round trip [ms])."""
        begin = time.perf_counter()
        future = reset.call_async(Trigger.Request())
        if not spin_until(future.done, request_timeout):
            reset.remove_pending_request(future)
            return None, 0.0
        return future.result(), 1e3 * (time.perf_counter() - begin)

    def run_trial() -> Trial:
        trial = Trial()
        if not spin_until(lambda: tracking_for(config.settle), config.trial_timeout):
            state = received.statuses[-1][2] if received.statuses else "none"
            trial.failure = f"supervisor not tracking before the e-stop (state {state})"
            return trial
        first_status = len(received.statuses)  # all statuses of the last `settle` s said tracking
        response, trial.ping_ms = call(config.trial_timeout)
        if response is None:
            trial.failure = "reference reset_estop call timed out"
            return trial
        first_command = max(0, len(received.command_seq) - config.commands_before)
        count_before = received.statuses[-1][3]
        send_ns = time.time_ns()
        estop.publish(Bool(data=True))

        def estop_status():
            return next((s for s in received.statuses[first_status:] if s[2] == "ESTOP"), None)

        observed = spin_until(lambda: estop_status() is not None and sum(
            t > estop_status()[0] for t in received.command_received[-config.hold_commands:]) >= config.hold_commands,
            config.trial_timeout)
        status = estop_status()
        estop.publish(Bool(data=False))
        if not observed:
            trial.failure = "no ESTOP status" if status is None else "too few commands after the ESTOP status"
        elif status[3] != count_before + 1:
            trial.failure = f"ESTOP status counts {status[3]} e-stops, expected {count_before + 1}"
        elif any(s[2] not in TRACKING_STATES for s in received.statuses[first_status:]
                 if s[0] < status[0]):
            trial.failure = "watchdog hold before the ESTOP status"
        else:
            trial.status_ms = 1e-6 * (status[0] - send_ns)
            hold, trial.braking_commands, why = identify_hold(slice(first_command, len(received.command_seq)), received, send_ns, status[1],
                                      speed, speed_step, config.period)
            if hold is None:
                trial.failure = why
            else:
                trial.command_ms = 1e-6 * (received.command_received[hold] - send_ns)
                trial.tick_wait_ms = 1e-6 * (received.command_source[hold] - status[1])
        deadline = time.monotonic() + config.trial_timeout
        while time.monotonic() < deadline:
            response, _ = call(max(0.01, deadline - time.monotonic()))
            if response is not None and response.success:
                return trial
            spin_until(lambda: False, 0.01)  # the release may not have reached the supervisor yet
        trial.failure = trial.failure or "reset_estop did not succeed in time"
        return trial

    trials: list[Trial] = []
    try:
        ready = spin_until(lambda: estop.get_subscription_count() > 0 and candidates.get_subscription_count() > 0
                           and reset.service_is_ready() and tracking_for(config.settle), config.startup_timeout)
        if not ready:
            log.seek(0)
            print(f"the supervisor did not start tracking within {config.startup_timeout:g} s "
                  f"(exit code {supervisor.poll()}); its log:\n{log.read()}", file=sys.stderr)
            return 1
        for _ in range(config.trials):
            if time.monotonic() - started > config.time_budget:
                trials.append(Trial(failure="not run: time budget spent"))
            elif supervisor.poll() is not None:
                trials.append(Trial(failure=f"supervisor exited ({supervisor.returncode})"))
            else:
                trials.append(run_trial())
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGINT)
            try:
                supervisor.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(supervisor.pid, signal.SIGKILL)
                supervisor.wait()
    return report(trials, config, speed, time.monotonic() - started)


def report(trials: list[Trial], config: BenchConfig, speed: float, elapsed: float) -> int:
    def summary(values):
        return (f"p50 {np.percentile(values, 50):6.2f} ms   p99 {np.percentile(values, 99):6.2f} ms   "
                f"max {max(values):6.2f} ms   (n={len(values)})")

    timed = [t for t in trials if t.command_ms is not None]
    failures = Counter(t.failure for t in trials if t.failure is not None)
    print(f"{len(trials)} e-stops in {elapsed:.0f} s, supervisor at {config.command_rate:g} Hz (one tick = "
          f"{config.period * 1e3:g} ms), wrist tracking at {speed:.3f} rad/s; {len(timed)} timed, "
          f"{sum(failures.values())} failed" + "".join(f"\n  failed: {n}× {why}" for why, n in failures.items()))
    if not timed:
        print("no trial could be timed", file=sys.stderr)
        return 1
    if len(timed) < 50:
        print(f"warning: only {len(timed)} timed e-stops; the p99 is not meaningful")
    status = [t.status_ms for t in trials if t.status_ms is not None]
    command = [t.command_ms for t in timed]
    ping = [t.ping_ms for t in trials if t.ping_ms is not None]
    print(f"e-stop sent → first ESTOP SafetyStatus received:      {summary(status)}")
    print(f"e-stop sent → first hold command received:            {summary(command)}")
    print(f"  of which the supervisor's wait for its next tick:   {summary([t.tick_wait_ms for t in timed])}")
    runs = Counter(t.braking_commands for t in timed)
    print("braking runs (hold command → standstill): " + ", ".join(
        f"{length} command{'s' * (length > 1)} in {n}" for length, n in sorted(runs.items())))
    print(f"reference: no-op reset_estop service round trip:      {summary(ping)}")
    print(f"hold command / service round trip: p50 {np.percentile(command, 50) / np.percentile(ping, 50):.2f}×"
          f"   p99 {np.percentile(command, 99) / np.percentile(ping, 99):.2f}×")
    print(f"estop_latency_p99_ms={np.percentile(command, 99):.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=BenchConfig.trials, help="e-stops to send (>= 50 for a p99)")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return run(BenchConfig(trials=args.trials))


if __name__ == "__main__":
    raise SystemExit(main())
