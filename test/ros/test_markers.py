"""markers_node in its own process over real DDS: frames, path ordering/colors, boxes red on a limit hit."""
import numpy as np
import pytest
from conftest import ROBOT_CONFIG, wait_for
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from visualization_msgs.msg import Marker, MarkerArray
from wall_oss.msg import ActionChunk, SafetyStatus

from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_ros.conversions import chunk_to_msg, seconds_to_stamp, vector_to_joint_state

pytestmark = pytest.mark.timeout(90)


def test_markers_on_real_messages(node_processes, ros_node):
    robot = load_robot_config(ROBOT_CONFIG)
    kinematics = BimanualKinematics(robot)
    node = node_processes("wall_oss_ros.markers_node", params={"publish_rate": 20.0})
    received = []
    ros_node.create_subscription(MarkerArray, "markers", received.append, 10)
    joints = ros_node.create_publisher(JointState, "/joint_states", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    chunks = ros_node.create_publisher(ActionChunk, "action_chunk", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    safety = ros_node.create_publisher(SafetyStatus, "safety_status", 10)
    home = robot.home_positions()
    horizon = 6
    targets = home[None, :] + np.linspace(0, 0.3, horizon)[:, None]  # every joint moves: the tool travels
    targets[:, [6, 13]] = home[[6, 13]]
    chunk = Chunk(actions=targets, dt=0.1, action_space="joint_position", action_names=list(robot.command_joints),
                  stamp=10.0)
    status = SafetyStatus(state=SafetyStatus.STATE_LIMITING, state_name="LIMITING", reason="left tool left its box",
                          active_limits=["workspace:left", "velocity:right_elbow_joint"], commands_passed=5,
                          commands_modified=2)

    def publish():
        joints.publish(vector_to_joint_state(robot.command_joints, home, stamp=seconds_to_stamp(10.0)))
        joints.publish(vector_to_joint_state(robot.command_joints, home + 0.01, stamp=seconds_to_stamp(10.05)))
        chunks.publish(chunk_to_msg(chunk, 1))
        safety.publish(status)
        ros_node.spin_briefly()

    def complete():
        if not received:
            return False
        names = {m.ns for m in received[-1].markers}
        return {"predicted_path/left", "predicted_path/right", "executed_path/left", "safety"} <= names

    wait_for(complete, timeout=30, poll=publish, message="a complete marker array")
    assert node.alive()
    # every array starts by clearing rviz's markers, then adds the current scene: no stale paths stay
    actions = [m.action for m in received[-1].markers]
    assert actions[0] == Marker.DELETEALL and set(actions[1:]) == {Marker.ADD}
    markers = {m.ns: m for m in received[-1].markers}
    assert all(m.header.frame_id == robot.base_frame for m in markers.values())

    path = markers["predicted_path/left"]
    assert path.type == Marker.LINE_STRIP and len(path.points) == horizon == len(path.colors)
    expected = [kinematics.ee_poses(q)["left"][:3, 3] for q in targets]
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in path.points], expected, atol=1e-9)
    reds = [c.r for c in path.colors]
    blues = [c.b for c in path.colors]
    assert reds == sorted(reds) and blues == sorted(blues, reverse=True) and reds[0] < reds[-1]  # blue → red in time

    left_box, right_box = markers["workspace/left"], markers["workspace/right"]
    assert left_box.type == Marker.CUBE
    box = robot.arm("left").workspace
    np.testing.assert_allclose([left_box.scale.x, left_box.scale.y, left_box.scale.z], box.max - box.min)
    assert left_box.color.r > 0.8 and left_box.color.g < 0.2  # red: its workspace limit acted
    assert right_box.color.g > 0.7 and right_box.color.r > 0.8  # yellow: limiting, not this arm's box
    assert "LIMITING" in markers["safety"].text and "modified 2" in markers["safety"].text

    status.state, status.state_name, status.active_limits = SafetyStatus.STATE_OK, "OK", []
    wait_for(lambda: {m.ns: m for m in received[-1].markers}["workspace/left"].color.g > 0.7,
             timeout=20, poll=publish, message="left box back to green")


def test_rviz_config_shows_the_graph():
    import yaml
    from conftest import CONFIG_DIR

    robot = load_robot_config(ROBOT_CONFIG)
    manager = yaml.safe_load((CONFIG_DIR / "wall_oss.rviz").read_text())["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == robot.base_frame
    displays = {d["Class"]: d for d in manager["Displays"]}
    assert {"rviz_default_plugins/RobotModel", "rviz_default_plugins/TF", "rviz_default_plugins/MarkerArray",
            "rviz_default_plugins/Image"} <= set(displays)
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/wall_oss/markers"
    image_topics = {d["Topic"]["Value"] for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"}
    assert image_topics == {camera.topic for camera in robot.cameras}
