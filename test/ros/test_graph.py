"""Integration: launch/sim.launch.yaml through the launch runner, real processes over real DDS.

One graph serves the module (starting it costs more than the checks): the policy replays the scripted
demonstration, and the tests run in order — the arm moves; an e-stop latches and holds until the
reset service; killing the policy makes the executor and the supervisor hold without a jump (last,
as it ends the graph's usefulness).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import ROBOT_CONFIG, wait_for

from wall_oss_core.backends.replay import save_recording
from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.demo_trajectory import DEMO_INSTRUCTION, DemoTrajectory
from wall_oss_ros.launch_plan import plan_launch, resolve_launch_file
from wall_oss_ros.launch_runner import LaunchRunner

RATE_HZ = 200.0
HOLD_STATES = {2, 3}  # SafetyStatus.STATE_HOLD, STATE_ESTOP


class GraphProbe:
    """The test's window on the graph: the left arm's commands, joint states, safety status, chunks."""

    def __init__(self, robot):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, Float64MultiArray, String
        from std_srvs.srv import Trigger
        from wall_oss.msg import ActionChunk, SafetyStatus

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("graph_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.arm = robot.arm("left")
        self.commands: list[tuple[float, np.ndarray]] = []
        self.joint_state = None
        self.status = None
        self.chunks = 0
        node = self.node
        node.create_subscription(Float64MultiArray, f"/{self.arm.controller}/commands",
                                 lambda m: self.commands.append((time.monotonic(), np.array(m.data))),
                                 QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(JointState, "/joint_states", lambda m: setattr(self, "joint_state", m), 10)
        node.create_subscription(SafetyStatus, "/wall_oss/safety_status", lambda m: setattr(self, "status", m), 10)
        node.create_subscription(ActionChunk, "/wall_oss/action_chunk", lambda _: self._count_chunk(), 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.instruction = node.create_publisher(String, "/wall_oss/instruction", latched)
        self.estop = node.create_publisher(Bool, "/wall_oss/estop", 10)
        self.trigger_estop = node.create_client(Trigger, "/wall_oss/trigger_estop")
        self.reset_estop = node.create_client(Trigger, "/wall_oss/reset_estop")
        self.String, self.Bool, self.Trigger = String, Bool, Trigger

    def _count_chunk(self):
        self.chunks += 1

    def spin(self):
        self.executor.spin_once(timeout_sec=0.01)

    def wait(self, condition, timeout, message):
        wait_for(condition, timeout, poll=self.spin, message=message)

    def call(self, client, timeout=10.0):
        self.wait(client.service_is_ready, timeout, f"service {client.srv_name}")
        future = client.call_async(self.Trigger.Request())
        self.wait(future.done, timeout, f"response of {client.srv_name}")
        return future.result()

    def joint_positions(self) -> np.ndarray:
        names = list(self.joint_state.name)
        return np.array([self.joint_state.position[names.index(j)] for j in self.arm.joints])

    def commands_since(self, t0: float) -> np.ndarray:
        return np.array([values for t, values in self.commands if t >= t0])

    def moving(self, within: float) -> bool:
        """Whether the commands of the last `within` seconds changed."""
        recent = self.commands_since(time.monotonic() - within)
        return len(recent) > 2 and float(np.ptp(recent, axis=0).max()) > 1e-4

    def close(self):
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The launched sim graph (small, slow cameras to spare the CPU) and a probe node."""
    robot = load_robot_config(ROBOT_CONFIG)
    scratch = tmp_path_factory.mktemp("graph")
    replay = scratch / "demo_chunks.npz"
    save_recording(replay, DemoTrajectory(BimanualKinematics(robot)).recording())
    plan = plan_launch(resolve_launch_file("sim.launch.yaml"),
                       {"backend": "replay", "replay_source": str(replay), "rate_hz": f"{RATE_HZ:.1f}", "camera_rate_hz": "10.0",
                        "image_width": "160", "image_height": "120", "robot_config": str(ROBOT_CONFIG)})
    runner = LaunchRunner(plan, stream=None, log_dir=scratch / "logs")
    runner.start()
    probe = GraphProbe(robot)
    probe.instruction.publish(probe.String(data=DEMO_INSTRUCTION))
    try:
        yield runner, probe, robot
    finally:
        probe.close()
        runner.stop()
        # every node exits 0 on SIGINT; -9 only for a node a test killed (one that hangs on SIGINT is SIGKILLed
        # by the runner, -9 as well, and fails here)
        dead = [f"{name}: {process.returncode}" for name, process in runner.processes.items()
                if process.returncode != (-9 if name in runner.killed else 0)]
        assert not dead, f"nodes exited badly at shutdown: {dead}; logs in {scratch / 'logs'}"


def _graph_logs(runner) -> str:
    return "\n".join(f"----- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(runner.log_dir.glob("*.log")))


def _assert_smooth(probe, t0: float, limits_velocity: np.ndarray, delivery_slack: float = 0.05):
    """No jump: each command moves at most one period's motion (the supervisor advances by the measured
    time between its ticks, at most one period), and on receive times no stretch of commands moves
    faster than the velocity limit (receive times widened by the delivery jitter of a shared machine).
    The supervisor's own tests check acceleration and jerk on its tick times."""
    times = np.array([t for t, _ in probe.commands if t >= t0])
    commands = probe.commands_since(t0)[:len(times)]
    steps = np.diff(commands, axis=0)
    assert np.all(np.abs(steps) <= limits_velocity / RATE_HZ * 1.01 + 1e-9), np.abs(steps).max(axis=0)
    for gap in range(1, min(40, len(commands))):
        moved = np.abs(commands[gap:] - commands[:-gap])
        assert np.all(moved <= limits_velocity * (times[gap:] - times[:-gap] + delivery_slack)[:, None] + 1e-9)


def test_launched_graph_moves_the_simulated_arm(graph):
    runner, probe, robot = graph
    try:
        probe.wait(lambda: probe.joint_state is not None and len(probe.commands) > 10, 60,
                   "joint states and controller commands")
        home = robot.arm("left").home  # where the simulated arm starts and the demonstration leaves from
        probe.wait(lambda: probe.chunks >= 3 and np.abs(probe.joint_positions() - home).max() > 0.05, 30,
                   "the arm moving along the demonstration")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{_graph_logs(runner)}") from None
    assert probe.status is not None and probe.status.state in (0, 1)
    assert runner.dead_node() is None


def test_only_the_supervisor_publishes_to_the_controllers(graph):
    """The executor publishes candidate commands and nothing a controller listens to; the supervisor is the
    one publisher of every controller topic (as seen by DDS discovery in the launched graph)."""
    from wall_oss_core import topics

    runner, probe, robot = graph
    node = probe.node
    controller_topics = [topics.controller_topic(controller, topics.CONTROLLER_COMMANDS)
                         for arm in robot.arms for controller in (arm.controller, arm.gripper_controller)]
    candidate = topics.qualified(topics.CANDIDATE_COMMAND)

    def publishers(topic):
        return {(info.node_namespace, info.node_name) for info in node.get_publishers_info_by_topic(topic)}

    def discovered():
        return publishers(candidate) and all(publishers(topic) for topic in controller_topics)

    probe.wait(discovered, 30, "the candidate and controller publishers discovered")
    assert publishers(candidate) == {("/wall_oss", "chunk_executor")}
    for topic in controller_topics:
        assert publishers(topic) == {("/wall_oss", "safety_supervisor")}, topic
    executor_topics = {name for name, _ in node.get_publisher_names_and_types_by_node("chunk_executor", "/wall_oss")}
    assert executor_topics == {candidate, topics.DIAGNOSTICS, "/rosout", "/parameter_events"}
    assert runner.dead_node() is None


def test_estop_latches_and_holds_until_reset(graph):
    runner, probe, robot = graph
    limits = BimanualKinematics(robot).limits
    arm = BimanualKinematics(robot).arm_slice("left")
    probe.wait(lambda: probe.status is not None and probe.status.state in (0, 1), 30, "the supervisor running")
    response = probe.call(probe.trigger_estop)
    assert response.success, response.message
    latched_at = time.monotonic()
    probe.wait(lambda: probe.status.state == 3, 5, "state ESTOP")
    probe.estop.publish(probe.Bool(data=False))  # releasing the e-stop input does not clear the latch
    probe.wait(lambda: len(probe.commands_since(latched_at + 2.0)) > 100, 15, "commands while latched")
    held = probe.commands_since(latched_at + 2.0)
    assert probe.status.state == 3, probe.status.reason
    assert np.ptp(held, axis=0).max() < 1e-9  # standing still, not zeros
    assert np.abs(held[-1]).max() > 0.1
    _assert_smooth(probe, latched_at - 0.5, limits.velocity[arm])

    response = probe.call(probe.reset_estop)
    assert response.success, response.message
    reset_at = time.monotonic()
    probe.wait(lambda: probe.status.state != 3, 5, "the e-stop cleared")
    probe.wait(lambda: probe.moving(within=time.monotonic() - reset_at), 20, "the arm moving again after the reset")
    _assert_smooth(probe, latched_at - 0.5, limits.velocity[arm])
    assert runner.dead_node() is None


def test_killing_the_policy_holds_without_a_jump(graph):
    runner, probe, robot = graph
    kinematics = BimanualKinematics(robot)
    arm = kinematics.arm_slice("left")
    probe.wait(lambda: probe.moving(within=0.5), 30, "the arm in motion")
    killed_at = time.monotonic()
    runner.kill_node("policy")
    assert runner.dead_node() == ("policy", -9)
    probe.wait(lambda: len(probe.commands_since(killed_at + 3.0)) > 100, 20, "commands after the policy died")
    _assert_smooth(probe, killed_at - 0.5, kinematics.limits.velocity[arm])
    held = probe.commands_since(killed_at + 3.0)
    assert np.ptp(held, axis=0).max() < 1e-9  # holding still at the last target
    assert np.abs(held[-1]).max() > 0.1  # never zeros
    probe.wait(lambda: np.abs(np.asarray(probe.joint_state.velocity)).max() < 1e-3, 5, "the simulated arm at rest")
    assert all(runner.processes[name].poll() is None for name in ("sim_arm", "chunk_executor", "safety_supervisor"))
