"""sim_arm_node: the simulated bimanual arm, standing in for a robot's ros2_control controllers and cameras.

It listens where the real controllers listen (`/<controller>/commands` as std_msgs/Float64MultiArray,
or `/<controller>/joint_trajectory` as trajectory_msgs/JointTrajectory, as config/bimanual.yaml
selects), integrates the joints with `wall_oss_core.sim.kinematic_arm.ArmDynamics` on a timer, publishes
`/joint_states`, and renders the face and wrist cameras in a child process (`CameraProcess`: rendering
takes ~10 ms a camera in Python and, in a thread, would delay the physics timer through the GIL).
A robot config with `sim: {backend: aloha_mujoco}` (config/aloha.yaml) is simulated in MuJoCo instead
(`wall_oss_core.sim.aloha`: physics with contacts, objects placed from the `seed` parameter, the
MJCF's cameras); the node's topics and behaviour stay the same.
Malformed commands are rejected, counted and logged.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from wall_oss_core import topics
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.kinematic_arm import (
    ArmDynamics,
    ArmDynamicsConfig,
    CameraProcess,
    CameraSettings,
    TrajectoryTarget,
)
from wall_oss_ros.conversions import stamp_to_seconds
from wall_oss_ros.graph import COMMAND_QOS, IMAGE_QOS, JOINT_STATES_PUBLISHER_QOS
from wall_oss_ros.node_runtime import declare_dataclass_parameters, run_node

MAX_STEP = 0.05  # [s] a stalled process integrates at most this much at once instead of jumping


@dataclass(frozen=True)
class SimArmParams:
    """Parameters of sim_arm_node (config/sim_arm.params.yaml holds the launch defaults)."""

    robot_config: str = ""
    physics_rate_hz: float = 250.0
    joint_states_topic: str = topics.JOINT_STATES
    lag_time_constant: float = 0.03
    acceleration_headroom: float = 3.0
    camera_rate_hz: float = 15.0
    image_width: int = 640
    image_height: int = 480
    camera_fov_deg: float = 75.0
    publish_raw_images: bool = True
    publish_compressed_images: bool = False
    jpeg_quality: int = 85
    initial_positions: tuple[float, ...] = ()
    scene: str = ""
    seed: int = 0


_DESCRIPTIONS = {
    "robot_config": ("robot layout YAML; empty = the package's config/bimanual.yaml", None),
    "physics_rate_hz": ("integration and /joint_states rate [Hz]", FloatingPointRange(from_value=50.0, to_value=1000.0)),
    "joint_states_topic": ("where joint states are published", None),
    "lag_time_constant": ("first-order servo tracking lag [s]", FloatingPointRange(from_value=0.005, to_value=1.0)),
    "acceleration_headroom": ("motor acceleration / configured command acceleration limit",
                              FloatingPointRange(from_value=1.0, to_value=100.0)),
    "camera_rate_hz": ("camera frame rate [Hz]; 0 disables the cameras", FloatingPointRange(from_value=0.0, to_value=60.0)),
    "image_width": ("camera image width [px]", IntegerRange(from_value=16, to_value=4096)),
    "image_height": ("camera image height [px]", IntegerRange(from_value=16, to_value=4096)),
    "camera_fov_deg": ("horizontal field of view of every camera [deg]", FloatingPointRange(from_value=10.0, to_value=170.0)),
    "publish_raw_images": ("publish sensor_msgs/Image rgb8 on each camera topic", None),
    "publish_compressed_images": ("publish sensor_msgs/CompressedImage (JPEG) on <camera topic>/compressed", None),
    "jpeg_quality": ("JPEG quality of compressed images", IntegerRange(from_value=1, to_value=100)),
    "initial_positions": ("start positions of the command joints; empty = the config's home pose", None),
    "scene": ("MuJoCo robots: the scene (transfer_cube, insertion, two_cubes); empty = the robot config's", None),
    "seed": ("MuJoCo robots: seed of the object placement", IntegerRange(from_value=0, to_value=2**31 - 1)),
}


class SimArmNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_arm", **kwargs)
        self._stop = threading.Event()
        self._camera_thread = None  # started last, once everything else is built
        self.params = declare_dataclass_parameters(self, SimArmParams, _DESCRIPTIONS)
        self.robot = load_robot_config(self.params.robot_config or default_config_path())
        self.kinematics = BimanualKinematics(self.robot)
        initial = np.asarray(self.params.initial_positions or self.robot.home_positions(), dtype=float)
        if initial.shape != (len(self.robot.command_joints),) or not np.all(np.isfinite(initial)):
            raise ValueError(f"initial_positions needs {len(self.robot.command_joints)} finite values "
                             f"({', '.join(self.robot.command_joints)}), got {list(self.params.initial_positions)}")
        if self.robot.simulator == "aloha_mujoco":
            from wall_oss_core.sim.aloha import AlohaArmDynamics, AlohaSim

            scene = AlohaSim(self.robot, self.params.scene or self.robot.sim_scene, seed=self.params.seed)
            self.dynamics = AlohaArmDynamics(scene, initial)
        else:
            self.dynamics = ArmDynamics.for_robot(
                self.kinematics, initial,
                ArmDynamicsConfig(lag_time_constant=self.params.lag_time_constant,
                                  acceleration_headroom=self.params.acceleration_headroom))
        self._lock = threading.Lock()
        self._trajectories: dict[str, tuple[np.ndarray, TrajectoryTarget]] = {}
        self.rejected_commands = 0
        self.accepted_commands = 0

        mimic = [(m, self.kinematics.gripper_index(arm.name)) for arm in self.robot.arms for m in arm.gripper_mimic_joints]
        self._state_names = list(self.robot.command_joints) + [name for name, _ in mimic]
        self._state_order = np.array(list(range(len(self.robot.command_joints))) + [index for _, index in mimic])
        self._joint_state_pub = self.create_publisher(JointState, self.params.joint_states_topic, JOINT_STATES_PUBLISHER_QOS)

        self._controller_joints = self._controller_layout()
        for controller in self._controller_joints:
            if self.robot.controller_interface == "forward_command":
                self.create_subscription(Float64MultiArray, topics.controller_topic(controller, topics.CONTROLLER_COMMANDS),
                                         lambda msg, c=controller: self._on_forward_command(c, msg), COMMAND_QOS)
            else:
                self.create_subscription(JointTrajectory, topics.controller_topic(controller, topics.CONTROLLER_TRAJECTORY),
                                         lambda msg, c=controller: self._on_trajectory(c, msg), COMMAND_QOS)

        self._last_step = time.monotonic()
        self.create_timer(1.0 / self.params.physics_rate_hz, self._on_physics_tick)
        if self.params.camera_rate_hz > 0 and (self.params.publish_raw_images or self.params.publish_compressed_images):
            self._start_cameras()
        self.get_logger().info(
            f"simulating {len(self.robot.command_joints)} joints at {self.params.physics_rate_hz:g} Hz "
            f"({self.robot.controller_interface} controllers: {', '.join(self._controller_joints)}); "
            f"cameras at {self.params.camera_rate_hz:g} Hz; {self.robot.simulator} simulator")

    def _controller_layout(self) -> dict[str, np.ndarray]:
        """Controller name → indices of its joints in the command vector (arm joints, or the gripper)."""
        layout = {}
        for arm in self.robot.arms:
            layout[arm.controller] = np.arange(len(self.robot.command_joints))[self.kinematics.arm_slice(arm.name)]
            layout[arm.gripper_controller] = np.array([self.kinematics.gripper_index(arm.name)])
        return layout

    def _reject(self, controller: str, reason: str) -> None:
        self.rejected_commands += 1
        self.get_logger().warning(f"rejected command for {controller} ({self.rejected_commands} so far): {reason}",
                                  throttle_duration_sec=1.0)

    def _on_forward_command(self, controller: str, msg: Float64MultiArray) -> None:
        indices = self._controller_joints[controller]
        values = np.asarray(msg.data, dtype=float)
        if values.shape != indices.shape:
            self._reject(controller, f"{values.size} values for {indices.size} joints")
            return
        if not np.all(np.isfinite(values)):
            self._reject(controller, "non-finite position")
            return
        with self._lock:
            self._trajectories.pop(controller, None)
            self.dynamics.set_targets(indices, values)
        self.accepted_commands += 1

    def _on_trajectory(self, controller: str, msg: JointTrajectory) -> None:
        indices = self._controller_joints[controller]
        expected = [self.robot.command_joints[i] for i in indices]
        if sorted(msg.joint_names) != sorted(expected):
            self._reject(controller, f"joint_names {list(msg.joint_names)} are not the controller's joints {expected}")
            return
        order = [list(msg.joint_names).index(name) for name in expected]
        if not msg.points or any(len(p.positions) != len(expected) for p in msg.points):
            self._reject(controller, "every trajectory point needs one position per joint")
            return
        times = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
        positions = np.array([np.asarray(p.positions, dtype=float)[order] for p in msg.points])
        stamp = stamp_to_seconds(msg.header.stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        start = stamp if stamp > 0 else now
        with self._lock:
            try:
                trajectory = TrajectoryTarget(start, self.dynamics.positions[indices], times, positions)
            except ValueError as error:
                self._reject(controller, str(error))
                return
            self._trajectories[controller] = (indices, trajectory)
        self.accepted_commands += 1

    def _on_physics_tick(self) -> None:
        now_monotonic = time.monotonic()
        dt = min(now_monotonic - self._last_step, MAX_STEP)
        self._last_step = now_monotonic
        stamp = self.get_clock().now()
        with self._lock:
            t = stamp.nanoseconds * 1e-9
            for indices, trajectory in self._trajectories.values():
                self.dynamics.set_targets(indices, trajectory.sample(t))
            self.dynamics.step(dt)
            positions = self.dynamics.positions[self._state_order]
            velocities = self.dynamics.velocities[self._state_order]
        msg = JointState()
        msg.header.stamp = stamp.to_msg()
        msg.name = self._state_names
        msg.position = positions.tolist()
        msg.velocity = velocities.tolist()
        self._joint_state_pub.publish(msg)

    # ---------------------------------------------------------------------------------------------
    # cameras

    def _start_cameras(self) -> None:
        params = self.params
        settings = CameraSettings(width=params.image_width, height=params.image_height,
                                  horizontal_fov_deg=params.camera_fov_deg, raw=params.publish_raw_images,
                                  jpeg=params.publish_compressed_images, jpeg_quality=params.jpeg_quality,
                                  scene=params.scene)
        self._cameras = CameraProcess(str(self.robot.source), settings)
        self._camera_pubs = {}
        for camera in self.robot.cameras:
            raw = self.create_publisher(Image, camera.topic, IMAGE_QOS) if settings.raw else None
            compressed = (self.create_publisher(CompressedImage, camera.topic + "/compressed", IMAGE_QOS)
                          if settings.jpeg else None)
            self._camera_pubs[camera.name] = (camera.frame, raw, compressed)
        self._camera_thread = threading.Thread(target=self._camera_loop, name="sim_cameras", daemon=True)
        self._camera_thread.start()

    def _camera_loop(self) -> None:
        """Asks the camera process for frames at the camera rate and publishes them."""
        period = 1.0 / self.params.camera_rate_hz
        next_time = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            with self._lock:
                state = self.dynamics.render_state()
            stamp = self.get_clock().now().to_msg()
            try:
                frames = self._cameras.render(state)
            except RuntimeError as error:
                self.get_logger().error(f"cameras stopped: {error}")
                return
            self._publish_frames(frames, stamp)
            next_time += period
            delay = next_time - time.monotonic()
            if delay < 0:  # cannot keep up: skip ahead instead of bursting
                next_time = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def _publish_frames(self, frames: dict[str, tuple[bytes | None, bytes | None]], stamp) -> None:
        width, height = self.params.image_width, self.params.image_height
        for name, (rgb, jpeg) in frames.items():
            frame_id, raw_pub, compressed_pub = self._camera_pubs[name]
            if raw_pub is not None and rgb is not None:
                msg = Image()
                msg.header.stamp = stamp
                msg.header.frame_id = frame_id
                msg.height, msg.width = height, width
                msg.encoding = "rgb8"
                msg.step = width * 3
                msg.data = rgb
                raw_pub.publish(msg)
            if compressed_pub is not None and jpeg is not None:
                msg = CompressedImage()
                msg.header.stamp = stamp
                msg.header.frame_id = frame_id
                msg.format = "rgb8; jpeg compressed bgr8"
                msg.data = jpeg
                compressed_pub.publish(msg)

    def destroy_node(self):
        """Stop the camera thread and its render process before the node goes."""
        self._stop.set()
        if self._camera_thread is not None:
            self._camera_thread.join(timeout=12.0)
            self._cameras.close()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(SimArmNode, "sim_arm_node", args)


if __name__ == "__main__":
    sys.exit(main())
