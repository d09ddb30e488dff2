"""Joint states the way a ros2_control robot publishes them, over real DDS: one joint_state_broadcaster
per arm (two publishers on /joint_states, each naming only its joints, in its own order, with joints the
robot config does not command), NaN velocity and effort for joints without those interfaces. The
simulated arm stands in for the hardware; this test's node republishes its state that way, and the
executor and supervisor must still drive it."""
import math

import numpy as np
from conftest import ROBOT_CONFIG, wait_for
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from wall_oss.msg import ActionChunk, SafetyStatus

from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.config import load_robot_config
from wall_oss_ros.conversions import chunk_to_msg, stamp_to_seconds

ROBOT = load_robot_config(ROBOT_CONFIG)
NAMESPACE = ("--ros-args", "-r", "__ns:=/wall_oss")
ELBOW = ROBOT.command_joints.index("left_elbow_joint")


class Broadcasters:
    """Splits each simulated joint state into a left and a right broadcaster's message."""

    def __init__(self, node):
        self.node = node
        self.left = node.create_publisher(JointState, "/joint_states", 10)
        self.right = node.create_publisher(JointState, "/joint_states", 10)
        self.latest: JointState | None = None
        node.create_subscription(JointState, "/sim/joint_states", self._split, 10)

    def _split(self, msg: JointState):
        self.latest = msg
        position = dict(zip(msg.name, msg.position))
        left = ["left_camera_tilt_joint"] + [n for n in msg.name if n.startswith("left")][::-1]
        right = [n for n in msg.name if n.startswith("right")]
        for publisher, names in ((self.left, left), (self.right, right)):
            out = JointState(name=names, position=[position.get(n, 0.0) for n in names])
            out.header.stamp = msg.header.stamp
            # no velocity/effort interfaces on the grippers (and no effort anywhere): NaN, as the broadcaster fills
            out.velocity = [math.nan if "gripper" in n else 0.0 for n in names]
            out.effort = [math.nan] * len(names)
            publisher.publish(out)

    def measured(self, joint: str) -> float:
        return self.latest.position[list(self.latest.name).index(joint)]


def test_split_nan_velocity_joint_states_drive_the_graph(node_processes, ros_node):
    node_processes("wall_oss_ros.sim_arm_node", params={"camera_rate_hz": 0.0, "joint_states_topic": "/sim/joint_states"})
    node_processes("wall_oss_ros.chunk_executor_node", *NAMESPACE, params={"rate_hz": 100.0})
    supervisor = node_processes("wall_oss_ros.safety_supervisor_node", *NAMESPACE, params={"command_rate": 100.0})
    broadcasters = Broadcasters(ros_node)
    statuses = []
    ros_node.create_subscription(SafetyStatus, "/wall_oss/safety_status", statuses.append, 10)
    chunks = ros_node.create_publisher(ActionChunk, "/wall_oss/action_chunk",
                                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    wait_for(lambda: broadcasters.latest is not None and chunks.get_subscription_count() > 0, 30,
             poll=ros_node.spin_briefly, message="simulated joint states and the executor")
    # OK: the executor holds the merged measured position and the supervisor passes its candidates
    wait_for(lambda: statuses and statuses[-1].state_name == "OK", 30, poll=ros_node.spin_briefly,
             message="safety status OK")
    start = broadcasters.measured("left_elbow_joint")
    dt, horizon = 0.05, 40
    targets = np.tile(ROBOT.home_positions(), (horizon, 1))
    targets[:, ELBOW] = start + np.linspace(0.0, 0.3, horizon)
    stamp = stamp_to_seconds(broadcasters.latest.header.stamp)
    chunks.publish(chunk_to_msg(Chunk(targets, dt, "joint_position", list(ROBOT.command_joints), stamp), 1))
    wait_for(lambda: broadcasters.measured("left_elbow_joint") > start + 0.2, 30, poll=ros_node.spin_briefly,
             message="the simulated left elbow following the chunk")
    # tracking (LIMITING: the supervisor may shape the motion to its jerk limits), never a hold or fault
    assert statuses[-1].state_name in ("OK", "LIMITING"), statuses[-1].reason
    assert supervisor.alive()
