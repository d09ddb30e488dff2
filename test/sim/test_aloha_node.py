"""sim_arm_node on the ALOHA robot config: the same node, MuJoCo physics behind it, driven over real DDS
like ros2_control controllers, publishing its joint states and the MJCF's cameras."""
from __future__ import annotations

import time

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


def test_node_scores_the_instructed_task_publishes_object_poses_and_its_clock(ros_node, node_processes):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64, String
    from visualization_msgs.msg import MarkerArray

    from wall_oss_ros.conversions import markers_to_object_poses

    sim = node_processes("wall_oss_ros.sim_arm_node", params={
        "robot_config": str(ALOHA_CONFIG), "scene": "two_cubes", "seed": 5, "camera_rate_hz": 0.0,
        "publish_clock": True, "real_time_factor": 0.5})
    latched = QoSProfile(depth=16, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    stages, progress, clock = [], {}, {}
    ros_node.create_subscription(String, "/wall_oss/sim/task_stage", lambda m: stages.append(m.data), latched)
    ros_node.create_subscription(Float64, "/wall_oss/sim/task_progress", lambda m: progress.__setitem__("v", m.data),
                                 latched)
    ros_node.create_subscription(Clock, "/clock", lambda m: clock.__setitem__("t", m.clock), 10)
    objects = _latest(ros_node, "/wall_oss/sim/object_poses", MarkerArray)
    state = _latest(ros_node, "/joint_states", JointState)
    wait_for(lambda: "msg" in objects and "msg" in state and "t" in clock, 30, poll=ros_node.spin_briefly,
             message="object poses, joint states and /clock")
    poses = markers_to_object_poses(objects["msg"])
    assert set(poses) == {"box", "green_box"} and all(0.0 < p[2, 3] < 0.05 for p in poses.values())
    # joint states are stamped with the simulated clock, which runs at half the wall clock's rate
    def sim_now():
        return clock["t"].sec + clock["t"].nanosec * 1e-9

    first, wall_start = sim_now(), time.monotonic()
    wait_for(lambda: sim_now() - first > 1.0, 20, poll=ros_node.spin_briefly, message="1 s of simulated time")
    assert (sim_now() - first) / (time.monotonic() - wall_start) < 0.6  # at most half the wall clock's rate
    assert abs(state["msg"].header.stamp.sec + state["msg"].header.stamp.nanosec * 1e-9 - sim_now()) < 0.1

    instruction = ros_node.create_publisher(String, "/wall_oss/instruction", latched)
    instruction.publish(String(data="insert the red peg into the blue socket"))  # not a task of this scene
    wait_for(lambda: "names no task of scene 'two_cubes'" in sim.log(), 10, poll=ros_node.spin_briefly)
    instruction.publish(String(data="hand over the green cube"))
    wait_for(lambda: "hand_over_green_cube/started" in stages and progress.get("v") == 0.0, 10,
             poll=ros_node.spin_briefly, message="the green hand-over scored from 0")
    assert sim.alive()
