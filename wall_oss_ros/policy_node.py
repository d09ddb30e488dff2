"""policy_node: camera frames + joint states + instruction → ActionChunk, with inference off the executor.

Callbacks only convert and store inputs (`wall_oss_core.policy.images`, `wall_oss_core.policy.observation`); one
plain worker thread assembles the newest complete, fresh observation whenever it is free, runs the
policy backend on it and publishes the chunk stamped with the observation time. A chunk computed
for an instruction that changed meanwhile is dropped, so after a new instruction every published
chunk carries it. Bad inputs and backend errors are logged, counted and shown on /diagnostics;
the node keeps running.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray
from wall_oss.msg import ActionChunk

from wall_oss_core import topics
from wall_oss_core.backends.replay import ALIGNMENTS, ReplayPolicy, replay_policy_from_path
from wall_oss_core.policy.images import ImageError, compressed_msg_to_rgb, image_msg_to_rgb
from wall_oss_core.policy.instruction import InstructionError, validate_instruction
from wall_oss_core.policy.interface import DelayedPolicy, Observation, Policy, PolicyError
from wall_oss_core.policy.observation import AssemblyLimits, InputRejected, ObservationAssembler, Unavailable
from wall_oss_core.robot.config import RobotConfig, default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.demo_trajectory import DemoTrajectory
from wall_oss_core.topics import SIM_OBJECT_POSES
from wall_oss_ros.conversions import chunk_to_msg, markers_to_object_poses, stamp_to_seconds
from wall_oss_ros.graph import CHUNK_QOS, IMAGE_QOS, JOINT_STATES_QOS, STATUS_QOS, diagnostic_array
from wall_oss_ros.node_runtime import declare_dataclass_parameters, run_node, subscribe_instructions

# scripted: the sim's expert (MuJoCo robots, privileged object poses); demonstration: a built-in
# reach-and-grasp demonstration replayed (any robot, open loop); replay: recorded chunks; wall_oss: a checkpoint
BACKENDS = ("scripted", "demonstration", "replay", "wall_oss")
IMAGE_TRANSPORTS = ("raw", "compressed")
DTYPES = ("float32", "bfloat16", "float16")
LATENCY_WINDOW = 100  # inferences the latency percentiles are taken over
IDLE_POLL = 0.1  # [s] the worker re-checks freshness this often even when no input arrives


@dataclass(frozen=True)
class PolicyNodeParams:
    """Parameters of policy_node (config/policy_node.params.yaml holds the launch defaults)."""

    robot_config: str = ""
    backend: str = "scripted"
    replay_source: str = ""
    replay_topic: str = ""
    replay_alignment: str = "relative"
    replay_loop: bool = True
    checkpoint: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    action_dt: float = 1.0 / 32.0
    num_threads: int = 0
    image_transport: str = "raw"
    joint_states_topic: str = topics.JOINT_STATES
    camera_max_age: float = 0.5
    joint_state_max_age: float = 0.2
    max_clock_skew: float = 0.05
    min_inference_period: float = 0.1
    inference_delay: float = 0.0
    object_poses_topic: str = SIM_OBJECT_POSES
    max_instruction_length: int = 512
    diagnostics_period: float = 1.0


_DESCRIPTIONS = {
    "robot_config": ("robot layout YAML; empty = the package's config/bimanual.yaml", None),
    "backend": (f"policy backend: {' | '.join(BACKENDS)}", None),
    "replay_source": ("replay backend: chunk file (.npz / .safetensors) or rosbag2 bag (directory, .mcap, .db3)", None),
    "replay_topic": ("replay backend: ActionChunk topic in the bag; empty = its only ActionChunk topic", None),
    "replay_alignment": (f"replay backend: how recorded chunks align to observations: {' | '.join(ALIGNMENTS)}", None),
    "replay_loop": ("replay backend: start over at the end of the recording (relative alignment only)", None),
    "checkpoint": ("wall_oss backend: local checkpoint directory", None),
    "device": ("wall_oss backend: torch device, e.g. cpu or cuda:0", None),
    "dtype": (f"wall_oss backend: model dtype: {' | '.join(DTYPES)}", None),
    "action_dt": ("wall_oss backend: seconds between the actions of a chunk",
                  FloatingPointRange(from_value=0.001, to_value=1.0)),
    "num_threads": ("wall_oss backend: torch CPU threads for inference; 0 = torch's default (all cores). "
                    "On a CPU shared with the rest of the graph, fewer threads avoid spin-waiting workers",
                    IntegerRange(from_value=0, to_value=256)),
    "image_transport": ("raw: sensor_msgs/Image on each camera topic; compressed: CompressedImage on <topic>/compressed",
                        None),
    "joint_states_topic": ("where joint states arrive", None),
    "camera_max_age": ("a camera frame older than this [s] blocks inference", FloatingPointRange(from_value=0.001, to_value=60.0)),
    "joint_state_max_age": ("a joint state older than this [s] blocks inference",
                            FloatingPointRange(from_value=0.001, to_value=60.0)),
    "max_clock_skew": ("inputs stamped more than this [s] after now are rejected as a clock problem",
                       FloatingPointRange(from_value=0.0, to_value=10.0)),
    "min_inference_period": ("at least this long [s] between inferences (caps the chunk rate of fast backends)",
                             FloatingPointRange(from_value=0.0, to_value=60.0)),
    "inference_delay": ("extra seconds every inference takes (how the graph copes with a slow model)",
                        FloatingPointRange(from_value=0.0, to_value=60.0)),
    "object_poses_topic": ("scripted backend: the sim's privileged object poses (MarkerArray)", None),
    "max_instruction_length": ("longer instructions are rejected [characters]", IntegerRange(from_value=1, to_value=100000)),
    "diagnostics_period": ("period of /diagnostics [s]", FloatingPointRange(from_value=0.05, to_value=60.0)),
}


def declare_params(node: Node) -> PolicyNodeParams:
    """Declare every parameter with description and range; return the values, validated beyond ranges."""
    params = declare_dataclass_parameters(node, PolicyNodeParams, _DESCRIPTIONS)
    for name, allowed in (("backend", BACKENDS), ("image_transport", IMAGE_TRANSPORTS),
                          ("replay_alignment", ALIGNMENTS), ("dtype", DTYPES)):
        if getattr(params, name) not in allowed:
            raise ValueError(f"parameter {name} must be one of {allowed}, got {getattr(params, name)!r}")
    if params.backend == "replay" and not params.replay_source:
        raise ValueError("backend replay needs parameter replay_source (a chunk file or a bag)")
    if params.backend == "wall_oss" and not params.checkpoint:
        raise ValueError("backend wall_oss needs parameter checkpoint (a local checkpoint directory)")
    if params.replay_loop and params.replay_alignment != "relative" and params.backend == "replay":
        raise ValueError("replay_loop needs replay_alignment relative")
    return params


def make_policy(params: PolicyNodeParams, robot: RobotConfig, sleep=None) -> Policy:
    """The configured backend, slowed by `inference_delay` when asked (`sleep`: how to wait, e.g. on the
    node's clock, so the delay is in simulated time on use_sim_time). The model backend is imported only
    when chosen (it pulls in torch), the scripted expert likewise (MuJoCo)."""
    policy = _make_backend(params, robot)
    return DelayedPolicy(policy, params.inference_delay, sleep=sleep) if params.inference_delay > 0 else policy


def _make_backend(params: PolicyNodeParams, robot: RobotConfig) -> Policy:
    if params.backend == "demonstration":
        # The scripted reach-and-grasp demonstration, replayed open loop: moves any robot with nothing configured.
        return ReplayPolicy(DemoTrajectory(BimanualKinematics(robot)).recording(), loop=params.replay_loop)
    if params.backend == "replay":
        return replay_policy_from_path(params.replay_source, topic=params.replay_topic or None,
                                       alignment=params.replay_alignment, loop=params.replay_loop)
    if params.backend == "scripted":
        from wall_oss_core.sim.expert import ObjectPoseFeed, ScriptedExpert
        from wall_oss_core.sim.tasks import load_tasks

        return ScriptedExpert(BimanualKinematics(robot), load_tasks(), ObjectPoseFeed())
    from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig

    robot_cameras = tuple(camera.name for camera in robot.cameras)
    policy = WallOssPolicy(WallOssPolicyConfig(checkpoint_dir=params.checkpoint, dtype=params.dtype,
                                               device=params.device, action_dt=params.action_dt,
                                               num_threads=params.num_threads or None,
                                               camera_names=robot_cameras))
    missing = [name for name in policy.camera_names if name not in robot_cameras]
    if missing:
        raise PolicyError(f"checkpoint {params.checkpoint} needs cameras {missing} that {robot.source} does not "
                          f"define (it has {list(robot_cameras)})")
    return policy


class PolicyStats:
    """Counters the node reports on /diagnostics; written by callbacks and the worker, read by the timer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rejections: Counter[str] = Counter()
        self.unavailable: Counter[str] = Counter()
        self.published = 0
        self.policy_errors = 0
        self.discarded = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.waiting_for = "no inputs yet"
        self.last_error = ""
        self.last_chunk_time: float | None = None  # monotonic


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy_node", **kwargs)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None  # started last, once everything else is built
        self.params = declare_params(self)
        self.robot = load_robot_config(self.params.robot_config or default_config_path())
        self.assembler = ObservationAssembler(
            BimanualKinematics(self.robot),
            AssemblyLimits(camera_max_age=self.params.camera_max_age,
                           joint_state_max_age=self.params.joint_state_max_age,
                           max_clock_skew=self.params.max_clock_skew))
        self.policy = make_policy(self.params, self.robot, sleep=self._sleep_on_clock)
        if self.policy.action_space != self.robot.action_space:
            self.get_logger().warning(f"backend speaks {self.policy.action_space}, the robot config selects "
                                      f"{self.robot.action_space}; the executor follows each chunk's action space")
        self.stats = PolicyStats()
        self._instruction = ""  # "" = paused; nothing runs until an instruction arrives
        self._instruction_version = 0
        self._instruction_lock = threading.Lock()
        self._chunk_id = 0

        self._chunk_pub = self.create_publisher(ActionChunk, topics.ACTION_CHUNK, CHUNK_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, STATUS_QOS)
        for camera in self.robot.cameras:
            if self.params.image_transport == "raw":
                self.create_subscription(Image, camera.topic,
                                         lambda msg, c=camera.name: self._on_image(c, msg, image_msg_to_rgb),
                                         IMAGE_QOS)
            else:
                self.create_subscription(CompressedImage, camera.topic + "/compressed",
                                         lambda msg, c=camera.name: self._on_image(c, msg, compressed_msg_to_rgb),
                                         IMAGE_QOS)
        self.create_subscription(JointState, self.params.joint_states_topic, self._on_joint_state, JOINT_STATES_QOS)
        subscribe_instructions(self, self._on_instruction)
        backend = getattr(self.policy, "policy", self.policy)  # under a DelayedPolicy
        self._object_feed = getattr(backend, "object_poses", None) if self.params.backend == "scripted" else None
        if self._object_feed is not None:
            self.create_subscription(MarkerArray, self.params.object_poses_topic, self._on_object_poses, 10)
        self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)

        self._worker = threading.Thread(target=self._worker_loop, name="policy_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"policy backend {self.params.backend} ({self.policy.action_space}, {len(self.policy.action_names)} dims); "
            f"{self.params.image_transport} images from {', '.join(c.topic for c in self.robot.cameras)}; "
            "paused until an instruction arrives")

    # ---------------------------------------------------------------------------------------------
    # inputs (executor thread): convert, validate, store, wake the worker

    def _reject(self, key: str, message: str) -> None:
        with self.stats.lock:
            self.stats.rejections[key] += 1
            count = self.stats.rejections[key]
        self.get_logger().warning(f"rejected {key} (#{count}): {message}", throttle_duration_sec=1.0)

    def _on_image(self, camera: str, msg, convert) -> None:
        try:
            rgb = convert(msg)
            self.assembler.add_image(camera, rgb, stamp_to_seconds(msg.header.stamp))
        except (ImageError, InputRejected) as error:
            self._reject(f"image.{error.reason}", f"camera {camera}: {error}")
            return
        self._wake.set()

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self.assembler.add_joint_state(msg.name, msg.position, stamp_to_seconds(msg.header.stamp))
        except InputRejected as error:
            self._reject(f"joint_state.{error.reason}", str(error))
            return
        self._wake.set()

    def _sleep_on_clock(self, seconds: float) -> None:
        """Waits `seconds` of the node's time (simulated on use_sim_time); returns early when the node stops."""
        self.get_clock().sleep_for(Duration(seconds=seconds), context=self.context)

    def _on_object_poses(self, msg: MarkerArray) -> None:
        try:
            self._object_feed.update(markers_to_object_poses(msg))
        except ValueError as error:
            self._reject("object_poses", str(error))

    def _on_instruction(self, msg: String) -> None:
        try:
            instruction = validate_instruction(msg.data, self.params.max_instruction_length)
        except InstructionError as error:
            self._reject(f"instruction.{error.reason}", f"{error}; keeping the current task")
            return
        with self._instruction_lock:
            if instruction == self._instruction:
                return
            self._instruction = instruction
            self._instruction_version += 1
        self.get_logger().info(f"instruction: {instruction!r}" if instruction else "empty instruction: paused")
        self._wake.set()

    # ---------------------------------------------------------------------------------------------
    # inference (worker thread only)

    def _worker_loop(self) -> None:
        next_allowed = 0.0
        while not self._stop.is_set():
            self._wake.wait(IDLE_POLL)
            self._wake.clear()
            if self._stop.wait(max(0.0, next_allowed - time.monotonic())):
                break
            with self._instruction_lock:
                instruction, version = self._instruction, self._instruction_version
            if not instruction:
                with self.stats.lock:
                    self.stats.waiting_for = "paused: empty instruction"
                continue
            now = self.get_clock().now().nanoseconds * 1e-9
            result = self.assembler.assemble(now, instruction)
            if isinstance(result, Unavailable):
                self._note_unavailable(result)
                continue
            next_allowed = time.monotonic() + self.params.min_inference_period
            self._infer(result, version)

    def _note_unavailable(self, unavailable: Unavailable) -> None:
        if unavailable.reason == "not_newer":  # the normal state between two inputs
            return
        with self.stats.lock:
            self.stats.unavailable[unavailable.key] += 1
            self.stats.waiting_for = unavailable.detail

    def _note_error(self, what: str, error: Exception) -> None:
        with self.stats.lock:
            self.stats.policy_errors += 1
            self.stats.last_error = f"{type(error).__name__}: {error}"
            self.stats.waiting_for = "the last inference failed"
        self.get_logger().error(f"{what}: {error}", throttle_duration_sec=1.0)

    def _infer(self, observation: Observation, version: int) -> None:
        started = time.perf_counter()
        try:
            chunk = self.policy.predict(observation)
            if chunk.actions.shape[1] != len(self.policy.action_names):
                raise PolicyError(f"backend returned {chunk.actions.shape[1]} action dimensions, it declares "
                                  f"{len(self.policy.action_names)}")
            if not np.all(np.isfinite(chunk.actions)):
                raise PolicyError("backend returned non-finite actions")
        except Exception as error:  # any backend failure is reported; the node keeps serving
            self._note_error(f"inference failed at {observation.stamp:.3f}", error)
            return
        latency = time.perf_counter() - started
        with self._instruction_lock:
            stale = version != self._instruction_version
        if stale:
            with self.stats.lock:
                self.stats.discarded += 1
            self.get_logger().info("instruction changed during inference; chunk dropped")
            return
        chunk.stamp = observation.stamp
        chunk.instruction = observation.instruction
        chunk.inference_latency = latency
        self._chunk_id += 1
        try:
            self._chunk_pub.publish(chunk_to_msg(chunk, self._chunk_id, frame_id=self.robot.base_frame))
        except Exception as error:
            if self.context.ok():  # otherwise Ctrl-C shut ROS down while this inference was running
                self._note_error(f"publishing chunk {self._chunk_id} failed", error)
            return
        with self.stats.lock:
            self.stats.published += 1
            self.stats.latencies.append(latency)
            self.stats.last_chunk_time = time.monotonic()
            self.stats.waiting_for = ""

    # ---------------------------------------------------------------------------------------------
    # diagnostics (executor thread)

    def _publish_diagnostics(self) -> None:
        with self._instruction_lock:
            instruction = self._instruction
        stats = self.stats
        with stats.lock:
            latencies = np.array(stats.latencies)
            values = {
                "backend": self.params.backend,
                "instruction": instruction,
                "paused": str(not instruction).lower(),
                "chunks_published": str(stats.published),
                "policy_errors": str(stats.policy_errors),
                "chunks_discarded_instruction_changed": str(stats.discarded),
                "inference_latency_p50_ms": f"{np.percentile(latencies, 50) * 1e3:.2f}" if latencies.size else "",
                "inference_latency_p99_ms": f"{np.percentile(latencies, 99) * 1e3:.2f}" if latencies.size else "",
                "rejected_total": str(sum(stats.rejections.values())),
                "waiting_for": stats.waiting_for,
                "last_error": stats.last_error,
            }
            values.update({f"rejected.{key}": str(count) for key, count in sorted(stats.rejections.items())})
            values.update({f"no_observation.{key}": str(count) for key, count in sorted(stats.unavailable.items())})
            recent_chunk = stats.last_chunk_time is not None and time.monotonic() - stats.last_chunk_time < 2.0
        if not instruction:
            level, message = DiagnosticStatus.OK, "paused: empty instruction"
        elif recent_chunk:
            level, message = DiagnosticStatus.OK, f"publishing chunks ({values['chunks_published']} so far)"
        else:
            level, message = DiagnosticStatus.WARN, f"no chunks: {values['waiting_for']}"
        self._diagnostics_pub.publish(diagnostic_array(self, "policy", level, message, values.items()))

    def destroy_node(self):
        """Stop the worker first; an inference in flight finishes in the background (the thread is a daemon)."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args=None) -> int:
    return run_node(PolicyNode, "policy_node", args)


if __name__ == "__main__":
    sys.exit(main())
