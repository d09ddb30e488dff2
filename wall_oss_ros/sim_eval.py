"""`wall-oss sim-eval`: closed-loop evaluation through the full launched graph, scored by task progress.

Every episode launches launch/sim.launch.yaml on the ALOHA robot (config/aloha.yaml) with the task's
scene and the episode's seed (sim → policy → chunk executor → safety supervisor → sim, real processes
over DDS), publishes one of the task's instructions, and follows the graph from outside: the sim's
task-stage reports (`/wall_oss/sim/task_stage`), the action chunks (inference latency), the safety
status (events), /diagnostics (rejections) and the face camera (the episode's video). An episode ends
a second after success or `--timeout` seconds after its first chunk (`EpisodeMonitor`); the graph is
then stopped. Results go to `metrics.json` + `report.html` (wall_oss_core.evaluation.closed_loop); the
last line printed is `task_progress=<mean over all episodes>`.

Timing: the graph runs on the sim's clock (`use_sim_time:=true`: the sim publishes /clock and every node
follows it) at `--real-time-factor` simulated seconds per wall second (0.5 by default: this 2-core box
cannot hold the graph in real time, and a sim stepping by the wall clock falls behind its commands
whenever it is starved). Episode times and `--inference-delay` are simulated seconds.
`--jobs N` runs N episodes at once, each graph on its own ROS_DOMAIN_ID.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wall_oss_core.evaluation.closed_loop import (
    EpisodeMonitor,
    EpisodeResult,
    frame_rate,
    summarize,
    write_report,
    write_video,
)
from wall_oss_core.paths import share_file
from wall_oss_core.topics import ACTION_CHUNK, DIAGNOSTICS, INSTRUCTION, SAFETY_STATUS, SIM_TASK_STAGE, qualified
from wall_oss_ros.launch_runner import LaunchRunner, plan_launch, resolve_launch_file

ROBOT_CONFIG = "config/aloha.yaml"
QUIET_STATES = ("OK", "LIMITING")  # supervisor states that are not a safety event
STATE_NAMES = {0: "OK", 1: "LIMITING", 2: "HOLD", 3: "ESTOP", 4: "FAULT"}
MAX_DOMAIN_ID = 232  # Fast DDS: domain ids 0–232 on one host


@dataclass(frozen=True)
class EpisodeSpec:
    index: int
    task: str
    seed: int
    instruction: str
    stage_progress: dict
    success_stage: str
    scene: str


@dataclass(frozen=True)
class EvalSettings:
    backend: str                  # scripted | wall_oss
    checkpoint: str               # wall_oss backend
    inference_delay: float
    timeout: float                # [s] after the first chunk
    startup_timeout: float        # [s] until the first chunk
    out: Path
    real_time_factor: float = 0.5
    camera_rate_hz: float = 10.0
    image_size: int = 224
    rate_hz: float = 100.0


def episode_specs(task_names: list[str], episodes: int, seed: int) -> list[EpisodeSpec]:
    """`episodes` per task, seeds seed, seed+1, …, the same seeds for every task; the instruction
    cycles through the task's phrasings."""
    from wall_oss_core.sim.tasks import load_tasks

    tasks = load_tasks()
    specs = []
    for name in task_names:
        if name not in tasks.tasks:
            raise ValueError(f"unknown task {name!r}; tasks are {sorted(tasks.tasks)}")
        task = tasks[name]
        for k in range(episodes):
            specs.append(EpisodeSpec(len(specs), name, seed + k, task.instructions[k % len(task.instructions)],
                                     {s.name: s.progress for s in task.stages}, task.success, task.scene))
    return specs


def _launch_arguments(spec: EpisodeSpec, settings: EvalSettings) -> dict[str, str]:
    arguments = {
        "robot_config": str(share_file(ROBOT_CONFIG)), "backend": settings.backend, "scene": spec.scene,
        "seed": str(spec.seed), "task": spec.task, "inference_delay": f"{settings.inference_delay:.3f}",
        # a delayed chunk is still accepted: its elapsed actions are dropped, the rest is executed
        "max_chunk_age": f"{max(1.0, settings.inference_delay + 1.0):.3f}",
        "camera_rate_hz": f"{settings.camera_rate_hz:.1f}", "image_width": str(settings.image_size),
        "image_height": str(settings.image_size), "rate_hz": f"{settings.rate_hz:.1f}",
        "use_sim_time": "true", "real_time_factor": f"{settings.real_time_factor:.3f}",
        # the supervisor's watchdogs run on the steady clock; on a shared CPU the executor may be starved for
        # more than the robot default 0.1 s while the simulated arm, on the sim's clock, has not moved at all
        "candidate_timeout": "0.5",
    }
    if settings.backend == "wall_oss":
        arguments["checkpoint"] = settings.checkpoint
    return arguments


class _EpisodeObserver:
    """An rclpy node in its own context (on the episode's domain) that feeds an EpisodeMonitor."""

    def __init__(self, monitor: EpisodeMonitor, domain_id: int, face_topic: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from wall_oss.msg import ActionChunk, SafetyStatus

        from wall_oss_ros.graph import CLOCK_QOS, IMAGE_QOS, INSTRUCTION_PUBLISHER_QOS, SIM_TASK_QOS, STATUS_QOS

        self.monitor = monitor
        self.frames: list[np.ndarray] = []
        self.frame_times: list[float] = []
        self.now = 0.0  # the graph's (simulated) time from /clock [s]; 0 until the first tick
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("wall_oss_sim_eval", context=self.context)
        self.executor = _executor_for(self.context)
        self.executor.add_node(self.node)
        self.instruction_pub = self.node.create_publisher(
            String, qualified(INSTRUCTION), INSTRUCTION_PUBLISHER_QOS)
        self.node.create_subscription(Clock, "/clock", self._on_clock, CLOCK_QOS)
        self.node.create_subscription(String, SIM_TASK_STAGE, lambda m: monitor.on_stage(m.data, self.now), SIM_TASK_QOS)
        self.node.create_subscription(ActionChunk, qualified(ACTION_CHUNK),
                                      self._on_chunk, 10)
        self.node.create_subscription(SafetyStatus, qualified(SAFETY_STATUS), self._on_safety, STATUS_QOS)
        self.node.create_subscription(DiagnosticArray, DIAGNOSTICS, self._on_diagnostics, 10)
        self.node.create_subscription(Image, face_topic, self._on_frame, IMAGE_QOS)

    def _on_chunk(self, msg) -> None:
        # a chunk that arrives before this node heard /clock would start the episode at time 0, and the first
        # clock tick (an epoch time) would end it at once: the episode starts with the first chunk on a known clock
        if self.now > 0:
            self.monitor.on_chunk(msg.inference_latency, self.now)

    def _on_clock(self, msg) -> None:
        self.now = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _on_safety(self, msg) -> None:
        state = STATE_NAMES.get(msg.state, msg.state_name or str(msg.state))
        self.monitor.on_safety(state, state in QUIET_STATES)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            source = status.name.split(":")[0].rsplit("/", 1)[-1]
            counts = {}
            for item in status.values:
                if item.key.startswith(("rejected_", "rejected.")) and item.key != "rejected_total":
                    try:
                        counts[item.key] = int(item.value)
                    except ValueError:
                        continue
            self.monitor.on_rejections(source, counts)

    def _on_frame(self, msg) -> None:
        from wall_oss_core.policy.images import ImageError, image_msg_to_rgb

        if self.monitor.started is None:
            return  # the video shows the episode, not the start-up
        try:
            self.frames.append(image_msg_to_rgb(msg).copy())
        except ImageError:
            return
        self.frame_times.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def spin_once(self, timeout: float) -> None:
        self.executor.spin_once(timeout_sec=timeout)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _executor_for(context):
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


def run_episode(spec: EpisodeSpec, settings: EvalSettings, domain_id: int) -> EpisodeResult:
    """Launch the graph for one episode, run it to success or timeout, stop it; never raises for a
    graph failure (the episode is scored as it stood, with the error)."""
    from std_msgs.msg import String

    from wall_oss_core.robot.config import load_robot_config

    name = f"{spec.index:03d}_{spec.task}_seed{spec.seed}"
    robot = load_robot_config(share_file(ROBOT_CONFIG))
    face = next(camera for camera in robot.cameras if camera.name == "face_view")
    plan = plan_launch(resolve_launch_file("sim.launch.yaml"), _launch_arguments(spec, settings))
    for node in plan.nodes:
        node.env["ROS_DOMAIN_ID"] = str(domain_id)
    monitor = EpisodeMonitor(spec.task, spec.seed, spec.instruction, spec.stage_progress, spec.success_stage,
                             timeout=settings.timeout)
    observer = _EpisodeObserver(monitor, domain_id, face.topic)
    runner = LaunchRunner(plan, stream=None, log_dir=settings.out / "logs" / name)
    error = None
    try:
        runner.start()
        observer.instruction_pub.publish(String(data=spec.instruction))
        launched = time.monotonic()
        while True:
            observer.spin_once(0.02)
            now = time.monotonic()
            dead = runner.dead_node()
            if dead is not None:
                error = f"node {dead[0]} died (exit code {dead[1]}); see logs/{name}/{dead[0]}.log"
                break
            if monitor.started is None and now - launched > settings.startup_timeout:
                error = f"no action chunk within {settings.startup_timeout:g} s of the launch; see logs/{name}/"
                break
            if monitor.finished(observer.now):
                break
    finally:
        end = observer.now
        runner.stop()
        frames, frame_times = observer.frames, observer.frame_times
        observer.close()
    video = None
    if frames:
        video = str(write_video(frames, settings.out / "videos" / f"{name}.mp4",
                                fps=frame_rate(frame_times, settings.camera_rate_hz)))
    return monitor.result(end, video=video, error=error)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("sim-eval", help="closed-loop task progress of a policy on ALOHA through the "
                                                    "launched graph")
    policy = parser.add_mutually_exclusive_group(required=True)
    policy.add_argument("--checkpoint", type=Path, help="Wall-OSS checkpoint directory")
    policy.add_argument("--scripted", action="store_true", help="the scripted expert (privileged object poses)")
    parser.add_argument("--tasks", nargs="+", help="tasks of config/tasks.yaml (default: all)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task (default 10, the Wall-OSS report's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode k uses seed + k")
    parser.add_argument("--inference-delay", type=float, default=0.0,
                        help="seconds added to every inference of the backend")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="episode timeout after its first chunk [simulated s]")
    parser.add_argument("--real-time-factor", type=float, default=0.5,
                        help="simulated seconds per wall second; the graph runs on the sim's /clock (default 0.5: "
                             "a 2-core CPU shared with other work cannot hold the graph in real time)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds a graph may take from launch to its first chunk")
    parser.add_argument("--jobs", type=int, default=1, help="episodes run at once, each graph on its own ROS domain")
    parser.add_argument("--domain-id", type=int,
                        help="ROS_DOMAIN_ID of the first graph (default: $ROS_DOMAIN_ID, else one from the pid); "
                             "job k uses the next ids")
    parser.add_argument("--out", type=Path, required=True, help="output directory (metrics.json, report.html)")


def run(args) -> int:
    from tqdm import tqdm

    from wall_oss_core.sim.tasks import load_tasks

    if args.episodes < 1 or args.jobs < 1:
        print("wall-oss sim-eval: --episodes and --jobs must be at least 1", file=sys.stderr)
        return 2
    if args.inference_delay < 0 or not args.timeout > 0 or not 0.05 <= args.real_time_factor <= 10:
        print("wall-oss sim-eval: --inference-delay must be >= 0, --timeout > 0, --real-time-factor within "
              "[0.05, 10]", file=sys.stderr)
        return 2
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        print(f"wall-oss sim-eval: --checkpoint {args.checkpoint} is not a directory", file=sys.stderr)
        return 2
    try:
        specs = episode_specs(args.tasks or list(load_tasks().tasks), args.episodes, args.seed)
    except ValueError as error:
        print(f"wall-oss sim-eval: {error}", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share_file("config/fastdds.xml")))
    settings = EvalSettings(backend="scripted" if args.scripted else "wall_oss",
                            checkpoint=str(args.checkpoint.resolve()) if args.checkpoint else "",
                            inference_delay=args.inference_delay, timeout=args.timeout,
                            startup_timeout=args.startup_timeout, out=out.resolve(),
                            real_time_factor=args.real_time_factor)
    base = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", 10 + os.getpid() % 200))
    domains = [(base + k) % (MAX_DOMAIN_ID + 1) for k in range(args.jobs)]
    policy = "scripted expert" if args.scripted else f"Wall-OSS checkpoint {args.checkpoint}"
    print(f"[sim-eval] {len(specs)} episodes ({', '.join(sorted({s.task for s in specs}))}), policy: {policy}, "
          f"{args.jobs} at a time on ROS domains {domains}; results in {out}", flush=True)

    free = list(domains)
    lock = threading.Lock()

    def one(spec: EpisodeSpec) -> EpisodeResult:
        with lock:
            domain = free.pop()
        try:
            return run_episode(spec, settings, domain)
        finally:
            with lock:
                free.append(domain)

    results: list[EpisodeResult] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool, tqdm(total=len(specs), unit="episode",
                                                                 file=sys.stderr) as bar:
        for result in pool.map(one, specs):
            results.append(result)
            bar.set_postfix_str(f"{result.task} seed {result.seed}: {result.progress:.0f}")
            bar.update()
    metrics = summarize(results)
    metrics["policy"] = policy
    metrics["inference_delay_s"] = args.inference_delay
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report = write_report(metrics, out, title=f"Closed-loop evaluation on ALOHA: {policy}")
    for task, values in metrics["tasks"].items():
        low, high = values["progress_ci95"]
        print(f"[sim-eval] {task}: progress {values['progress_mean']:.1f} [{low:.1f}, {high:.1f}], success "
              f"{100 * values['success_rate']:.0f}% over {values['episodes']} episodes")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"[sim-eval] {r.task} seed {r.seed}: {r.error}")
    print(f"[sim-eval] report {report}")
    print(f"task_progress={metrics['task_progress']:.1f}")
    return 1 if failed else 0
