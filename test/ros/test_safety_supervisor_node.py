"""safety_supervisor_node over real DDS: a node process in namespace /wall_oss, fed and observed by this
test's node (joint states, candidates, e-stop, services; controller commands and SafetyStatus). The
joint states echo the commands the rig received (an ideal servo), so the measured robot is in the loop;
velocities are measured on the commands' receive times."""
import math
import time

import numpy as np
import pytest
import rclpy
from conftest import ROBOT_CONFIG, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Empty, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from wall_oss.msg import SafetyStatus

from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_ros.conversions import vector_to_joint_state

MODULE = "wall_oss_ros.safety_supervisor_node"
NAMESPACE = ("--ros-args", "-r", "__ns:=/wall_oss")
ROBOT = load_robot_config(ROBOT_CONFIG)
LIMITS = BimanualKinematics(ROBOT).limits
HOME = ROBOT.home_positions()
RATE = 200.0
# generous timeouts: the test machine is shared, and a late message must not look like a fault here
PARAMS = {"command_rate": RATE, "candidate_timeout": 0.3, "joint_state_timeout": 0.3, "following_error": 0.5}
RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
ESTOP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Delivery jitter between this process and the node on a shared machine: commands sent one period apart
# may be received closer together; positions are compared with receive times widened by this much.
DELIVERY_SLACK = 0.05
YAW = ROBOT.command_joints.index("left_wrist_yaw_joint")


class Rig:
    """Inputs the supervisor needs and everything it publishes, recorded in arrival order."""

    def __init__(self, node, trajectory: bool = False):
        self.node = node
        self.trajectory = trajectory
        self.joint_pub = node.create_publisher(type(vector_to_joint_state([], [])), "/joint_states", 10)
        self.candidate_pub = node.create_publisher(type(vector_to_joint_state([], [])), "/wall_oss/candidate_command", 10)
        self.estop_pub = node.create_publisher(Bool, "/wall_oss/estop", ESTOP_QOS)
        self.heartbeat_pub = node.create_publisher(Empty, "/wall_oss/estop_heartbeat", 10)
        self.reset_client = node.create_client(Trigger, "/wall_oss/reset_estop")
        self.trigger_client = node.create_client(Trigger, "/wall_oss/trigger_estop")
        self.commands: dict[str, list] = {}
        self.received: dict[str, list[float]] = {}
        self.measured = HOME.copy()  # the servo: where the last command put each joint
        for arm in ROBOT.arms:
            for controller, joints in ((arm.controller, arm.joints), (arm.gripper_controller, (arm.gripper_joint,))):
                self.commands[controller], self.received[controller] = [], []
                kind, topic = (JointTrajectory, "joint_trajectory") if trajectory else (Float64MultiArray, "commands")
                indices = [ROBOT.command_joints.index(j) for j in joints]
                node.create_subscription(kind, f"/{controller}/{topic}",
                                         lambda msg, c=controller, i=indices: self._on_command(c, i, msg), RELIABLE)
        self.statuses: list[SafetyStatus] = []
        node.create_subscription(SafetyStatus, "/wall_oss/safety_status", self.statuses.append, RELIABLE)
        self.diagnostics: list[DiagnosticArray] = []
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.send_joint_states = True
        self.candidate = lambda t: (HOME, np.zeros_like(HOME))  # t [s] → positions, velocities (or None)
        self.start = node.get_clock().now().nanoseconds * 1e-9
        node.create_timer(0.005, self._publish)

    def _on_command(self, controller, indices, msg):
        self.received[controller].append(time.monotonic())
        self.commands[controller].append(msg)
        self.measured[indices] = list(msg.points[0].positions) if self.trajectory else list(msg.data)

    def _publish(self):
        now = self.node.get_clock().now()
        if self.send_joint_states:
            self.joint_pub.publish(vector_to_joint_state(ROBOT.command_joints, self.measured, stamp=now.to_msg()))
        command = self.candidate(now.nanoseconds * 1e-9 - self.start)
        if command is not None:
            self.candidate_pub.publish(vector_to_joint_state(ROBOT.command_joints, *command, stamp=now.to_msg()))

    def arm_positions(self, controller="left_arm_controller") -> np.ndarray:
        if self.trajectory:
            return np.array([list(m.points[0].positions) for m in self.commands[controller]])
        return np.array([list(m.data) for m in self.commands[controller]])

    def status(self) -> SafetyStatus | None:
        return self.statuses[-1] if self.statuses else None

    def call(self, client, timeout=10.0) -> Trigger.Response:
        wait_for(client.service_is_ready, timeout, poll=self.node.spin_briefly, message="service")
        future = client.call_async(Trigger.Request())
        wait_for(future.done, timeout, poll=self.node.spin_briefly, message="service response")
        return future.result()

    def wait(self, condition, message, timeout=20.0):
        wait_for(condition, timeout, poll=self.node.spin_briefly, message=message)


def assert_within_limits(rig: Rig, controller="left_arm_controller", joints: slice = slice(0, 6)):
    """Measured on receive times: between any two commands (every pair 1..50 apart), the position moved
    at most the velocity limit × (the time between their receipt + the delivery slack); between
    consecutive ones at most one period's motion more than the velocity limit allows."""
    positions, received = rig.arm_positions(controller), np.array(rig.received[controller][:len(rig.commands[controller])])
    for gap in range(1, min(50, len(positions))):
        moved = np.abs(positions[gap:] - positions[:-gap])
        allowed = LIMITS.velocity[joints] * (received[gap:] - received[:-gap] + DELIVERY_SLACK)[:, None]
        assert np.all(moved <= allowed + 1e-9), f"faster than the velocity limit over {gap} commands"
    step = np.abs(np.diff(positions, axis=0))
    fast = np.argwhere(step > LIMITS.velocity[joints] / RATE + 1e-9)
    assert not fast.size, f"more than one period's motion in one command: {fast[:3].tolist()}, " \
                          f"{[positions[i - 1:i + 2, j].tolist() for i, j in fast[:3]]}"


def _state(rig):
    status = rig.status()
    return None if status is None else status.state_name


def test_follows_candidates_rejects_bad_ones_and_holds_when_they_stop(node_processes, ros_node):
    node = node_processes(MODULE, *NAMESPACE, params=PARAMS)
    rig = Rig(ros_node)
    target = HOME.copy()
    target[YAW] += 0.3
    rig.candidate = lambda t: (target, np.zeros_like(target))
    rig.wait(lambda: len(rig.arm_positions()) > 0 and abs(rig.arm_positions()[-1][YAW] - target[YAW]) < 1e-9,
             "left arm commands reaching the candidate")
    rig.wait(lambda: _state(rig) == "OK", "state OK")
    np.testing.assert_allclose(rig.arm_positions("right_arm_controller")[-1], HOME[7:13])
    assert [len(m.data) for m in rig.commands["left_gripper_controller"][-1:]] == [1]
    assert rig.commands["left_gripper_controller"][-1].data[0] == pytest.approx(HOME[6])
    assert_within_limits(rig)
    rig.wait(lambda: any("safety_supervisor" in s.name for d in rig.diagnostics for s in d.status), "/diagnostics")

    # a NaN candidate and one that lacks joints: rejected, counted, the node keeps commanding
    bad = target.copy()
    bad[2] = math.nan
    rig.candidate_pub.publish(vector_to_joint_state(ROBOT.command_joints, bad))
    rig.candidate_pub.publish(vector_to_joint_state(ROBOT.command_joints[:5], bad[:5]))
    rig.wait(lambda: rig.status().commands_rejected >= 2, "two rejected candidates counted")
    sent = len(rig.arm_positions())
    rig.wait(lambda: len(rig.arm_positions()) > sent + 20, "commands after the rejections")
    assert node.alive() and np.all(np.isfinite(rig.arm_positions()))
    assert abs(rig.arm_positions()[-1][YAW] - target[YAW]) < 1e-9

    # candidates stop: HOLD at the last position (never zeros), commands keep coming
    rig.candidate = lambda t: None
    rig.wait(lambda: _state(rig) == "HOLD", "state HOLD")
    assert "no candidate command" in rig.status().reason and "watchdog:candidate" in rig.status().active_limits
    sent = len(rig.arm_positions())
    rig.wait(lambda: len(rig.arm_positions()) > sent + 10, "hold commands")
    np.testing.assert_allclose(rig.arm_positions()[-1], target[:6], atol=1e-9)
    assert_within_limits(rig)
    assert node.alive()


def test_estop_latches_holds_and_resets_only_with_fresh_inputs(node_processes, ros_node):
    node_processes(MODULE, *NAMESPACE, params=PARAMS)
    rig = Rig(ros_node)
    rig.candidate = lambda t: (HOME + np.where(np.arange(14) == YAW, 0.6 * math.sin(2.0 * t), 0.0),
                               np.where(np.arange(14) == YAW, 1.2 * math.cos(2.0 * t), 0.0))
    # (on a loaded machine late candidates make it LIMITING now and then; either state is tracking)
    rig.wait(lambda: _state(rig) in ("OK", "LIMITING") and len(rig.arm_positions()) > 50
             and np.ptp(rig.arm_positions()[-20:, YAW]) > 0.01, "tracking the moving candidate")

    rig.estop_pub.publish(Bool(data=True))
    rig.wait(lambda: _state(rig) == "ESTOP", "state ESTOP")
    assert rig.status().estop_count == 1 and "estop" in rig.status().active_limits
    latched_at = len(rig.arm_positions())
    rig.wait(lambda: len(rig.arm_positions()) > latched_at + 160, "hold commands")  # 0.8 s: the jerk-limited stop takes < 0.5 s
    held = rig.arm_positions()[latched_at:]
    assert np.all(held[-20:] == held[-1]), "the arm is held still"
    assert_within_limits(rig)
    assert abs(held[-1][YAW]) > 0 and np.all(np.isfinite(held))

    response = rig.call(rig.reset_client)
    assert not response.success and "still asserted" in response.message
    rig.send_joint_states = False
    rig.wait(lambda: "stale" in rig.call(rig.reset_client).message, "reset refused for stale joint states")
    rig.estop_pub.publish(Bool(data=False))
    rig.wait(lambda: "asserted" not in (r := rig.call(rig.reset_client)).message and not r.success
             and "joint state" in r.message, "reset refused only for stale joint states once the input is released")
    assert _state(rig) == "ESTOP"
    rig.send_joint_states = True
    rig.wait(lambda: rig.call(rig.reset_client).success, "reset accepted with fresh inputs at standstill")
    resumed_at = len(rig.arm_positions())
    rig.wait(lambda: _state(rig) in ("OK", "LIMITING"), "tracking again")
    rig.wait(lambda: len(rig.arm_positions()) > resumed_at + 100, "commands after the reset")
    assert_within_limits(rig)  # resuming towards the moving candidate stays within limits

    trigger = rig.call(rig.trigger_client)
    assert trigger.success and trigger.message == "e-stop latched"
    rig.wait(lambda: _state(rig) == "ESTOP" and rig.status().estop_count == 2, "e-stop by service")


def test_estop_reaches_a_late_joiner_and_survives_a_restart(node_processes, ros_node, tmp_path):
    """A press made before the supervisor started arrives (transient local); the latch is kept in the
    state file, so a supervisor killed while latched comes up latched again."""
    latch = tmp_path / "estop_latch"
    latch.write_text("released\n")
    rig = Rig(ros_node)
    rig.estop_pub.publish(Bool(data=True))  # pressed before the supervisor exists
    params = {**PARAMS, "estop_state_file": str(latch)}
    node = node_processes(MODULE, *NAMESPACE, params=params)
    rig.wait(lambda: _state(rig) == "ESTOP" and "e-stop topic" in rig.status().reason, "ESTOP from the early press")
    assert latch.read_text() == "latched\n"
    node.kill()  # dies while latched; the input is released meanwhile
    rig.estop_pub.publish(Bool(data=False))
    rig.statuses.clear()
    node_processes(MODULE, *NAMESPACE, params=params)
    rig.wait(lambda: _state(rig) == "ESTOP" and "latch file" in rig.status().reason, "comes up latched")
    rig.wait(lambda: rig.call(rig.reset_client).success, "reset with the input released")
    assert latch.read_text() == "released\n"
    rig.wait(lambda: _state(rig) in ("OK", "LIMITING"), "motion resumes on the candidates")
    volatile = ros_node.create_publisher(Bool, "/wall_oss/estop", 10)  # default QoS, as `ros2 topic pub`
    rig.wait(lambda: volatile.get_subscription_count() > 0, "the volatile e-stop publisher matched")
    volatile.publish(Bool(data=True))
    rig.wait(lambda: _state(rig) == "ESTOP", "ESTOP from a volatile publisher")


def test_lost_heartbeat_latches_the_estop(node_processes, ros_node):
    node_processes(MODULE, *NAMESPACE, params={**PARAMS, "heartbeat_timeout": 0.3})
    rig = Rig(ros_node)
    rig.wait(lambda: _state(rig) == "ESTOP" and "heartbeat lost" in rig.status().reason, "latched: no heartbeat")
    beating = ros_node.create_timer(0.05, lambda: rig.heartbeat_pub.publish(Empty()))
    rig.wait(lambda: rig.call(rig.reset_client).success, "reset once the heartbeat beats")
    rig.wait(lambda: _state(rig) in ("OK", "LIMITING"), "tracking")
    beating.cancel()
    rig.wait(lambda: _state(rig) == "ESTOP" and "heartbeat lost" in rig.status().reason, "heartbeat lost")
    assert "heartbeat" in rig.call(rig.reset_client).message


def test_a_second_candidate_publisher_is_a_fault_on_diagnostics(node_processes, ros_node):
    node_processes(MODULE, *NAMESPACE, params=PARAMS)
    rig = Rig(ros_node)
    rig.wait(lambda: _state(rig) in ("OK", "LIMITING"), "tracking")
    second = ros_node.create_publisher(type(vector_to_joint_state([], [])), "/wall_oss/candidate_command", 10)

    def fault_reported():
        return any(s.level == DiagnosticStatus.ERROR and "2 publishers" in s.message
                   and ("candidate_publishers", "2") in [(v.key, v.value) for v in s.values]
                   for d in rig.diagnostics for s in d.status)
    rig.wait(fault_reported, "FAULT with 2 candidate publishers on /diagnostics")
    assert _state(rig) == "FAULT"
    ros_node.destroy_publisher(second)
    rig.wait(lambda: _state(rig) in ("OK", "LIMITING"), "tracking again with one publisher")


def test_dry_run_scales_the_limits(node_processes, ros_node):
    node_processes(MODULE, *NAMESPACE, params={**PARAMS, "speed_scale": 0.1})
    rig = Rig(ros_node)
    target = HOME.copy()
    target[YAW] += 0.2
    target[6] += 0.01  # the gripper stays where it is in a dry run
    rig.candidate = lambda t: (target, np.zeros_like(target))
    rig.wait(lambda: len(rig.arm_positions()) > 0 and abs(rig.arm_positions()[-1][YAW] - target[YAW]) < 1e-9,
             "the dry run reaching the candidate")
    positions = rig.arm_positions()
    assert np.all(np.abs(np.diff(positions, axis=0)) <= 0.1 * LIMITS.velocity[:6] / RATE + 1e-9)
    assert all(m.data[0] == HOME[6] for m in rig.commands["left_gripper_controller"])


@pytest.mark.parametrize("velocities", [False, True])
def test_joint_trajectory_interface(node_processes, ros_node, tmp_path, velocities):
    """By default the one-point trajectory has positions only: a stock joint_trajectory_controller
    (allow_nonzero_velocity_at_trajectory_end: false) rejects a point with a non-zero end velocity."""
    config = tmp_path / "robot.yaml"
    config.write_text(ROBOT_CONFIG.read_text()
                      .replace("../urdf/", str(ROBOT_CONFIG.parent.parent / "urdf") + "/")
                      .replace("controller_interface: forward_command", "controller_interface: joint_trajectory"))
    node_processes(MODULE, *NAMESPACE, params={**PARAMS, "robot_config": str(config),
                                               "trajectory_time_from_start": 0.02, "trajectory_velocities": velocities})
    rig = Rig(ros_node, trajectory=True)
    target = HOME.copy()
    target[YAW] -= 0.2
    rig.candidate = lambda t: (target, np.zeros_like(target))
    rig.wait(lambda: len(rig.commands["left_arm_controller"]) > 0
             and abs(rig.arm_positions()[-1][YAW] - target[YAW]) < 1e-9
             and (not velocities or rig.commands["left_arm_controller"][-1].points[0].velocities[YAW] == 0.0),
             "trajectory commands reaching the candidate and stopping there")
    message = rig.commands["left_arm_controller"][-1]
    assert list(message.joint_names) == list(ROBOT.arm("left").joints) and len(message.points) == 1
    point = message.points[0]
    assert point.time_from_start.sec == 0 and point.time_from_start.nanosec == 20_000_000
    gripper = rig.commands["right_gripper_controller"][-1]
    assert list(gripper.joint_names) == ["right_gripper_joint"] and len(gripper.points[0].positions) == 1
    if velocities:
        moving = [m.points[0].velocities[YAW] for m in rig.commands["left_arm_controller"]]
        assert min(moving) < -0.1  # velocities carry the motion towards the target
    else:
        assert all(len(m.points[0].velocities) == 0 for c in rig.commands.values() for m in c)
    assert_within_limits(rig)


def test_controllers_get_commands_only_when_their_joints_parameter_matches(node_processes, ros_node):
    """ros2_control controllers take values in their `joints` parameter's order: stand-ins for the four
    controller nodes, the left arm's with its joints reordered, which must get no command at all."""
    from rclpy.parameter import Parameter

    context = ros_node.context
    controllers = []
    for arm in ROBOT.arms:
        for name, joints in ((arm.controller, list(arm.joints)), (arm.gripper_controller, [arm.gripper_joint])):
            if name == "left_arm_controller":
                joints = joints[1:] + joints[:1]
            controller = rclpy.create_node(name, context=context,
                                           parameter_overrides=[Parameter("joints", value=joints)],
                                           automatically_declare_parameters_from_overrides=True)
            controllers.append(controller)
    executor = SingleThreadedExecutor(context=context)
    for controller in controllers:
        executor.add_node(controller)
    try:
        supervisor = node_processes(MODULE, *NAMESPACE, params={**PARAMS, "verify_controller_joints": True})
        rig = Rig(ros_node)
        wait_for(lambda: len(rig.commands["right_arm_controller"]) > 20 and rig.commands["left_gripper_controller"],
                 20, poll=lambda: (ros_node.spin_briefly(), executor.spin_once(timeout_sec=0.0)),
                 message="commands to the verified controllers")
        assert rig.commands["left_arm_controller"] == []
        assert "controller left_arm_controller has joints ['left_shoulder_lift_joint'" in supervisor.log()
        assert "(the same joints in another order)" in supervisor.log()
    finally:
        executor.shutdown()
        for controller in controllers:
            controller.destroy_node()


@pytest.mark.parametrize("params, error", [
    ({"command_rate": 5000.0}, "command_rate out of range"),
    ({"robot_config": "/nonexistent/robot.yaml"}, "does not exist"),
    ({"command_rate": 10.0, "candidate_timeout": 0.05}, "at least one command period"),
])
def test_bad_parameters_stop_the_node_with_a_clear_error(node_processes, params, error):
    node = node_processes(MODULE, *NAMESPACE, params=params)
    wait_for(lambda: not node.alive(), 30.0, message="the node to exit")
    assert node.process.returncode == 2
    assert error in node.log()
