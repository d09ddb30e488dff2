"""chunk_executor_node: ActionChunks in, a smooth `candidate_command` stream at the controller rate out.

A thin shell around `wall_oss_core.control.executor.ChunkExecutor` (smoothing, alignment, skipping,
jerk-limited switching, holding, EE→joint IK, rejections; see that module). Output goes ONLY to the safety supervisor
(`candidate_command`, sensor_msgs/JointState with position + velocity, stamped with the command time);
nothing here talks to a controller.

Threads: the ROS callbacks and the command timer (on the monotonic clock) run on one SingleThreadedExecutor; decoding and
preparing chunks (IK: about 1 ms per action and arm) runs on one worker thread, so a 30-action
end-effector chunk never delays a control tick. The worker always takes the newest waiting chunk;
older ones it never started are counted as superseded. Prepared chunks are stitched in at the next tick.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, fields

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from wall_oss.msg import ActionChunk

from wall_oss_core import topics
from wall_oss_core.control import executor as core
from wall_oss_core.control.executor import ChunkExecutor, ExecutorConfig, PreparedChunk, Rejected
from wall_oss_core.policy.instruction import DEFAULT_MAX_INSTRUCTION_LENGTH, InstructionError, validate_instruction
from wall_oss_core.policy.observation import JointStateMerger
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_ros.conversions import merge_joint_state, msg_to_chunk, seconds_to_stamp, vector_to_joint_state
from wall_oss_ros.graph import CHUNK_QOS, COMMAND_QOS, JOINT_STATES_QOS, STATUS_QOS, diagnostic_array
from wall_oss_ros.node_runtime import run_node, subscribe_instructions

# The IK worker holds the GIL in long pure-Python stretches; switching threads every 0.5 ms (default 5 ms)
# keeps the command timer on time while a chunk is being prepared.
GIL_SWITCH_INTERVAL = 0.0005

# ExecutorConfig field → (description, (low, high)); the defaults come from ExecutorConfig itself.
EXECUTOR_PARAMETERS = {
    "limit_fraction": ("share of the velocity, acceleration and jerk limits the command stream uses", (0.05, 1.0)),
    "min_correction_fraction": ("share of the limits always left to converging onto a new chunk", (0.01, 1.0)),
    "smoothing_interval": ("knot spacing of the least-squares spline fitted to each chunk (noise smoothing) [s]",
                           (0.01, 2.0)),
    "lookahead": ("where curve + correction would leave a limit, the command tracks the chunk this far ahead [s]",
                  (0.005, 1.0)),
    "max_tick_gap": ("ROS time going back, or leaping more than this between ticks, is a clock jump: hold [s]",
                     (0.02, 10.0)),
    "max_chunk_age": ("chunks whose observation is older than this are rejected as stale [s]", (0.01, 60.0)),
    "max_future_stamp": ("tolerated clock skew of chunk and joint state stamps ahead of this node's clock [s]",
                         (0.0, 10.0)),
    "max_first_action_offset": ("chunks whose first action targets more than this before or after their "
                                "stamp are rejected [s]", (0.001, 10.0)),
    "max_speed_factor": ("reject chunks needing more than this times a joint's URDF velocity limit", (1.0, 100.0)),
    "joint_history_duration": ("measured joint states kept to find the state at a chunk's stamp [s]",
                               (0.1, 120.0)),
    "max_reference_gap": ("largest distance between a chunk stamp and the measured state used as its "
                          "end-effector reference [s]", (0.001, 10.0)),
    "ik_max_position_error": ("IK position error above which an end-effector chunk is rejected [m]", (1e-5, 1.0)),
    "ik_max_rotation_error": ("IK rotation error above which an end-effector chunk is rejected [rad]", (1e-5, 3.2)),
}


@dataclass(frozen=True)
class ExecutorNodeParams:
    robot_config: str
    rate_hz: float
    joint_states_topic: str
    diagnostics_period: float
    max_instruction_length: int
    executor: ExecutorConfig


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]


def declare_parameters(node: Node) -> ExecutorNodeParams:
    """Declare every parameter with a descriptor; rclpy refuses out-of-range values and ExecutorConfig
    refuses inconsistent ones (ValueError), both before the node does anything."""
    def declare(name, default, description, **ranges):
        return node.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True, **ranges)).value

    defaults = ExecutorConfig()
    executor_values = {
        field.name: float(declare(field.name, float(getattr(defaults, field.name)), EXECUTOR_PARAMETERS[field.name][0],
                                  floating_point_range=_float_range(*EXECUTOR_PARAMETERS[field.name][1])))
        for field in fields(ExecutorConfig)}
    params = ExecutorNodeParams(
        robot_config=declare("robot_config", str(default_config_path()),
                             "robot layout YAML (arms, joints, URDF, limits); empty = the package's bimanual.yaml"),
        rate_hz=declare("rate_hz", 200.0, "candidate commands per second (the controller rate) [Hz]",
                        floating_point_range=_float_range(100.0, 500.0)),
        joint_states_topic=declare("joint_states_topic", topics.JOINT_STATES, "measured joint states topic"),
        diagnostics_period=declare("diagnostics_period", 1.0, "seconds between /diagnostics messages",
                                   floating_point_range=_float_range(0.05, 60.0)),
        max_instruction_length=declare("max_instruction_length", DEFAULT_MAX_INSTRUCTION_LENGTH,
                                       "longer instructions are rejected [characters]",
                                       integer_range=[IntegerRange(from_value=1, to_value=100000, step=1)]),
        executor=ExecutorConfig(**executor_values),
    )
    if not params.joint_states_topic:
        raise ValueError("joint_states_topic must not be empty")
    return params


class _ChunkWorker:
    """One thread that decodes and prepares the newest waiting chunk message (IK happens here)."""

    def __init__(self, executor: ChunkExecutor, clock_seconds, on_superseded):
        self._executor = executor
        self._clock_seconds = clock_seconds
        self._on_superseded = on_superseded
        self._condition = threading.Condition()
        self._waiting: ActionChunk | None = None
        self._done: list[PreparedChunk | Rejected] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="chunk_prepare", daemon=True)
        self._thread.start()

    def submit(self, msg: ActionChunk) -> None:
        with self._condition:
            superseded, self._waiting = self._waiting, msg
            self._condition.notify()
        if superseded is not None:
            self._on_superseded(superseded)

    def take_prepared(self) -> list[PreparedChunk | Rejected]:
        with self._condition:
            done, self._done = self._done, []
        return done

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting is not None or self._stopping)
                if self._stopping:
                    return
                msg, self._waiting = self._waiting, None
            try:
                chunk = msg_to_chunk(msg)
            except ValueError as error:
                result = Rejected(core.INVALID_MESSAGE, str(error))
            except Exception as error:  # never let one message end the worker: count it and go on
                result = Rejected(core.PREPARE_FAILED, f"decoding failed: {type(error).__name__}: {error}")
            else:
                result = self._executor.prepare(chunk, self._clock_seconds())  # never raises
            with self._condition:
                self._done.append(result)


class ChunkExecutorNode(Node):
    def __init__(self):
        self.worker: _ChunkWorker | None = None  # destroy_node may run on a node that failed to start
        super().__init__("chunk_executor")
        self.params = declare_parameters(self)
        robot = load_robot_config(self.params.robot_config or default_config_path())
        self.core = ChunkExecutor(BimanualKinematics(robot), self.params.executor)
        self.joint_names = robot.command_joints
        self.joint_states = JointStateMerger(self.joint_names)
        self.joint_states_rejected = 0
        self.instructions_rejected = 0
        self._last_command = None

        self.command_publisher = self.create_publisher(JointState, topics.CANDIDATE_COMMAND, COMMAND_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, STATUS_QOS)
        self.worker = _ChunkWorker(self.core, self._now, self._superseded)
        self.create_subscription(ActionChunk, topics.ACTION_CHUNK, self.worker.submit, CHUNK_QOS)
        self.create_subscription(JointState, self.params.joint_states_topic, self._on_joint_state, JOINT_STATES_QOS)
        subscribe_instructions(self, self._on_instruction)
        # the command tick runs on the monotonic clock: ROS time that stops, steps back or leaps (sim
        # time, a bag restart) must not stop the ticks; the core sees the jump in `now` and holds
        self.create_timer(1.0 / self.params.rate_hz, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(f"commanding {len(self.joint_names)} joints at {self.params.rate_hz:g} Hz on "
                               f"{self.command_publisher.topic_name}; waiting for {self.params.joint_states_topic}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------------------------- inputs
    def _on_joint_state(self, msg: JointState):
        try:
            merged = merge_joint_state(self.joint_states, msg, self._now())
            if merged is None:
                return
            first = self.core.history.latest() is None
            self.core.on_joint_state(merged[1], merged[0], self._now())
        except ValueError as error:
            self.joint_states_rejected += 1
            self.get_logger().warning(f"ignoring joint state ({self.joint_states_rejected} so far): {error}",
                                      throttle_duration_sec=1.0)
            return
        if first:
            self.get_logger().info("first joint state: holding the measured position")

    def _on_instruction(self, msg: String):
        try:
            instruction = validate_instruction(msg.data, self.params.max_instruction_length)
        except InstructionError as error:
            self.instructions_rejected += 1
            self.get_logger().warning(f"instruction rejected ({error.reason}): {error}; keeping the current one")
            return
        if instruction == self.core.instruction:
            return
        dropped = self.core.set_instruction(instruction, self._now())
        text = f"instruction {instruction!r}" if instruction else "empty instruction: paused, holding"
        self.get_logger().info(text + ("; running chunk dropped" if dropped else ""))

    def _superseded(self, msg: ActionChunk):
        self.core.accept(Rejected(core.SUPERSEDED, f"chunk {msg.chunk_id} was replaced by a newer one before "
                                                       "it could be prepared"), self._now())

    # ------------------------------------------------------------------------------------- output
    def _tick(self):
        now = self._now()
        for prepared in self.worker.take_prepared():
            result = self.core.accept(prepared, now)
            if not result:
                self.get_logger().warning(f"chunk rejected ({result.reason}): {result.detail}",
                                          throttle_duration_sec=0.5)
        command = self.core.step(now)
        if command is None:
            return
        self.command_publisher.publish(vector_to_joint_state(self.joint_names, command.positions, command.velocities,
                                                             seconds_to_stamp(now)))
        self._last_command = command

    def _publish_diagnostics(self):
        counters = self.core.counters
        command = self._last_command
        if command is None:
            level, message = DiagnosticStatus.WARN, "waiting for joint states"
        elif self.core.instruction == "":
            level, message = DiagnosticStatus.OK, "paused: holding"
        else:
            level, message = DiagnosticStatus.OK, {"chunk": "following chunks", "transition": "converging onto a new chunk",
                                                   "hold": "holding (no chunk)"}[command.source]
        last = self.core.last_rejection
        values = [("source", command.source if command is not None else "none"),
                  ("instruction", self.core.instruction if self.core.instruction is not None else "(none yet)"),
                  ("chunks_accepted", counters.accepted), ("chunks_rejected", counters.rejected_total)]
        values += [(f"rejected_{reason}", counters.rejected[reason]) for reason in core.REJECTION_REASONS]
        values += [("last_rejection", f"{last.reason}: {last.detail}" if last is not None else ""),
                   ("actions_skipped", counters.skipped_actions), ("holds", counters.holds),
                   ("chunks_discarded", counters.discarded), ("clock_jumps", counters.clock_jumps),
                   ("ticks_chunk", counters.ticks["chunk"]), ("ticks_transition", counters.ticks["transition"]),
                   ("ticks_hold", counters.ticks["hold"]),
                   ("joint_states_rejected", self.joint_states_rejected),
                   ("instructions_rejected", self.instructions_rejected), ("rate_hz", self.params.rate_hz)]
        self.diagnostics_publisher.publish(diagnostic_array(self, "chunk executor", level, message, values))

    def destroy_node(self):
        if self.worker is not None:
            self.worker.stop()
        super().destroy_node()


def main(args=None) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    return run_node(ChunkExecutorNode, "chunk_executor", args)


if __name__ == "__main__":
    sys.exit(main())
