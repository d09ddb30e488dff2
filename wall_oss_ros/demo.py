"""`wall-oss demo`: the whole graph doing a task on the simulated ALOHA robot, recorded and summarized.

Launches launch/sim.launch.yaml through the launch runner on config/aloha.yaml (MuJoCo physics + cameras,
policy, chunk executor, safety supervisor), publishes the task's instruction (transient local, so late
joiners get it), records the run to an MCAP bag in runs/<timestamp>/ while showing one updating
progress line, then writes a video of the face camera (`video.mp4`) and plots of the run (joint
positions and task progress over time, `plots/run.png`) there and prints what happened: the task
progress the sim scored, chunks received, the command rate the controllers saw (mean and p99 period),
safety events, how far the arms moved, and where the bag, video, plots and node logs are.

Policy (the first line of the output says which drives): by default the scripted expert
(`--scripted`, the policy node's `scripted` backend: plans from the sim's privileged object poses),
since no trained built-in checkpoint exists yet; `--checkpoint DIR` runs a Wall-OSS checkpoint;
`--untrained` runs an UNTRAINED model with random weights written by the checkpoint generator into
the run directory, so the whole model path (preprocessing, prefix-cached flow sampling, EE actions →
IK) runs with nothing but this repository; its motions are meaningless, and the safety supervisor keeps
them within limits. The run ends a moment after the task succeeds, or after --duration seconds. Exit
status 1 when the graph misbehaves: a node died, no chunk or no controller command arrived, or the
graph did not come up in time.
"""
from __future__ import annotations

import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wall_oss_core.evaluation.closed_loop import EpisodeMonitor, frame_rate, write_run_plot, write_video
from wall_oss_core.paths import share_file
from wall_oss_core.policy.images import ImageError, compressed_msg_to_rgb
from wall_oss_core.robot.config import RobotConfig, load_robot_config
from wall_oss_core.topics import SIM_OBJECT_POSES, SIM_TASK_PROGRESS, SIM_TASK_STAGE
from wall_oss_ros.launch_runner import LaunchError, LaunchRunner, parse_assignments, plan_launch, resolve_launch_file

ALOHA_CONFIG = "config/aloha.yaml"
STATE_NAMES = {0: "OK", 1: "LIMITING", 2: "HOLD", 3: "ESTOP", 4: "FAULT"}
QUIET_STATES = ("OK", "LIMITING")  # states that are not a safety event
MAX_VIDEO_FRAMES = 1200  # two minutes at 10 Hz; a longer run's video stops there
SUCCESS_LINGER = 1.5  # [s] the run goes on this long after the task succeeded (the video shows the result)
JOINT_STATE_SAMPLING = 10  # one joint state in this many is decoded for the arm-motion statistic


@dataclass
class DemoStats:
    """What the demo process observed on the graph's topics (fed by the recorder's message hook)."""

    chunk_ids: list[int] = field(default_factory=list)
    command_times: list[float] = field(default_factory=list)  # receive times of one controller's commands [s]
    safety_state: str = "(none yet)"
    safety_reason: str = ""
    safety_counters: tuple[int, int, int] = (0, 0, 0)  # passed, modified, rejected
    safety_events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, state, reason)
    start_positions: np.ndarray | None = None
    max_excursion: float = 0.0  # largest joint distance from the start [rad or m]
    joint_state_count: int = 0  # decoded (sampled) joint states
    joint_samples: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (receive time, positions)
    frames: list[np.ndarray] = field(default_factory=list)  # face camera, from the first chunk on
    frame_times: list[float] = field(default_factory=list)

    def command_rate(self, window: float | None = None) -> float:
        times = self.command_times
        if window is not None:
            times = [t for t in times if t >= times[-1] - window] if times else []
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def command_periods_ms(self) -> np.ndarray:
        return np.diff(np.asarray(self.command_times)) * 1000.0


class _Observer:
    """Turns raw recorded messages into DemoStats; deserializes only the few topics it reads."""

    def __init__(self, stats: DemoStats, topics: dict[str, str], command_topic: str, joint_names: tuple[str, ...],
                 clock_origin: float, monitor: EpisodeMonitor | None):
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CompressedImage, JointState
        from std_msgs.msg import String
        from wall_oss.msg import ActionChunk, SafetyStatus

        self._deserialize = deserialize_message
        self._types = {topics["chunk"]: ActionChunk, topics["safety"]: SafetyStatus, topics["joints"]: JointState,
                       topics["face_view"]: CompressedImage}
        if "task_stage" in topics:
            self._types[topics["task_stage"]] = String
        self.monitor = monitor
        self._topics = topics
        self._command_topic = command_topic
        self._joint_names = joint_names
        self._origin = clock_origin  # events are reported relative to this time (the demo's start) [s]
        self._joint_messages = 0
        self.stats = stats

    def __call__(self, topic: str, raw: bytes, stamp_ns: int) -> None:
        t = stamp_ns * 1e-9
        stats = self.stats
        if topic == self._command_topic:
            stats.command_times.append(t)
            return
        message_type = self._types.get(topic)
        if message_type is None:
            return
        if topic == self._topics["joints"]:
            self._joint_messages += 1
            if self._joint_messages % JOINT_STATE_SAMPLING:  # the excursion needs no more; spare the CPU
                return
        if topic == self._topics["face_view"] and (not stats.chunk_ids or len(stats.frames) >= MAX_VIDEO_FRAMES):
            return  # the video shows the run from its first chunk; the JPEG is decoded only when kept
        message = self._deserialize(raw, message_type)
        if topic == self._topics["chunk"]:
            stats.chunk_ids.append(int(message.chunk_id))
            if self.monitor is not None:
                self.monitor.on_chunk(message.inference_latency, t)
        elif topic == self._topics["face_view"]:
            try:
                stats.frames.append(compressed_msg_to_rgb(message))
            except ImageError:
                return
            stats.frame_times.append(t)
        elif topic == self._topics.get("task_stage"):
            if self.monitor is not None:
                self.monitor.on_stage(message.data, t)
        elif topic == self._topics["safety"]:
            state = STATE_NAMES.get(message.state, message.state_name or str(message.state))
            if state != stats.safety_state and state not in QUIET_STATES:
                stats.safety_events.append((t - self._origin, state, message.reason))
            stats.safety_state, stats.safety_reason = state, message.reason
            stats.safety_counters = (message.commands_passed, message.commands_modified, message.commands_rejected)
        else:
            index = {name: i for i, name in enumerate(message.name)}
            if not all(name in index for name in self._joint_names):
                return
            positions = np.array([message.position[index[name]] for name in self._joint_names])
            if stats.start_positions is None:
                stats.start_positions = positions
            stats.max_excursion = max(stats.max_excursion, float(np.max(np.abs(positions - stats.start_positions))))
            stats.joint_state_count += 1
            if stats.chunk_ids:
                stats.joint_samples.append((t, positions))


def _run_directory(root: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, suffix = root / stamp, 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{stamp}-{suffix}"
    candidate.mkdir(parents=True)
    return candidate


def record_topics(robot: RobotConfig, namespace: str) -> dict[str, str]:
    """Everything worth keeping from a demo run (camera frames as JPEG to keep the bag small)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = {"joints": "/joint_states", "instruction": f"{ns}/instruction", "chunk": f"{ns}/action_chunk",
              "candidate": f"{ns}/candidate_command", "safety": f"{ns}/safety_status", "diagnostics": "/diagnostics"}
    suffix = "commands" if robot.controller_interface == "forward_command" else "joint_trajectory"
    for arm in robot.arms:
        topics[arm.controller] = f"/{arm.controller}/{suffix}"
        topics[arm.gripper_controller] = f"/{arm.gripper_controller}/{suffix}"
    for camera in robot.cameras:
        topics[camera.name] = f"{camera.topic}/compressed"
    if robot.simulator == "aloha_mujoco":
        topics.update(task_stage=SIM_TASK_STAGE, task_progress=SIM_TASK_PROGRESS, object_poses=SIM_OBJECT_POSES)
    return topics


def _format_summary(stats: DemoStats, *, duration: float, policy: str, command_topic: str, bag: Path,
                    counts: dict[str, int], logs: Path, problems: list[str], monitor: EpisodeMonitor | None = None,
                    outputs: list[Path] = ()) -> str:
    periods = stats.command_periods_ms()
    lines = [f"wall_oss demo summary: {duration:.1f} s on the simulated arm, policy: {policy}"]
    if monitor is not None:
        reached = ", ".join(f"{name} ({credit:.0f})" for name, credit in monitor.reached.items()) or "none"
        success = (f"succeeded after {monitor.success_time - monitor.started:.1f} s"
                   if monitor.success_time is not None and monitor.started is not None else "not done")
        lines.append(f"  task progress          : {monitor.progress:.0f} / 100 on {monitor.task} ({success}); "
                     f"stages reached: {reached}")
    ids = stats.chunk_ids
    gaps = sum(max(0, b - a - 1) for a, b in itertools.pairwise(ids))
    lines.append(f"  action chunks received : {len(ids)}" + (
        f" ({len(ids) / duration:.1f}/s, ids {ids[0]}..{ids[-1]}, {gaps} missing)" if ids else ""))
    if len(periods):
        lines.append(f"  controller commands    : {len(stats.command_times)} on {command_topic}, "
                     f"{stats.command_rate():.1f} Hz (period mean {periods.mean():.2f} ms, "
                     f"p99 {np.percentile(periods, 99):.2f} ms, max {periods.max():.2f} ms)")
    else:
        lines.append(f"  controller commands    : {len(stats.command_times)} on {command_topic}")
    passed, modified, rejected = stats.safety_counters
    events = ", ".join(f"{state} at {t:.1f} s ({reason})" for t, state, reason in stats.safety_events[:5])
    more = f" and {len(stats.safety_events) - 5} more" if len(stats.safety_events) > 5 else ""
    lines.append(f"  safety                 : final state {stats.safety_state}; commands passed {passed}, "
                 f"modified {modified}, rejected {rejected}; events (time since start): "
                 f"{events + more if events else 'none'}")
    lines.append(f"  arm motion             : largest joint excursion {stats.max_excursion:.3f} "
                 f"(from {stats.joint_state_count} sampled joint states)")
    size = sum(f.stat().st_size for f in bag.rglob("*") if f.is_file()) if bag.exists() else 0
    lines.append(f"  bag                    : {bag} (mcap, {len(counts)} topics, {sum(counts.values())} messages, "
                 f"{size / 1e6:.1f} MB)")
    for output in outputs:
        lines.append(f"  {'video' if output.suffix == '.mp4' else 'plot':<23}: {output}")
    lines.append(f"  node logs              : {logs}")
    lines.append("  result                 : " + ("FAILED: " + "; ".join(problems) if problems else "ok"))
    return "\n".join(lines)


class _Progress:
    """One updating status line on a terminal; a line every few seconds otherwise (logs, CI)."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.25 if self.tty else 5.0):
            return
        self._last = now
        self.stream.write(("\r\033[K" + text) if self.tty else text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the full graph does a task on the simulated ALOHA robot")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds to run after the first chunk at most; the run ends earlier once the task "
                             "succeeded (default 20)")
    policy = parser.add_mutually_exclusive_group()
    policy.add_argument("--scripted", action="store_true",
                        help="the scripted expert (the default until a trained built-in checkpoint exists)")
    policy.add_argument("--checkpoint", type=Path, help="Wall-OSS checkpoint directory")
    policy.add_argument("--untrained", action="store_true",
                        help="the built-in UNTRAINED Wall-OSS checkpoint (random weights, generated into the run "
                             "directory): the model path runs, its motions are noise")
    parser.add_argument("--task", default="transfer_cube", help="task of config/tasks.yaml (default transfer_cube)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene's object placement")
    parser.add_argument("--real-time-factor", type=float, default=1.0,
                        help="simulated seconds per wall second (the graph runs on the sim's /clock); lower it on a "
                             "machine that cannot keep up")
    parser.add_argument("--builtin-size", choices=("tiny", "small"), default="tiny",
                        help="size of the built-in checkpoint (default tiny: fits a 2-core CPU next to the graph)")
    parser.add_argument("--instruction", help="instruction to publish (default: the task's first phrasing)")
    parser.add_argument("--rate-hz", type=float, default=100.0,
                        help="controller command rate [Hz] (default 100: what a 2-core CPU holds next to MuJoCo)")
    parser.add_argument("--output", type=Path, default=Path("runs"), help="runs are written to OUTPUT/<timestamp>/")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds the graph may take to come up (model loading included)")
    parser.add_argument("--launch-file", default="sim.launch.yaml", help="launch file (default sim.launch.yaml)")
    parser.add_argument("launch_arguments", nargs="*", metavar="name:=value",
                        help="extra launch arguments, e.g. image_width:=320 camera_rate_hz:=10.0")


def run(args) -> int:
    try:
        return _Demo(args).run()
    except (LaunchError, ValueError, FileNotFoundError) as error:
        print(f"wall-oss demo: {error}", file=sys.stderr)
        return 2


class _Demo:
    def __init__(self, args):
        if not (math.isfinite(args.duration) and args.duration > 0):
            raise ValueError(f"--duration must be a positive number of seconds, got {args.duration}")
        if not 10.0 <= args.rate_hz <= 1000.0:
            raise ValueError(f"--rate-hz must be within [10, 1000], got {args.rate_hz}")
        if args.checkpoint is not None and not args.checkpoint.is_dir():
            raise ValueError(f"--checkpoint {args.checkpoint} is not a directory")
        self.args = args
        self.extra = parse_assignments(args.launch_arguments)
        self.extra.setdefault("robot_config", str(share_file(ALOHA_CONFIG)))
        self.robot = load_robot_config(self.extra["robot_config"])
        self.task = None
        if self.robot.simulator == "aloha_mujoco":
            from wall_oss_core.sim.tasks import load_tasks

            tasks = load_tasks()
            if args.task not in tasks.tasks:
                raise ValueError(f"unknown --task {args.task!r}; tasks are {sorted(tasks.tasks)}")
            self.task = tasks[args.task]
        elif not (args.checkpoint or args.untrained):
            raise ValueError(f"the scripted expert needs a MuJoCo robot (config/aloha.yaml); {self.robot.source} is "
                             "simulated kinematically: pass --checkpoint DIR or --untrained")
        self.namespace = self.extra.get("namespace", "wall_oss")

    def _prepare(self, run_dir: Path) -> tuple[dict[str, str], str, str]:
        """Launch arguments, a description of the policy, and the instruction to publish."""
        # Sized for a 2-core CPU shared with the whole graph: 224×224 cameras at 10 Hz (the video shows the face one)
        # and the graph on the sim's clock, so a starved sim stops time for every node instead of lagging
        # behind the commands (wall_oss_core.sim.clock)
        arguments = {"rate_hz": f"{self.args.rate_hz:.1f}", "publish_compressed_images": "true",
                     "image_width": "224", "image_height": "224", "camera_rate_hz": "10.0",
                     "use_sim_time": "true", "real_time_factor": f"{self.args.real_time_factor:.3f}"}
        if self.task is not None:
            arguments.update(scene=self.task.scene, seed=str(self.args.seed), task=self.task.name)
        instruction = self.args.instruction or (self.task.instructions[0] if self.task else "pick up the cube")
        if self.args.checkpoint is not None:
            arguments.update(backend="wall_oss", checkpoint=str(self.args.checkpoint.resolve()))
            policy = f"Wall-OSS checkpoint {self.args.checkpoint}"
        elif self.args.untrained:
            from wall_oss_core.model.checkpoint_generator import generate_checkpoint

            checkpoint = run_dir / "builtin_checkpoint"
            generate_checkpoint(checkpoint, size=self.args.builtin_size, generation="wall_oss_05", seed=0)
            # One torch thread and chunks spanning 3.2 s (32 actions, 0.1 s apart) so a chunk that took a
            # second or two to compute still has actions ahead of it. An untrained model's actions are
            # noise that jumps faster than the joints may move: the executor lets such chunks through
            # (max_speed_factor) so the safety supervisor's limiting is what keeps the arm smooth. All
            # can be overridden with name:=value.
            arguments.update(backend="wall_oss", checkpoint=str(checkpoint), policy_threads="1", action_dt="0.1",
                             max_chunk_age="3.0", max_speed_factor="100.0")
            policy = (f"built-in UNTRAINED Wall-OSS-0.5 checkpoint ({self.args.builtin_size}, random weights; "
                      f"pass --checkpoint DIR for a real one)")
        else:
            arguments.update(backend="scripted")
            policy = ("scripted expert (plans from the sim's privileged object poses; no trained built-in "
                      "checkpoint exists yet: --checkpoint DIR runs a model)")
        arguments.update(self.extra)
        return arguments, policy, instruction

    def run(self) -> int:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share_file("config/fastdds.xml")))
        run_dir = _run_directory(self.args.output)
        arguments, policy, instruction = self._prepare(run_dir)
        self._arguments = arguments
        plan = plan_launch(resolve_launch_file(self.args.launch_file), arguments)
        print(f"[demo] policy: {policy}")
        if self.task is not None:
            print(f"[demo] task {self.task.name} (seed {self.args.seed}) on {self.robot.source.name}: {instruction!r}")
        print(f"[demo] run directory {run_dir}")
        for note in plan.skipped:
            print(f"[demo] {note}")
        logs = run_dir / "logs"
        runner = LaunchRunner(plan, stream=None, log_dir=logs)
        runner.start()
        print(f"[demo] started {', '.join(n.fully_qualified_name for n in plan.nodes)} (logs in {logs})")
        try:
            return self._observe(runner, run_dir, policy, instruction, logs)
        finally:
            runner.stop()

    def _write_video_and_plots(self, run_dir: Path, stats: DemoStats, monitor: EpisodeMonitor | None,
                               policy: str) -> list[Path]:
        """video.mp4 of the face camera and plots/run.png (joints, task progress) of the run."""
        written = []
        if stats.frames:
            fps = frame_rate(stats.frame_times, float(self._arguments.get("camera_rate_hz", 10.0)))
            written.append(write_video(stats.frames, run_dir / "video.mp4", fps=fps))
        if stats.joint_samples:
            origin = monitor.started if monitor is not None and monitor.started is not None else stats.joint_samples[0][0]
            times = [t - origin for t, _ in stats.joint_samples]
            stages = [(t - origin, name, credit) for t, name, credit in monitor.stage_log] if monitor else []
            title = f"{self.task.name if self.task else 'demo'}: {policy.split(' (')[0]}"
            written.append(write_run_plot(times, np.array([p for _, p in stats.joint_samples]),
                                          self.robot.command_joints, stages, run_dir / "plots" / "run.png", title))
        return written

    def _observe(self, runner: LaunchRunner, run_dir: Path, policy: str, instruction: str, logs: Path) -> int:
        import rclpy
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        from wall_oss_ros.graph import INSTRUCTION_PUBLISHER_QOS
        from wall_oss_ros.node_runtime import install_stop_signals, make_executor
        from wall_oss_ros.recorder import BagRecorder

        stop = install_stop_signals()
        context = rclpy.Context()
        rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("wall_oss_demo", context=context)
        # This process takes ~1500 messages/s while recording; the events executor (where rclpy has it)
        # needs about a third of SingleThreadedExecutor's CPU per message here. Driven by spin_once (its
        # spin() stalls here).
        executor = make_executor(context)
        executor.add_node(node)
        topics = record_topics(self.robot, self.namespace)
        instruction_pub = node.create_publisher(String, topics["instruction"], INSTRUCTION_PUBLISHER_QOS)
        command_topic = topics[self.robot.arms[0].controller]
        stats = DemoStats()
        task = self.task
        monitor = (EpisodeMonitor(task.name, self.args.seed, instruction, {s.name: s.progress for s in task.stages},
                                  task.success, timeout=self.args.duration, linger=SUCCESS_LINGER)
                   if task is not None else None)
        observer = _Observer(stats, topics, command_topic, self.robot.command_joints, time.time(), monitor)
        bag = run_dir / "bag"
        recorder = BagRecorder(node, bag, list(topics.values()), on_message=observer)
        node.create_timer(0.5, recorder.discover)
        progress = _Progress()
        problems: list[str] = []
        started = time.monotonic()
        instructed_at = None  # the instruction goes out once every recorded topic is in the graph
        running_since = None  # the run's duration counts from the first chunk (a model may load slowly)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.02)
            dead = runner.dead_node()
            if dead is not None:
                problems.append(f"node {dead[0]!r} died (exit code {dead[1]}); see {logs / (dead[0] + '.log')}")
                break
            now = time.monotonic()
            if running_since is None:
                waiting = [t for t in recorder.pending_topics if t != topics["diagnostics"]]
                if instructed_at is None and stats.joint_state_count and not waiting:
                    instruction_pub.publish(String(data=instruction))
                    instructed_at = now
                    progress.show(f"[demo] graph up after {now - started:.1f} s; instruction: {instruction!r}",
                                  force=True)
                    progress.done()
                elif instructed_at is not None and stats.chunk_ids:
                    running_since = now
                    progress.show(f"[demo] first action chunk {now - instructed_at:.1f} s after the instruction",
                                  force=True)
                    progress.done()
                elif now - started > self.args.startup_timeout:
                    problems.append(f"the graph did not come up within {self.args.startup_timeout:g} s ("
                                    + (f"no publisher yet on {', '.join(waiting) or '/joint_states'}"
                                       if instructed_at is None else "no action chunk from the policy") + ")")
                    break
                else:
                    progress.show(f"[demo] waiting for the graph ({now - started:.0f} s): " +
                                  (f"{len(waiting)} topics without publishers" if instructed_at is None
                                   else "no action chunk yet (the policy may be loading its model)"))
                continue
            elapsed = now - running_since
            task_text = f"task progress {monitor.progress:3.0f} | " if monitor is not None else ""
            progress.show(f"[demo] {elapsed:5.1f}/{self.args.duration:g} s | {task_text}chunks {len(stats.chunk_ids)} | "
                          f"commands {stats.command_rate(window=2.0):6.1f} Hz | safety {stats.safety_state} | "
                          f"max excursion {stats.max_excursion:.2f}")
            if elapsed >= self.args.duration or (monitor is not None and monitor.success_time is not None
                                                 and monitor.finished(time.time())):
                break
        interrupted = stop.is_set()
        if interrupted:
            problems.append("interrupted (Ctrl-C)")
        progress.done()
        duration = time.monotonic() - running_since if running_since is not None else 0.0
        path = recorder.close()
        if running_since is not None and not interrupted:
            if not stats.chunk_ids:
                problems.append("no action chunk was received")
            if not stats.command_times:
                problems.append(f"no controller command was received on {command_topic}")
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        outputs = self._write_video_and_plots(run_dir, stats, monitor, policy)
        print(_format_summary(stats, duration=duration, policy=policy, command_topic=command_topic, bag=path,
                              counts=dict(recorder.counts), logs=logs, problems=problems, monitor=monitor,
                              outputs=outputs))
        if interrupted:
            return 130
        return 1 if problems else 0
