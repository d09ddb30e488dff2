"""sim_arm_node on the ALOHA robot config: the same node, MuJoCo physics behind it, driven over real DDS
like ros2_control controllers, publishing its joint states and the MJCF's cameras."""
from __future__ import annotations

import numpy as np
from conftest import CONFIG_DIR, wait_for

from wall_oss_core.robot.config import load_robot_config

ALOHA_CONFIG = CONFIG_DIR / "aloha.yaml"


def _latest(ros_node, topic, msg_type, qos=10):
    box = {}
    ros_node.create_subscription(msg_type, topic, lambda msg: box.__setitem__("msg", msg), qos)
    return box


def test_node_simulates_aloha_in_mujoco_over_dds(ros_node, node_processes):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from wall_oss_core.policy.images import image_msg_to_rgb

    robot = load_robot_config(ALOHA_CONFIG)
    sim = node_processes("wall_oss_ros.sim_arm_node", params={
        "robot_config": str(ALOHA_CONFIG), "scene": "two_cubes", "seed": 3, "camera_rate_hz": 5.0,
        "image_width": 96, "image_height": 64})
    state = _latest(ros_node, "/joint_states", JointState)
    face = _latest(ros_node, "/cameras/face/image_raw", Image, qos_profile_sensor_data)
    wait_for(lambda: "msg" in state, 30, poll=ros_node.spin_briefly, message="ALOHA joint states")
    names = list(state["msg"].name)
    assert names == list(robot.command_joints) + ["left_gripper_mirror", "right_gripper_mirror"]

    def position(name):
        return state["msg"].position[list(state["msg"].name).index(name)]

    np.testing.assert_allclose([position(j) for j in robot.command_joints], robot.home_positions(), atol=0.02)
    arm = ros_node.create_publisher(Float64MultiArray, "/right_arm_controller/commands", 10)
    gripper = ros_node.create_publisher(Float64MultiArray, "/left_gripper_controller/commands", 10)
    wait_for(lambda: arm.get_subscription_count() and gripper.get_subscription_count(), 10, poll=ros_node.spin_briefly)
    arm.publish(Float64MultiArray(data=[0.5, 0.1]))  # wrong length
    target = [0.3, -0.6, 0.9, 0.0, 0.2, 0.1]
    arm.publish(Float64MultiArray(data=target))
    gripper.publish(Float64MultiArray(data=[0.05]))
    wait_for(lambda: np.allclose([position(j) for j in robot.arm("right").joints], target, atol=0.03)
             and abs(position("left_gripper") - 0.05) < 0.003, 20, poll=ros_node.spin_briefly,
             message="the right arm and the left gripper at their targets in physics")
    assert abs(position("left_gripper_mirror") - position("left_gripper")) < 1e-9
    np.testing.assert_allclose([position(j) for j in robot.arm("left").joints], robot.arm("left").home, atol=0.03)
    wait_for(lambda: "rejected command for right_arm_controller (1 so far): 2 values for 6 joints" in sim.log(), 5,
             message="the malformed command logged as rejected")

    wait_for(lambda: "msg" in face, 30, poll=ros_node.spin_briefly, message="a face camera frame")
    image = image_msg_to_rgb(face["msg"])
    assert image.shape == (64, 96, 3) and face["msg"].header.frame_id == "face_camera_optical_frame"
    # the top camera sees the table with the red and the green cube on it
    red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
    green = (image[..., 1] > 150) & (image[..., 0] < 80) & (image[..., 2] < 80)
    assert red.any() and green.any()
    assert sim.alive()


def test_node_refuses_an_unknown_aloha_scene(node_processes):
    sim = node_processes("wall_oss_ros.sim_arm_node", params={
        "robot_config": str(ALOHA_CONFIG), "scene": "kitchen", "camera_rate_hz": 0.0})
    wait_for(lambda: not sim.alive(), 30, message="the node to exit")
    assert sim.process.returncode == 2
    assert "unknown ALOHA scene 'kitchen'" in sim.log()
