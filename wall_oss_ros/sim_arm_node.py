"""sim_arm_node: the simulated bimanual arm, standing in for a robot's ros2_control controllers and cameras.

It listens where the real controllers listen (`/<controller>/commands` as std_msgs/Float64MultiArray,
or `/<controller>/joint_trajectory` as trajectory_msgs/JointTrajectory, as config/bimanual.yaml
selects), integrates the joints with `wall_oss_core.sim.kinematic_arm.ArmDynamics` on a timer, publishes
`/joint_states`, and renders the face and wrist cameras in a child process (`CameraProcess`: rendering
takes ~10 ms a camera in Python and, in a thread, would delay the physics timer through the GIL).
A robot config with `sim: {backend: aloha_mujoco}` (config/aloha.yaml) is simulated in MuJoCo instead
(`wall_oss_core.sim.aloha`: physics with contacts, objects placed from the `seed` parameter, the
MJCF's cameras); the node's topics and behaviour stay the same, and it adds the scene's privileged
outputs: the object poses (`/wall_oss/sim/object_poses`, MarkerArray: rviz draws them, the scripted
expert plans from them) and the task progress of the task the instruction names (or the `task`
parameter), scored after every physics tick (`wall_oss_core.sim.tasks.TaskScorer`) and published,
latched, when a stage first holds: `/wall_oss/sim/task_progress` (Float64, 0–100) and
`/wall_oss/sim/task_stage` (String `<task>/<stage>`; `<task>/started` when a task is selected).
Malformed commands are rejected, counted and logged.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from wall_oss_core import topics
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.clock import SimulatedClock
from wall_oss_core.sim.kinematic_arm import (
    ArmDynamics,
    ArmDynamicsConfig,
    CameraProcess,
    CameraSettings,
    TrajectoryTarget,
)
from wall_oss_core.topics import INSTRUCTION, SIM_OBJECT_POSES, SIM_TASK_PROGRESS, SIM_TASK_STAGE, qualified
from wall_oss_ros.conversions import object_poses_to_markers, seconds_to_stamp, stamp_to_seconds
from wall_oss_ros.graph import CLOCK_QOS, COMMAND_QOS, IMAGE_QOS, JOINT_STATES_PUBLISHER_QOS, SIM_TASK_QOS
from wall_oss_ros.node_runtime import declare_dataclass_parameters, run_node, subscribe_instructions

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
    task: str = ""
    instruction_topic: str = qualified(INSTRUCTION)
    object_pose_rate_hz: float = 20.0
    publish_clock: bool = False
    real_time_factor: float = 1.0


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
    "task": ("MuJoCo robots: task scored from the start (config/tasks.yaml); empty = none until an instruction "
             "names one", None),
    "instruction_topic": ("MuJoCo robots: instructions select the scored task", None),
    "publish_clock": ("be the graph's clock: publish /clock in simulated time and stamp everything with it "
                      "(run the other nodes with use_sim_time:=true)", None),
    "real_time_factor": ("with publish_clock: simulated seconds per wall second (below 1 when the machine cannot "
                         "run the graph in real time)", FloatingPointRange(from_value=0.05, to_value=10.0)),
    "object_pose_rate_hz": ("MuJoCo robots: rate of the privileged object poses [Hz]",
                            FloatingPointRange(from_value=1.0, to_value=500.0)),
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
        self.scorer = None  # task progress: MuJoCo scenes only
        if self.robot.simulator == "aloha_mujoco":
            from wall_oss_core.sim.aloha import AlohaArmDynamics, AlohaSim
            from wall_oss_core.sim.tasks import TaskScorer, load_tasks

            scene = AlohaSim(self.robot, self.params.scene or self.robot.sim_scene, seed=self.params.seed)
            self.dynamics = AlohaArmDynamics(scene, initial)
            self.scorer = TaskScorer(load_tasks(), scene)
            if self.params.task:
                self.scorer.select_task(self.params.task)
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

        if self.scorer is not None:
            self._start_scoring()
        self._last_step = time.monotonic()
        self._sim_clock = None
        if self.params.publish_clock:
            self._sim_clock = SimulatedClock(time.time(), self.params.real_time_factor, MAX_STEP)
            self._clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
        # a wall-clock timer: the sim drives time (with publish_clock) and must not wait for it
        self.create_timer(1.0 / self.params.physics_rate_hz, self._on_physics_tick, clock=RosClock(clock_type=ClockType.STEADY_TIME))
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
        start = stamp if stamp > 0 else self.now()
        with self._lock:
            try:
                trajectory = TrajectoryTarget(start, self.dynamics.positions[indices], times, positions)
            except ValueError as error:
                self._reject(controller, str(error))
                return
            self._trajectories[controller] = (indices, trajectory)
        self.accepted_commands += 1

    def now(self) -> float:
        """The graph's time [s]: the simulated clock when this node publishes /clock, else the node's clock."""
        if self._sim_clock is not None:
            return self._sim_clock.now
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_physics_tick(self) -> None:
        now_monotonic = time.monotonic()
        wall_dt = now_monotonic - self._last_step
        self._last_step = now_monotonic
        with self._lock:
            dt = self._sim_clock.advance(wall_dt) if self._sim_clock is not None else min(wall_dt, MAX_STEP)
            t = self.now()
            for indices, trajectory in self._trajectories.values():
                self.dynamics.set_targets(indices, trajectory.sample(t))
            self.dynamics.step(dt)
            positions = self.dynamics.positions[self._state_order]
            velocities = self.dynamics.velocities[self._state_order]
            reached = self.scorer.update() if self.scorer is not None else []
            task = self.scorer.task if reached else None
        stamp = seconds_to_stamp(t)
        if self._sim_clock is not None:
            self._clock_pub.publish(Clock(clock=stamp))
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = self._state_names
        msg.position = positions.tolist()
        msg.velocity = velocities.tolist()
        self._joint_state_pub.publish(msg)
        for stage in reached:
            self._publish_stage(task.name, stage.name)
        if reached:
            self._progress_pub.publish(Float64(data=float(self.scorer.tracker.progress)))

    # ---------------------------------------------------------------------------------------------
    # task progress and privileged object poses (MuJoCo scenes)

    def _start_scoring(self) -> None:
        latched = SIM_TASK_QOS
        self._progress_pub = self.create_publisher(Float64, SIM_TASK_PROGRESS, latched)
        self._stage_pub = self.create_publisher(String, SIM_TASK_STAGE, latched)
        self._objects_pub = self.create_publisher(MarkerArray, SIM_OBJECT_POSES, 10)
        self._object_sizes = self.dynamics.sim.object_sizes()
        subscribe_instructions(self, self._on_instruction, self.params.instruction_topic)
        self.create_timer(1.0 / self.params.object_pose_rate_hz, self._publish_object_poses)
        if self.scorer.task is not None:
            self._announce_task()

    def _announce_task(self) -> None:
        """A newly scored task starts at 0 (latched, so late subscribers see which task is scored)."""
        self._publish_stage(self.scorer.task.name, "started")
        self._progress_pub.publish(Float64(data=0.0))
        self.get_logger().info(f"scoring task {self.scorer.task.name}")

    def _publish_stage(self, task: str, stage: str) -> None:
        self._stage_pub.publish(String(data=f"{task}/{stage}"))

    def _on_instruction(self, msg: String) -> None:
        with self._lock:
            previous = self.scorer.task
            task = self.scorer.select(msg.data)
        if task is None:
            self.get_logger().warning(f"instruction {msg.data!r} names no task of scene {self.dynamics.sim.scene!r}; "
                                      "no task progress is scored")
        elif task is not previous:
            self._announce_task()

    def _publish_object_poses(self) -> None:
        with self._lock:
            poses = self.dynamics.sim.object_poses()
        self._objects_pub.publish(object_poses_to_markers(poses, self._object_sizes, self.robot.base_frame,
                                                          seconds_to_stamp(self.now())))

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
        rate = self.params.camera_rate_hz * (self.params.real_time_factor if self._sim_clock is not None else 1.0)
        period = 1.0 / rate  # wall time: the camera rate is in simulated time
        next_time = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            with self._lock:
                state = self.dynamics.render_state()
                stamp = seconds_to_stamp(self.now())
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
