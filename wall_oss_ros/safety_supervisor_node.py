"""safety_supervisor_node: the only publisher to the controllers.

Candidates (`candidate_command`), joint states, the e-stop input (reliable + transient local, so a
press made before this node started still arrives) and the optional e-stop heartbeat go into
`wall_oss_core.control.safety.SafetySupervisor`, timed on the steady clock (`time.monotonic`; the ROS
clock is only passed along to be checked for jumps). A timer at the command rate ticks it and sends its
output to every controller named in the robot config, ros2_control style: one std_msgs/Float64MultiArray
per forward command controller on `/<controller>/commands`, or a one-point trajectory_msgs/JointTrajectory
(positions + velocities) on `/<controller>/joint_trajectory`. An e-stop (topic or service) ticks at once
from its callback, so the braking command leaves without waiting for the timer. The number of
publishers on `candidate_command` is polled (more than one is a FAULT). Publishes wall_oss/SafetyStatus
at `status_rate` and on every state change, and /diagnostics once a second.
"""
from __future__ import annotations

import array
import sys
import time
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Empty, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from wall_oss.msg import SafetyStatus

from wall_oss_core import topics
from wall_oss_core.control.safety import EstopLatchFile, SafetyConfig, SafetyOutput, SafetyState, SafetySupervisor
from wall_oss_core.policy.observation import JointStateMerger
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_ros.controller_joints import ControllerJointsCheck
from wall_oss_ros.conversions import joint_state_to_vector, merge_joint_state, stamp_to_seconds
from wall_oss_ros.graph import COMMAND_QOS, ESTOP_SUBSCRIPTION_QOS, JOINT_STATES_QOS, STATUS_QOS, diagnostic_array
from wall_oss_ros.node_runtime import run_node

_DIAGNOSTIC_LEVEL = {
    SafetyState.OK: DiagnosticStatus.OK,
    SafetyState.LIMITING: DiagnosticStatus.OK,
    SafetyState.HOLD: DiagnosticStatus.WARN,
    SafetyState.ESTOP: DiagnosticStatus.ERROR,
    SafetyState.FAULT: DiagnosticStatus.ERROR,
}


@dataclass(frozen=True)
class SupervisorNodeParams:
    robot_config: str
    command_rate: float
    candidate_timeout: float
    joint_state_timeout: float
    max_extrapolation_ticks: int
    status_rate: float
    diagnostics_period: float
    trajectory_time_from_start: float
    trajectory_velocities: bool
    verify_controller_joints: bool
    joint_states_topic: str
    jerk_revolute: float
    jerk_gripper: float
    following_error: float
    limit_tolerance: float
    fault_hold_time: float
    clock_jump_tolerance: float
    heartbeat_timeout: float
    stop_category: int
    speed_scale: float
    estop_state_file: str
    publisher_check_period: float
    check_collisions: bool
    collision_margin: float
    table_height: float


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


def declare_parameters(node: Node) -> SupervisorNodeParams:
    """Declare every parameter with a descriptor and read them; rclpy refuses out-of-range values
    and the SafetyConfig / robot config checks catch the rest (ValueError / ConfigError)."""
    def declare(name, default, description, **ranges):
        descriptor = ParameterDescriptor(description=description, read_only=True, **ranges)
        return node.declare_parameter(name, default, descriptor).value

    params = SupervisorNodeParams(
        robot_config=declare("robot_config", str(default_config_path()),
                             "robot layout YAML (arms, joints, controllers, workspace boxes, limits)"),
        command_rate=declare("command_rate", 200.0, "commands per second sent to the controllers [Hz]; "
                             "velocity / acceleration limits are enforced per period of this rate",
                             floating_point_range=_float_range(10.0, 1000.0)),
        candidate_timeout=declare("candidate_timeout", 0.1, "no valid candidate_command for this long → HOLD [s]",
                                  floating_point_range=_float_range(0.001, 10.0)),
        joint_state_timeout=declare("joint_state_timeout", 0.2, "no joint state for this long → FAULT [s]",
                                    floating_point_range=_float_range(0.001, 10.0)),
        max_extrapolation_ticks=declare("max_extrapolation_ticks", 4, "ticks a late candidate is carried "
                                        "forward along its velocity", integer_range=[IntegerRange(
                                            from_value=0, to_value=100, step=1)]),
        status_rate=declare("status_rate", 20.0, "SafetyStatus messages per second (plus one per state change)",
                            floating_point_range=_float_range(0.1, 1000.0)),
        diagnostics_period=declare("diagnostics_period", 1.0, "seconds between /diagnostics messages",
                                   floating_point_range=_float_range(0.05, 60.0)),
        trajectory_time_from_start=declare("trajectory_time_from_start", 0.01, "time_from_start of the single "
                                           "JointTrajectory point (joint_trajectory controllers) [s]",
                                           floating_point_range=_float_range(0.0005, 1.0)),
        trajectory_velocities=declare("trajectory_velocities", False, "also send the JointTrajectory point's "
                                      "velocities; a stock joint_trajectory_controller then needs "
                                      "allow_nonzero_velocity_at_trajectory_end: true (default false), or it "
                                      "rejects every command while the arm moves"),
        verify_controller_joints=declare("verify_controller_joints", False, "command a controller only after its "
                                         "joints parameter (ros2_control) matched the robot config's joint order"),
        joint_states_topic=declare("joint_states_topic", topics.JOINT_STATES, "measured joint states topic"),
        jerk_revolute=declare("jerk_revolute", 0.0, "jerk limit of the arm joints, also while braking [rad/s^3]; "
                              "0: the robot config's max_jerk", floating_point_range=_float_range(0.0, 1e5)),
        jerk_gripper=declare("jerk_gripper", 0.0, "jerk limit of the gripper joints [m/s^3]; 0: the robot "
                             "config's max_jerk", floating_point_range=_float_range(0.0, 1e4)),
        following_error=declare("following_error", 0.2, "arm joint command − measured position beyond this → "
                                "FAULT and a hold where the arm is [rad]", floating_point_range=_float_range(0.001, 10.0)),
        limit_tolerance=declare("limit_tolerance", 0.05, "arm joint candidates beyond a position limit by more "
                                "than this are rejected [rad]", floating_point_range=_float_range(0.0, 1.0)),
        fault_hold_time=declare("fault_hold_time", 1.0, "a FAULT holds at least this long [s]",
                                floating_point_range=_float_range(0.0, 60.0)),
        clock_jump_tolerance=declare("clock_jump_tolerance", 0.1, "ROS clock running apart from the steady "
                                     "clock by more than this between ticks → FAULT [s]",
                                     floating_point_range=_float_range(0.001, 1e6)),
        heartbeat_timeout=declare("heartbeat_timeout", 0.0, "no message on estop_heartbeat for this long latches "
                                  "the e-stop [s]; 0: no heartbeat needed", floating_point_range=_float_range(0.0, 60.0)),
        stop_category=declare("stop_category", 2, "e-stop stop: 2 jerk-limited, 1 acceleration-limited, 0 freeze "
                              "the command", integer_range=[IntegerRange(from_value=0, to_value=2, step=1)]),
        speed_scale=declare("speed_scale", 1.0, "dry run below 1 (e.g. 0.1-0.2): scales every velocity / "
                            "acceleration / jerk limit, shrinks the workspace boxes, disables the grippers",
                            floating_point_range=_float_range(0.01, 1.0)),
        estop_state_file=declare("estop_state_file", "", "file that keeps the e-stop latch across restarts (the "
                                 "supervisor comes up latched unless it says released); empty: memory only"),
        publisher_check_period=declare("publisher_check_period", 0.2, "seconds between counts of the "
                                       "candidate_command publishers", floating_point_range=_float_range(0.01, 10.0)),
        check_collisions=declare("check_collisions", True, "check every link's URDF collision geometry against the "
                                 "other arm, its own arm and the table"),
        collision_margin=declare("collision_margin", 0.01, "clearance kept after the stop that follows every "
                                 "command [m]", floating_point_range=_float_range(0.0, 0.5)),
        table_height=declare("table_height", 0.0, "table top, z in the base frame [m]",
                             floating_point_range=_float_range(-5.0, 5.0)),
    )
    if not params.joint_states_topic:
        raise ValueError("joint_states_topic must not be empty")
    return params


@dataclass(frozen=True)
class _ControllerOutput:
    """One controller: where it listens and which command-vector entries it takes."""

    name: str
    publisher: object
    joints: tuple[str, ...]
    indices: np.ndarray


class SafetySupervisorNode(Node):
    def __init__(self):
        super().__init__("safety_supervisor")
        self.params = declare_parameters(self)
        robot = load_robot_config(self.params.robot_config)
        p = self.params
        self.safety_config = SafetyConfig(period=1.0 / p.command_rate, candidate_timeout=p.candidate_timeout,
                                          joint_state_timeout=p.joint_state_timeout,
                                          max_extrapolation_ticks=p.max_extrapolation_ticks,
                                          jerk_revolute=p.jerk_revolute or None, jerk_gripper=p.jerk_gripper or None,
                                          following_error_revolute=p.following_error,
                                          limit_tolerance_revolute=p.limit_tolerance, fault_hold_time=p.fault_hold_time,
                                          clock_jump_tolerance=p.clock_jump_tolerance,
                                          heartbeat_timeout=p.heartbeat_timeout, stop_category=p.stop_category,
                                          speed_scale=p.speed_scale, check_collisions=p.check_collisions,
                                          collision_margin=p.collision_margin, table_height=p.table_height)
        kinematics = BimanualKinematics(robot)
        latch_file = EstopLatchFile(p.estop_state_file) if p.estop_state_file else None
        self.supervisor = SafetySupervisor(kinematics, self.safety_config, latch_file)
        self.joint_names = robot.command_joints
        self.joint_states = JointStateMerger(self.joint_names)
        self.trajectory_mode = robot.controller_interface == "joint_trajectory"

        self.controllers = []
        for arm in robot.arms:
            groups = ((arm.controller, arm.joints), (arm.gripper_controller, (arm.gripper_joint,)))
            for controller, joints in groups:
                message, kind = (JointTrajectory, topics.CONTROLLER_TRAJECTORY) if self.trajectory_mode else \
                    (Float64MultiArray, topics.CONTROLLER_COMMANDS)
                self.controllers.append(_ControllerOutput(
                    controller, self.create_publisher(message, topics.controller_topic(controller, kind), COMMAND_QOS), tuple(joints),
                    np.array([self.joint_names.index(j) for j in joints])))
        self.joints_check = ControllerJointsCheck(self, {c.name: c.joints for c in self.controllers}) \
            if self.params.verify_controller_joints else None
        self.status_publisher = self.create_publisher(SafetyStatus, topics.SAFETY_STATUS, STATUS_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, STATUS_QOS)

        self.create_subscription(JointState, topics.CANDIDATE_COMMAND, self._on_candidate, COMMAND_QOS)
        self.create_subscription(JointState, self.params.joint_states_topic, self._on_joint_state,
                                 JOINT_STATES_QOS)
        # reliable + transient local: a press made before this node (re)started or subscribed still
        # arrives from a transient-local e-stop publisher. DDS does not match a transient-local
        # subscription with a volatile publisher (`ros2 topic pub` and most nodes by default), so a
        # second, volatile subscription takes those; a transient-local publisher reaches both, which
        # only repeats the same input.
        for qos in ESTOP_SUBSCRIPTION_QOS:
            self.create_subscription(Bool, topics.ESTOP, self._on_estop, qos)
        if p.heartbeat_timeout > 0:
            self.create_subscription(Empty, topics.ESTOP_HEARTBEAT,
                                     lambda _: self.supervisor.on_heartbeat(self._now()), STATUS_QOS)
        self.create_service(Trigger, "trigger_estop", self._on_trigger_estop)
        self.create_service(Trigger, "reset_estop", self._on_reset_estop)

        self._last_output: SafetyOutput | None = None
        self._last_status_time = -float("inf")
        self._status_period = 1.0 / self.params.status_rate
        self._time_from_start = Duration(sec=int(self.params.trajectory_time_from_start),
                                         nanosec=int(self.params.trajectory_time_from_start % 1.0 * 1e9))
        self.create_timer(self.safety_config.period, self._tick)
        self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)
        self.create_timer(p.publisher_check_period, self._count_candidate_publishers)
        self.get_logger().info(
            f"supervising {len(self.joint_names)} joints at {self.params.command_rate:g} Hz → "
            f"{', '.join(o.publisher.topic_name for o in self.controllers)}")

    @staticmethod
    def _now() -> float:
        """The supervisor's clock: steady, never stepped by NTP, /clock or a simulator reset."""
        return time.monotonic()

    def _ros_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _count_candidate_publishers(self):
        self.supervisor.set_candidate_publishers(self._now(), self.count_publishers(topics.CANDIDATE_COMMAND))

    # ------------------------------------------------------------------------------------- inputs
    def _on_joint_state(self, msg: JointState):
        try:  # merged by ROS stamps (an unstamped message counts as now); the supervisor runs on the steady clock
            merged = merge_joint_state(self.joint_states, msg, self._ros_now())
            if merged is not None:
                self.supervisor.on_joint_state(self._now(), merged[0])
        except ValueError as error:
            self.get_logger().warning(f"ignoring joint state: {error}", throttle_duration_sec=1.0)

    def _on_candidate(self, msg: JointState):
        now = self._now()
        try:
            positions, velocities = joint_state_to_vector(msg, self.joint_names)
        except ValueError as error:
            reason = self.supervisor.reject_candidate(f"candidate_command: {error}")
        else:
            stamp = stamp_to_seconds(msg.header.stamp)
            reason = self.supervisor.on_candidate(now, positions, velocities, stamp if stamp > 0 else None)
        if reason is not None:
            self.get_logger().warning(f"rejected candidate ({self.supervisor.counters.rejected} so far): {reason}",
                                      throttle_duration_sec=1.0)

    def _on_estop(self, msg: Bool):
        if self.supervisor.set_estop_input(self._now(), msg.data):
            self.get_logger().error("e-stop latched by the estop topic")
            self._tick()  # the braking command and the ESTOP status leave now, not at the next tick

    def _on_trigger_estop(self, request, response):
        latched = self.supervisor.trigger_estop(self._now())
        response.success = True
        response.message = "e-stop latched" if latched else "e-stop was already latched"
        if latched:
            self.get_logger().error("e-stop latched by the trigger_estop service")
            self._tick()
        return response

    def _on_reset_estop(self, request, response):
        response.success, response.message = self.supervisor.reset_estop(self._now())
        if response.success:
            self.get_logger().info(f"reset_estop: {response.message}")
        else:
            self.get_logger().warning(f"reset_estop refused: {response.message}")
        return response

    # ------------------------------------------------------------------------------------- outputs
    def _tick(self):
        now = self._now()
        output = self.supervisor.tick(now, self._ros_now())
        if output.positions is not None:
            self._send(output.positions, output.velocities)
        if output.state_changed:
            text = f"state {output.state.name}: {output.reason or 'following candidates'}"
            if output.state <= SafetyState.LIMITING:  # rclpy wants one severity per logging call site
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)
        self._last_output = output
        if output.state_changed or now - self._last_status_time >= self._status_period:
            self._publish_status(output.state, output.active_limits, output.reason)

    def _send(self, positions: np.ndarray, velocities: np.ndarray):
        for controller in self.controllers:
            if self.joints_check is not None and controller.name not in self.joints_check.passed:
                continue
            values = positions[controller.indices]
            if self.trajectory_mode:
                msg = JointTrajectory()  # header.stamp 0: start now
                msg.joint_names = list(controller.joints)
                point = JointTrajectoryPoint(positions=array.array("d", values.tobytes()),
                                             time_from_start=self._time_from_start)
                if self.params.trajectory_velocities:
                    point.velocities = array.array("d", velocities[controller.indices].tobytes())
                msg.points = [point]
            else:
                msg = Float64MultiArray(data=array.array("d", values.tobytes()))
            controller.publisher.publish(msg)

    def _publish_status(self, state: SafetyState, limits, reason: str):
        counters = self.supervisor.counters
        msg = SafetyStatus(state=int(state), state_name=state.name, active_limits=list(limits), reason=reason,
                           commands_passed=counters.passed, commands_modified=counters.modified,
                           commands_rejected=counters.rejected, estop_count=counters.estop_count)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_publisher.publish(msg)
        self._last_status_time = self._now()

    def _publish_diagnostics(self):
        output, counters = self._last_output, self.supervisor.counters
        state = output.state if output is not None else SafetyState.HOLD
        joint_age, candidate_age = self.supervisor.input_ages(self._now())
        age = lambda value: "never" if value is None else f"{value:.3f}"  # noqa: E731
        message = state.name + (f": {output.reason}" if output is not None and output.reason else "")
        values = (("state", state.name), ("estop_latched", self.supervisor.estop_latched),
                  ("active_limits", ", ".join(output.active_limits) if output is not None else ""),
                  ("commands_passed", counters.passed), ("commands_modified", counters.modified),
                  ("commands_rejected", counters.rejected), ("estop_count", counters.estop_count),
                  ("faults", counters.faults), ("restarts_from_measured", counters.restarts),
                  ("candidate_publishers", self.supervisor.candidate_publishers),
                  ("joint_state_age_s", age(joint_age)), ("candidate_age_s", age(candidate_age)),
                  ("command_rate_hz", self.params.command_rate), ("speed_scale", self.params.speed_scale),
                  ("stop_category", self.params.stop_category))
        self.diagnostics_publisher.publish(diagnostic_array(self, "safety", _DIAGNOSTIC_LEVEL[state], message, values))


def main(args=None) -> int:
    return run_node(SafetySupervisorNode, "safety_supervisor", args)


if __name__ == "__main__":
    sys.exit(main())
