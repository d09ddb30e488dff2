"""ROS-free closed-loop evaluation: a policy drives the ALOHA sim through `EpisodeRunner`, scored by task progress.

The same executor, supervisor and task scoring as the launched graph, without DDS and on sim time, so a
checkpoint is judged in a few seconds per episode while iterating on training. Results go through
`evaluation.closed_loop` (per-task mean with a 95% interval, success rate, report). Besides progress it
records each episode's *first grasp*: the first movable object held off the table by a finger, so
that language-selected tasks show whether the instruction decided the object.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wall_oss_core.evaluation.closed_loop import EpisodeResult, summarize, write_report, write_video
from wall_oss_core.policy.interface import Chunk, Policy
from wall_oss_core.robot.config import RobotConfig
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import SCENES, AlohaSim, RenderSettings
from wall_oss_core.sim.episode import EpisodeRunner
from wall_oss_core.sim.expert import ScriptedExpert
from wall_oss_core.sim.tasks import ProgressTracker, Task, TaskSet

FINGER_GROUPS = ("left_finger", "right_finger")
TABLE_GEOM = "table"


@dataclass(frozen=True)
class SimEvalConfig:
    tasks: tuple[str, ...]
    episodes: int                   # per task
    seed: int = 1000                # episode k of a task uses scene seed `seed + k` (collect uses 0, 1, …)
    duration: float = 12.0          # [s] of sim time per episode
    image_size: int = 64            # rendered camera images (a checkpoint's dataset size)
    chunk_period: float = 0.5       # [s] between policy calls
    video: bool = False             # face-camera video per episode (10 fps)

    def __post_init__(self):
        if not self.tasks or self.episodes < 1 or not self.duration > 0 or not self.chunk_period > 0:
            raise ValueError("sim evaluation needs tasks, episodes >= 1 and positive durations")


class EpisodeObserver:
    """Per tick: the first grasp, chunk latencies and (optionally) face-camera frames."""

    def __init__(self, sim: AlohaSim, groups: dict[str, tuple[str, ...]], video_fps: float | None):
        fingers = {g for group in FINGER_GROUPS for g in groups.get(group, (group,))}
        self._fingers = fingers
        self._objects = {}
        for region in SCENES[sim.scene].regions:
            body = sim.model.body(region.body).id
            self._objects[region.body] = {sim.geom_names[g] for g in range(sim.model.ngeom)
                                          if sim.model.geom_bodyid[g] == body}
        self.first_grasp: str | None = None
        self.latencies: list[float] = []
        self.frames: list[np.ndarray] = []
        self._frame_period = 1.0 / video_fps if video_fps else None
        self._next_frame = 0.0

    def on_tick(self, sim: AlohaSim, instruction: str, chunk: Chunk | None, command) -> None:
        if chunk is not None:
            self.latencies.append(float(chunk.inference_latency))
        if self._frame_period is not None and sim.time >= self._next_frame - 1e-9:
            self.frames.append(sim.render("face_view").copy())
            self._next_frame += self._frame_period
        if self.first_grasp is None:
            contacts = sim.contacts()
            for body, geoms in self._objects.items():
                touching = {other for pair in contacts if pair & geoms for other in pair - geoms}
                if touching & self._fingers and TABLE_GEOM not in touching:
                    self.first_grasp = body
                    break


def named_object(task: Task) -> str | None:
    """The object body the task's instruction names (its expert's object), None for two-object skills."""
    return task.expert.get("object")


def run_episode(task: Task, tasks: TaskSet, seed: int, instruction: str, robot: RobotConfig,
                make_policy: Callable[[AlohaSim, BimanualKinematics], Policy], cameras: tuple[str, ...],
                config: SimEvalConfig, video_dir: Path | None = None) -> tuple[EpisodeResult, str | None]:
    """One episode; returns its result and the first-grasped object body (None: nothing grasped)."""
    sim = AlohaSim(robot, task.scene, seed=seed, render=RenderSettings(width=config.image_size,
                                                                        height=config.image_size))
    kinematics = BimanualKinematics(robot)
    observer = EpisodeObserver(sim, tasks.groups, 10.0 if video_dir else None)
    error = None
    try:
        runner = EpisodeRunner(sim, make_policy(sim, kinematics), kinematics, chunk_period=config.chunk_period,
                               cameras=cameras, listener=observer)
        tracker = ProgressTracker(task, tasks.groups, sim)
        try:
            outcome = runner.run(tracker, instruction, config.duration)
            progress, success, tts = outcome.progress, outcome.success, outcome.time_to_success
        except Exception as failure:  # a policy error ends the episode; it is scored as it stood
            error = f"{type(failure).__name__}: {failure}"
            progress, success, tts = tracker.progress, tracker.success, None
        video = None
        if video_dir is not None and observer.frames:
            video = str(write_video(observer.frames, video_dir / f"{task.name}_{seed}.mp4", 10.0))
        stage_credit = {s.name: s.progress for s in task.stages if tracker.reached[s.name]}
        result = EpisodeResult(task.name, seed, instruction, progress, success, config.duration, tts, stage_credit,
                               observer.latencies, {"supervisor_limited_ticks": runner.limited_ticks},
                               {"executor_rejected_chunks": runner.rejected_chunks}, video, error)
    finally:
        sim.close()
    return result, observer.first_grasp


def evaluate(make_policy: Callable[[AlohaSim, BimanualKinematics], Policy], cameras: tuple[str, ...],
             robot: RobotConfig, tasks: TaskSet, config: SimEvalConfig, out_dir: str | Path | None = None,
             progress: bool = True, title: str = "ROS-free closed-loop evaluation") -> dict:
    """Run `config.episodes` per task (instruction phrasings in rotation); metrics (and with out_dir:
    metrics.json, report.html) with a first-grasp summary per task."""
    from tqdm import tqdm

    out = Path(out_dir) if out_dir is not None else None
    plan = [(tasks[name], k) for k in range(config.episodes) for name in config.tasks]
    results, grasps = [], []
    started = time.perf_counter()
    bar = tqdm(plan, desc="sim-eval", unit="episode", disable=not progress)
    for task, k in bar:
        instruction = task.instructions[k % len(task.instructions)]
        result, grasp = run_episode(task, tasks, config.seed + k, instruction, robot, make_policy, cameras, config,
                                    out / "videos" if out is not None and config.video else None)
        results.append(result)
        grasps.append(grasp)
        bar.set_postfix(task=task.name, progress=f"{result.progress:.0f}")
    metrics = summarize(results)
    for name in config.tasks:
        wanted = named_object(tasks[name])
        firsts = [g for r, g in zip(results, grasps, strict=True) if r.task == name]
        metrics["tasks"][name]["first_grasp"] = {
            "named_object": wanted, "on_named": sum(g == wanted for g in firsts),
            "on_other": sum(g is not None and g != wanted for g in firsts),
            "none": sum(g is None for g in firsts),
            "named_rate": sum(g == wanted for g in firsts) / len(firsts)}
    for entry, grasp in zip(metrics["episode_results"], grasps, strict=True):
        entry["first_grasp"] = grasp
    metrics["wall_time_s"] = time.perf_counter() - started
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_report(metrics, out, title)
    return metrics


def expert_factory(tasks: TaskSet) -> Callable[[AlohaSim, BimanualKinematics], Policy]:
    """The scripted expert (privileged object poses): the ceiling a learned policy is compared with."""
    return lambda sim, kinematics: ScriptedExpert(kinematics, tasks, sim.object_poses)


def checkpoint_image_size(checkpoint_dir: str | Path) -> int:
    """The camera image size a checkpoint was trained on (its first visual input feature), to render at."""
    config = json.loads((Path(checkpoint_dir) / "config.json").read_text())
    features = config.get("input_features") or {}
    shapes = [f["shape"] for f in features.values() if f.get("type") == "VISUAL"]
    if not shapes:
        raise ValueError(f"{checkpoint_dir}/config.json names no visual input features")
    return int(max(shapes[0][1:]))
