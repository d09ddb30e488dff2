"""Expert demonstrations in the ALOHA sim: episodes recorded as rosbag2 bags, exported as one LeRobot dataset.

Each episode runs the scripted expert through `EpisodeRunner` (the real `ChunkExecutor` and
`SafetySupervisor`), and `BagEpisodeRecorder` writes what the launched graph would have recorded, under
the graph's topic names: the camera images (the robot config's topics, at the dataset rate), the
measured joint states and the controller commands (every control tick), the instruction and the
action chunks. All stamps are sim time. The bags then go through the project's exporter, unchanged, so a
dataset collected here and one recorded from the ROS graph are the same thing.

Output directory:
  bags/<task>_<index>/   one MCAP bag per episode
  dataset/               the LeRobot v3.0 dataset of the episodes the expert did (progress ≥ min_progress)
  episodes.json          per episode: task, seed, instruction, expert task progress, bag
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wall_oss_core import topics
from wall_oss_core.data.bag_types import wall_oss_typestore
from wall_oss_core.data.lerobot_export import ExportConfig, export_dataset
from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.config import RobotConfig, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import AlohaSim, RenderSettings
from wall_oss_core.sim.episode import EpisodeRunner
from wall_oss_core.sim.expert import ScriptedExpert
from wall_oss_core.sim.tasks import ProgressTracker, TaskSet, load_tasks

LOG = logging.getLogger(__name__)
ACTION_CHUNK_TYPE = "wall_oss/msg/ActionChunk"


@dataclass(frozen=True)
class CollectConfig:
    tasks: tuple[str, ...]
    episodes: int                 # per task
    seed: int = 0                 # episode k of a task uses scene seed `seed + k`
    image_size: int = 64          # rendered camera images are image_size × image_size
    fps: int = 10                 # camera (and dataset) frame rate; LeRobot datasets have integer fps
    duration: float = 10.0        # [s] of sim time per episode (the expert's skills take ≤ 9.5 s)
    video: bool = False           # PNG frames (lossless: a cube covers a few pixels at 64 px) or AV1 videos
    min_progress: float = 100.0   # expert episodes scoring less are recorded but not exported

    def __post_init__(self):
        if not self.tasks or self.episodes < 1:
            raise ValueError("collect needs at least one task and one episode")
        if self.image_size < 8 or not self.fps > 0 or not self.duration > 0:
            raise ValueError("image size must be >= 8 px, fps and duration positive")


@dataclass(frozen=True)
class CollectedEpisode:
    task: str
    seed: int
    instruction: str
    progress: float
    success: bool
    bag: str


class BagEpisodeRecorder:
    """A `TickListener` that writes an episode as the graph's topics into a new MCAP bag."""

    def __init__(self, path: Path, robot: RobotConfig, fps: float, namespace: str = topics.NAMESPACE):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.robot, self.period = robot, 1.0 / fps
        self.store = wall_oss_typestore()
        self.types = self.store.types
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        add = self.writer.add_connection
        self.joints = add(topics.JOINT_STATES, "sensor_msgs/msg/JointState", typestore=self.store)
        self.cameras = {c.name: add(c.topic, "sensor_msgs/msg/Image", typestore=self.store) for c in robot.cameras}
        self.instruction = add(topics.qualified(topics.INSTRUCTION, namespace), "std_msgs/msg/String",
                               typestore=self.store)
        self.chunks = add(topics.qualified(topics.ACTION_CHUNK, namespace), ACTION_CHUNK_TYPE, typestore=self.store)
        self.commands = []  # (connection, command-joint indices) per controller, in command-joint order
        index = 0
        for arm in robot.arms:
            self.commands.append((add(f"/{arm.controller}/commands", "std_msgs/msg/Float64MultiArray",
                                      typestore=self.store), np.arange(index, index + len(arm.joints))))
            index += len(arm.joints)
            self.commands.append((add(f"/{arm.gripper_controller}/commands", "std_msgs/msg/Float64MultiArray",
                                      typestore=self.store), np.array([index])))
            index += 1
        self._instruction = None
        self._next_frame = -np.inf
        self._chunk_id = 0

    def _header(self, t: float, frame_id: str = ""):
        ns = int(round(t * 1e9))
        return self.types["std_msgs/msg/Header"](
            stamp=self.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)

    def _write(self, connection, t: float, message) -> None:
        self.writer.write(connection, int(round(t * 1e9)),
                          bytes(self.store.serialize_cdr(message, connection.msgtype)))

    def on_tick(self, sim: AlohaSim, instruction: str, chunk: Chunk | None, command: np.ndarray | None) -> None:
        t = sim.time
        if instruction != self._instruction:
            self._instruction = instruction
            self._write(self.instruction, t, self.types["std_msgs/msg/String"](data=instruction))
        self._write(self.joints, t, self.types["sensor_msgs/msg/JointState"](
            header=self._header(t), name=list(self.robot.command_joints),
            position=sim.joint_positions(), velocity=sim.joint_velocities(), effort=np.zeros(0)))
        if t >= self._next_frame - 1e-9:
            self._next_frame = (t if np.isinf(self._next_frame) else self._next_frame) + self.period
            for camera in self.robot.cameras:
                image = np.ascontiguousarray(sim.render(camera.name))
                height, width = image.shape[:2]
                self._write(self.cameras[camera.name], t, self.types["sensor_msgs/msg/Image"](
                    header=self._header(t, camera.frame), height=height, width=width, encoding="rgb8",
                    is_bigendian=0, step=width * 3, data=image.reshape(-1)))
        if chunk is not None:
            self._write(self.chunks, t, self.types[ACTION_CHUNK_TYPE](
                header=self._header(chunk.stamp, self.robot.base_frame), chunk_id=self._chunk_id,
                action_space=chunk.action_space, action_names=list(chunk.action_names), horizon=chunk.horizon,
                action_dim=chunk.actions.shape[1], time_step=chunk.dt, first_action_offset=chunk.first_action_offset,
                data=np.ascontiguousarray(chunk.actions, dtype=np.float64).ravel(), instruction=chunk.instruction,
                inference_latency=chunk.inference_latency))
            self._chunk_id += 1
        if command is not None:
            layout = self.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
            for connection, indices in self.commands:
                self._write(connection, t, self.types["std_msgs/msg/Float64MultiArray"](
                    layout=layout, data=np.asarray(command, dtype=np.float64)[indices]))

    def close(self) -> None:
        self.writer.close()


def record_expert_episode(task_name: str, seed: int, instruction: str, bag: Path, robot: RobotConfig,
                          tasks: TaskSet, config: CollectConfig) -> CollectedEpisode:
    """One expert episode of `task_name` on scene seed `seed`, recorded into the new bag `bag`."""
    task = tasks[task_name]
    sim = AlohaSim(robot, task.scene, seed=seed,
                   render=RenderSettings(width=config.image_size, height=config.image_size))
    kinematics = BimanualKinematics(robot)
    recorder = BagEpisodeRecorder(bag, robot, config.fps)
    try:
        runner = EpisodeRunner(sim, ScriptedExpert(kinematics, tasks, sim.object_poses), kinematics,
                               listener=recorder)
        result = runner.run(ProgressTracker(task, tasks.groups, sim), instruction, config.duration)
    finally:
        recorder.close()
        sim.close()
    return CollectedEpisode(task_name, seed, instruction, result.progress, result.success, str(bag))


def collect(config: CollectConfig, out_dir: str | Path, robot_config: str | Path | None = None,
            tasks_file: str | Path | None = None, progress: bool = True) -> dict:
    """Record `config.episodes` expert episodes per task and export those that reached `min_progress` as one dataset.

    The instruction of episode k is the task's phrasing k mod (number of phrasings), so the dataset holds
    every phrasing. Returns the dataset's info.json content with the episodes' summary under "collected"."""
    from tqdm import tqdm

    from wall_oss_core.paths import share_file

    robot = load_robot_config(robot_config or share_file("config/aloha.yaml"))
    tasks = load_tasks(tasks_file)
    for name in config.tasks:
        tasks[name]  # an unknown task fails before any episode runs
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory")
    (out / "bags").mkdir(parents=True, exist_ok=True)
    plan = [(name, k) for k in range(config.episodes) for name in config.tasks]  # tasks interleaved
    collected = []
    bar = tqdm(plan, desc="collecting", unit="episode", disable=not progress)
    for name, k in bar:
        phrasings = tasks[name].instructions
        episode = record_expert_episode(name, config.seed + k, phrasings[k % len(phrasings)],
                                        out / "bags" / f"{name}_{k:04d}", robot, tasks, config)
        collected.append(episode)
        bar.set_postfix(task=name, progress=f"{episode.progress:.0f}")
        if episode.progress < config.min_progress:
            LOG.warning("expert episode %s seed %d reached %.0f, not exported", name, episode.seed, episode.progress)
    (out / "episodes.json").write_text(json.dumps([asdict(e) for e in collected], indent=2))
    good = [e.bag for e in collected if e.progress >= config.min_progress]
    if not good:
        raise RuntimeError(f"no expert episode reached progress {config.min_progress}; see {out / 'episodes.json'}")
    info = export_dataset(good, out / "dataset", robot.source,
                          ExportConfig(fps=config.fps, video=config.video, robot_type="aloha",
                                       action_source="commands"),
                          progress=progress)
    info["collected"] = {"episodes": len(collected), "exported": len(good),
                         "expert_progress": float(np.mean([e.progress for e in collected]))}
    return info
