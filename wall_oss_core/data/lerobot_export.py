"""Bags → a LeRobot dataset (codebase v3.0 layout), and normalization statistics from bags.

Layout written (as LeRobot's `lerobot_dataset.py` / `utils.py` define it for v3.0):

  meta/info.json                          codebase_version "v3.0", fps, features, paths, totals
  meta/stats.json                         per feature min / max / mean / std / count / q01 q10 q50 q90 q99
  meta/tasks.parquet                      index = task (the instruction), column task_index
  meta/episodes/chunk-000/file-000.parquet one row per episode: length, tasks, data/ and videos/ locations,
                                          dataset_from_index / dataset_to_index, stats/<feature>/<stat>
  data/chunk-000/file-000.parquet         one row per frame: observation.state, action, timestamp,
                                          frame_index, episode_index, index, task_index
  videos/observation.images.<camera>/chunk-000/file-000.mp4
                                          every episode's frames back to back (AV1 / yuv420p through
                                          PyAV's bundled SVT-AV1, LeRobot's default codec), located per
                                          episode by videos/<key>/from_timestamp / to_timestamp
With `video=False` the frames are stored in the data parquet instead, as PNG-encoded image structs
({bytes, path}: LeRobot's "image" dtype).

Each bag is one episode. Frames are resampled at exactly `fps` (default: the first camera's rate), so
timestamps are frame_index / fps as LeRobot expects; at each frame time the observation is the one
the live policy node would have assembled (same `ObservationAssembler`, fed from the bag by header
stamp). State and action spaces:
  joint_position  observation.state = the 14 command joints; action = the joint targets
  wall_oss_ee     observation.state = the 26-dim Wall-OSS absolute EE state (per arm xyz, 6D rotation,
                  gripper); action = the same layout for the targets (Wall-OSS training derives its
                  relative actions from these absolute ones)
The action at a frame is the command the robot was sent (the safety supervisor's controller commands,
when the bag has them), else the joint state one frame later (the usual choice for demonstrations).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wall_oss_core import topics
from wall_oss_core.data.bag_observations import (
    BagObservationFeeder,
    JointTrajectory,
    camera_topics,
    header_stamp,
    joint_trajectory_from_messages,
)
from wall_oss_core.data.bag_reader import BagReader
from wall_oss_core.policy import action_space as aspace
from wall_oss_core.policy.observation import AssemblyLimits, ObservationAssembler, Unavailable
from wall_oss_core.robot.config import RobotConfig, default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

LOG = logging.getLogger(__name__)
CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STATE_SPACES = ("joint_position", "wall_oss_ee")
ACTION_SOURCES = ("auto", "commands", "next_state")


class ExportError(RuntimeError):
    """A bag cannot become an episode (the message says why)."""


@dataclass(frozen=True)
class ExportConfig:
    fps: float | None = None
    state_space: str | None = None  # None: joint_position, or wall_oss_ee when the robot speaks EE actions
    action_source: str = "auto"
    video: bool = True
    vcodec: str = "libsvtav1"
    crf: int = 30
    gop: int = 2
    robot_type: str = "wall_oss_bimanual"
    namespace: str = topics.NAMESPACE
    assembly: AssemblyLimits = field(default_factory=AssemblyLimits)
    lookahead: float = 0.5  # read inputs this far [s] past an instant (they arrive after they are stamped)

    def __post_init__(self):
        if self.state_space not in (None,) + STATE_SPACES:
            raise ValueError(f"state_space must be one of {STATE_SPACES}, got {self.state_space!r}")
        if self.action_source not in ACTION_SOURCES:
            raise ValueError(f"action_source must be one of {ACTION_SOURCES}, got {self.action_source!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


@dataclass
class Episode:
    """One bag resampled at fps: frames (T) of state, action, camera images and the task per frame."""

    source: str
    timestamps: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    images: dict[str, list[np.ndarray]]
    tasks: list[str]
    skipped: Counter
    fps: float
    state_space: str


def feature_names(robot: RobotConfig, state_space: str) -> list[str]:
    return list(robot.command_joints) if state_space == "joint_position" else aspace.wall_oss_names(relative=False)


def _command_trajectory(reader: BagReader, robot: RobotConfig) -> JointTrajectory | None:
    """The commands sent to the controllers (forward-command topics), joined into command-joint vectors."""
    topics = []
    for arm in robot.arms:
        topics += [f"/{arm.controller}/commands", f"/{arm.gripper_controller}/commands"]
    if any(t not in reader.topics for t in topics):
        return None
    latest: dict[str, np.ndarray] = {}
    times, rows = [], []
    widths = {}
    for arm in robot.arms:
        widths[f"/{arm.controller}/commands"] = len(arm.joints)
        widths[f"/{arm.gripper_controller}/commands"] = 1
    for item in reader.messages(topics):
        values = np.asarray(item.message.data, dtype=float)
        if values.shape != (widths[item.topic],) or not np.all(np.isfinite(values)):
            continue
        latest[item.topic] = values
        if len(latest) == len(topics) and (not times or item.log_time > times[-1]):
            times.append(item.log_time)
            rows.append(np.concatenate([latest[t] for t in topics]))
    if len(times) < 2:
        return None
    return JointTrajectory(np.array(times), np.array(rows))


def read_episode(bag: str | Path, robot: RobotConfig, config: ExportConfig) -> Episode:
    """Resample one bag into dataset frames (see the module docstring)."""
    kinematics = BimanualKinematics(robot)
    state_space = config.state_space or ("wall_oss_ee" if robot.action_space == "wall_oss_ee_relative"
                                         else "joint_position")
    joint_topic, instruction_topic = topics.JOINT_STATES, topics.qualified(topics.INSTRUCTION, config.namespace)
    skipped: Counter[str] = Counter()
    with BagReader(bag) as reader:
        reader.check_topics([joint_topic])
        cameras = camera_topics(reader, robot)
        missing = [c.name for c in robot.cameras if c.name not in cameras]
        if missing:
            raise ExportError(f"bag {bag} has no frames for cameras {missing}; it has {sorted(reader.topics)}")
        joints = joint_trajectory_from_messages(reader.messages([joint_topic]), robot, skipped)
        if len(joints.times) < 2:
            raise ExportError(f"bag {bag} holds fewer than two usable joint states")
        frame_stamps = np.array([header_stamp(m.message) for m in reader.messages([cameras[robot.cameras[0].name]])])
        if len(frame_stamps) < 2:
            raise ExportError(f"bag {bag} holds fewer than two frames of camera {robot.cameras[0].name}")
        fps = config.fps or float(round((len(frame_stamps) - 1) / (frame_stamps[-1] - frame_stamps[0])))
        commands = _command_trajectory(reader, robot) if config.action_source != "next_state" else None
        if config.action_source == "commands" and commands is None:
            raise ExportError(f"bag {bag} has no complete controller commands; use action_source=next_state")
        start = float(frame_stamps[0])
        end = float(min(frame_stamps[-1], joints.times[-1] - (0 if commands else 1.0 / fps)))
        instants = start + np.arange(int(np.floor((end - start) * fps + 1e-6)) + 1) / fps
        assembler = ObservationAssembler(kinematics, config.assembly)
        feeder = BagObservationFeeder(reader.messages(list(cameras.values()) + [joint_topic,
                                                                                 instruction_topic]),
                                      assembler, cameras, joint_topic, instruction_topic,
                                      config.lookahead, skipped)
        times, states, targets, tasks = [], [], [], []
        images: dict[str, list[np.ndarray]] = {c.name: [] for c in robot.cameras}
        for instant in instants:
            feeder.advance(instant)
            observation = assembler.assemble(instant, feeder.instruction)
            if isinstance(observation, Unavailable):
                skipped[f"frame:{observation.reason}"] += 1
                continue
            times.append(instant)
            states.append(observation.joint_positions)
            target_source = commands if commands is not None else joints
            targets.append(target_source.at(np.array([instant if commands is not None else instant + 1.0 / fps]))[0])
            for camera in robot.cameras:
                images[camera.name].append(np.ascontiguousarray(observation.images[camera.name]))
            tasks.append(feeder.instruction)
    if not times:
        raise ExportError(f"bag {bag}: no frame had a complete observation ({dict(skipped)})")
    states_array, targets_array = np.array(states), np.array(targets)
    if state_space == "wall_oss_ee":
        states_array = _ee_states(states_array, kinematics)
        targets_array = _ee_states(targets_array, kinematics)
    return Episode(str(bag), np.array(times) - times[0], states_array.astype(np.float32),
                   targets_array.astype(np.float32), images, tasks, skipped, fps, state_space)


def _ee_states(commands: np.ndarray, kinematics: BimanualKinematics) -> np.ndarray:
    rows = []
    for command in commands:
        grippers = {arm.name: float(command[kinematics.gripper_index(arm.name)]) for arm in kinematics.config.arms}
        rows.append(aspace.ee_state_vector(kinematics.ee_poses(command), grippers))
    return np.array(rows)


# --- statistics --------------------------------------------------------------------------------------
def feature_stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot statistics of (N, D) values: min, max, mean, std, count and the quantiles q01 … q99."""
    values = np.asarray(values, dtype=np.float64)
    stats = {"min": values.min(axis=0), "max": values.max(axis=0), "mean": values.mean(axis=0),
             "std": values.std(axis=0), "count": np.array([len(values)])}
    for q in QUANTILES:
        stats[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0)
    return {key: value.tolist() for key, value in stats.items()}


def image_stats(frames: list[np.ndarray], max_frames: int = 100) -> dict[str, list]:
    """Per-channel statistics of images scaled to [0, 1], shaped (3, 1, 1) as LeRobot stores them."""
    step = max(1, len(frames) // max_frames)
    pixels = np.concatenate([f.reshape(-1, 3) for f in frames[::step]]).astype(np.float64) / 255.0
    stats = feature_stats(pixels)
    return {key: ([[[v]] for v in value] if key != "count" else [len(frames)]) for key, value in stats.items()}


def stats_from_bags(bags: list[str | Path], robot_config: str | Path | None = None,
                    config: ExportConfig = ExportConfig()) -> dict:
    """observation.state and action statistics over every frame of `bags` (stats.json layout)."""
    robot = load_robot_config(robot_config or default_config_path())
    episodes = [read_episode(bag, robot, config) for bag in bags]
    return {"observation.state": feature_stats(np.concatenate([e.states for e in episodes])),
            "action": feature_stats(np.concatenate([e.actions for e in episodes]))}


# --- writing -----------------------------------------------------------------------------------------
def _encode_video(frames: list[np.ndarray], fps: float, path: Path, config: ExportConfig) -> None:
    from fractions import Fraction

    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(config.vcodec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(config.gop), "crf": str(config.crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _png(frame: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]))
    if not ok:
        raise ExportError("PNG encoding of a frame failed")
    return encoded.tobytes()


def export_dataset(bags: list[str | Path], out_dir: str | Path, robot_config: str | Path | None = None,
                   config: ExportConfig = ExportConfig(), progress: bool = True) -> dict:
    """Write the dataset; returns its info.json content. Bags that cannot be read are reported and skipped
    (ExportError when none can)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    robot = load_robot_config(robot_config or default_config_path())
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new dataset directory")
    episodes, failures = [], {}
    iterator = bags
    if progress:
        from tqdm import tqdm
        iterator = tqdm(bags, desc="reading bags", unit="bag")
    for bag in iterator:
        try:
            episodes.append(read_episode(bag, robot, config))
        except Exception as error:  # one unreadable bag must not lose the others
            failures[str(bag)] = f"{type(error).__name__}: {error}"
            LOG.warning("skipping bag %s: %s", bag, error)
    if not episodes:
        raise ExportError(f"no bag could be exported: {failures}")
    fps = episodes[0].fps
    state_space = episodes[0].state_space
    names = feature_names(robot, state_space)
    shapes = {camera.name: episodes[0].images[camera.name][0].shape for camera in robot.cameras}
    for episode in episodes[1:]:
        if abs(episode.fps - fps) > 1e-6 or any(episode.images[c][0].shape != s for c, s in shapes.items()):
            raise ExportError(f"{episode.source} has a different frame rate or image size than {episodes[0].source}; "
                              "export them separately or pass --fps")

    task_list = list(dict.fromkeys(t for e in episodes for t in e.tasks))
    task_index = {task: i for i, task in enumerate(task_list)}
    image_key = {camera.name: f"observation.images.{camera.name}" for camera in robot.cameras}
    rows: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index",
                                             "episode_index", "index", "task_index")}
    if not config.video:
        rows.update({key: [] for key in image_key.values()})
    episode_rows = []
    video_offset = 0.0
    index = 0
    for episode_index, episode in enumerate(episodes):
        length = len(episode.timestamps)
        rows["observation.state"] += list(episode.states)
        rows["action"] += list(episode.actions)
        rows["timestamp"] += list((np.arange(length) / fps).astype(np.float32))
        rows["frame_index"] += list(range(length))
        rows["episode_index"] += [episode_index] * length
        rows["index"] += list(range(index, index + length))
        rows["task_index"] += [task_index[t] for t in episode.tasks]
        if not config.video:
            for camera, key in image_key.items():
                rows[key] += [{"bytes": _png(f), "path": None} for f in episode.images[camera]]
        row = {"episode_index": episode_index, "tasks": list(dict.fromkeys(episode.tasks)), "length": length,
               "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": index,
               "dataset_to_index": index + length, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        if config.video:
            for key in image_key.values():
                row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                            f"videos/{key}/from_timestamp": video_offset,
                            f"videos/{key}/to_timestamp": video_offset + length / fps})
        stats = {"observation.state": feature_stats(episode.states), "action": feature_stats(episode.actions)}
        stats.update({image_key[c]: image_stats(frames) for c, frames in episode.images.items()})
        for feature, values in stats.items():
            for stat, value in values.items():
                row[f"stats/{feature}/{stat}"] = value
        episode_rows.append(row)
        video_offset += length / fps
        index += length

    if config.video:
        for camera, key in image_key.items():
            frames = [f for episode in episodes for f in episode.images[camera]]
            _encode_video(frames, fps, out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), config)

    width = len(names)
    columns = {
        "observation.state": pa.array([list(v) for v in rows["observation.state"]], type=pa.list_(pa.float32(), width)),
        "action": pa.array([list(v) for v in rows["action"]], type=pa.list_(pa.float32(), width)),
        "timestamp": pa.array(rows["timestamp"], type=pa.float32()),
        "frame_index": pa.array(rows["frame_index"], type=pa.int64()),
        "episode_index": pa.array(rows["episode_index"], type=pa.int64()),
        "index": pa.array(rows["index"], type=pa.int64()),
        "task_index": pa.array(rows["task_index"], type=pa.int64()),
    }
    if not config.video:
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        columns.update({key: pa.array(rows[key], type=image_type) for key in image_key.values()})
    data_path = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), data_path)

    episodes_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(episode_rows).to_parquet(episodes_path, index=False)
    pd.DataFrame({"task_index": range(len(task_list))}, index=pd.Index(task_list, name="task")).to_parquet(
        out / "meta" / "tasks.parquet")

    all_stats = {"observation.state": feature_stats(np.concatenate([e.states for e in episodes])),
                 "action": feature_stats(np.concatenate([e.actions for e in episodes]))}
    for camera, key in image_key.items():
        all_stats[key] = image_stats([f for e in episodes for f in e.images[camera]])
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        all_stats[key] = feature_stats(np.asarray(rows[key], dtype=np.float64)[:, None])
    (out / "meta" / "stats.json").write_text(json.dumps(all_stats, indent=2))

    features = {
        "observation.state": {"dtype": "float32", "shape": [width], "names": names},
        "action": {"dtype": "float32", "shape": [width], "names": names},
    }
    for camera, key in image_key.items():
        height, image_width, channels = shapes[camera]
        feature = {"dtype": "video" if config.video else "image", "shape": [height, image_width, channels],
                   "names": ["height", "width", "channels"]}
        if config.video:
            feature["info"] = {"video.height": height, "video.width": image_width, "video.codec": "av1",
                               "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                               "video.channels": channels, "has_audio": False}
        features[key] = feature
    features.update({"timestamp": {"dtype": "float32", "shape": [1], "names": None},
                     "frame_index": {"dtype": "int64", "shape": [1], "names": None},
                     "episode_index": {"dtype": "int64", "shape": [1], "names": None},
                     "index": {"dtype": "int64", "shape": [1], "names": None},
                     "task_index": {"dtype": "int64", "shape": [1], "names": None}})
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": config.robot_type, "total_episodes": len(episodes),
            "total_frames": index, "total_tasks": len(task_list), "chunks_size": 1000,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if config.video else None, "features": features}
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    if failures:
        (out / "meta" / "export_failures.json").write_text(json.dumps(failures, indent=2))
    return info
