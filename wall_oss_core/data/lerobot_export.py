"""Bags → a LeRobot dataset (codebase v3.0 layout), and normalization statistics from bags.

Layout written (as LeRobot 0.4's `lerobot_dataset.py` / `utils.py` write it for v3.0, so that LeRobot can load
the dataset and append episodes to it; `test/dataio/test_lerobot_compat.py` checks this with the library):

  meta/info.json                          codebase_version "v3.0", fps (an integer), features, paths, totals
  meta/stats.json                         per feature min / max / mean / std / count / q01 q10 q50 q90 q99
  meta/tasks.parquet                      unnamed index = task (the instruction), column task_index
  meta/episodes/chunk-000/file-000.parquet one row per episode: length, tasks, data/ and videos/ locations,
                                          dataset_from_index / dataset_to_index, stats/<feature>/<stat> for every
                                          feature (the index columns too; int64 min/max for integer columns)
  meta/wall_oss_export.json               per bag: episodes, frames, skipped frames by reason, gaps; failed bags
  data/chunk-000/file-000.parquet         one row per frame: observation.state, action, timestamp,
                                          frame_index, episode_index, index, task_index (+ `huggingface`
                                          features metadata, as `datasets` writes it)
  videos/observation.images.<camera>/chunk-000/file-000.mp4
                                          every episode's frames back to back (AV1 / yuv420p through
                                          PyAV's bundled SVT-AV1, LeRobot's default codec; moov atom first),
                                          located per episode by videos/<key>/from_timestamp / to_timestamp
With `video=False` the frames are stored in the data parquet instead, as PNG-encoded image structs
({bytes, path}: LeRobot's "image" dtype).

Frames are resampled at exactly `fps` (an integer, as LeRobot requires; default: the first bag's camera
rate), so timestamps are frame_index / fps as LeRobot expects; at each frame time the observation is the
one the live policy node would have assembled (same `ObservationAssembler`, fed from the bag by header
stamp). An instant without a complete observation (a camera or joint-state gap in the bag) cannot become a
frame; a gap inside a bag ends the episode there and the next complete frame starts a new one, so a
timestamp is never shifted. Skipped frames and gaps are counted per bag in the report.

Episodes are streamed: frames go to the video encoders and the data parquet as they are read; only the
state/action vectors and a bounded, evenly spaced sample of downsampled frames per camera (for image
statistics, as LeRobot samples them) stay in memory.

State and action spaces:
  joint_position  observation.state = the 14 command joints; action = the joint targets
  wall_oss_ee     observation.state = the 26-dim Wall-OSS absolute EE state (per arm xyz, 6D rotation,
                  gripper); action = the same layout for the targets (Wall-OSS training derives its
                  relative actions from these absolute ones)
The action at a frame is the command the robot was sent (the safety supervisor's controller commands,
when the bag has them), else the joint state one frame later (the usual choice for demonstrations).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
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
REPORT_PATH = "meta/wall_oss_export.json"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STATE_SPACES = ("joint_position", "wall_oss_ee")
ACTION_SOURCES = ("auto", "commands", "next_state")
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
ROWS_PER_WRITE = 256  # data parquet rows buffered before a write (PNG frames make rows large)


class ExportError(RuntimeError):
    """A bag cannot become an episode, or the export cannot go on (the message says why)."""


@dataclass(frozen=True)
class ExportConfig:
    fps: int | None = None  # None: the first bag's camera rate (median frame interval), rounded
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
    min_episode_frames: int = 2  # a stretch between gaps shorter than this is dropped (counted), not an episode
    stats_samples: int = 128  # at most this many frames per episode and camera kept for image statistics

    def __post_init__(self):
        if self.state_space not in (None,) + STATE_SPACES:
            raise ValueError(f"state_space must be one of {STATE_SPACES}, got {self.state_space!r}")
        if self.action_source not in ACTION_SOURCES:
            raise ValueError(f"action_source must be one of {ACTION_SOURCES}, got {self.action_source!r}")
        if self.fps is not None and not (isinstance(self.fps, int) and self.fps > 0):
            raise ValueError(f"fps must be a positive integer (LeRobot's fps is an int), got {self.fps!r}")
        if self.min_episode_frames < 1 or self.stats_samples < 2:
            raise ValueError("min_episode_frames must be >= 1 and stats_samples >= 2")


@dataclass
class Frame:
    """One dataset frame: bag time [s], state and action vectors, one RGB image per camera, the task."""

    time: float
    state: np.ndarray
    action: np.ndarray
    images: dict[str, np.ndarray]
    task: str


@dataclass
class BagReport:
    """What became of one bag: episodes and frames written, frames skipped by reason, gaps (bag times [s])."""

    episodes: int = 0
    frames: int = 0
    skipped: Counter = field(default_factory=Counter)
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"episodes": self.episodes, "frames": self.frames, "skipped": dict(self.skipped),
                "gaps": [list(gap) for gap in self.gaps]}


def feature_names(robot: RobotConfig, state_space: str) -> list[str]:
    return list(robot.command_joints) if state_space == "joint_position" else aspace.wall_oss_names(relative=False)


def _command_trajectory(reader: BagReader, robot: RobotConfig) -> JointTrajectory | None:
    """The commands sent to the controllers (forward-command topics), joined into command-joint vectors."""
    widths = {}
    for arm in robot.arms:
        widths[f"/{arm.controller}/commands"] = len(arm.joints)
        widths[f"/{arm.gripper_controller}/commands"] = 1
    command_topics = list(widths)
    if any(t not in reader.topics for t in command_topics):
        return None
    latest: dict[str, np.ndarray] = {}
    times, rows = [], []
    for item in reader.messages(command_topics):
        values = np.asarray(item.message.data, dtype=float)
        if values.shape != (widths[item.topic],) or not np.all(np.isfinite(values)):
            continue
        latest[item.topic] = values
        if len(latest) == len(command_topics) and (not times or item.log_time > times[-1]):
            times.append(item.log_time)
            rows.append(np.concatenate([latest[t] for t in command_topics]))
    if len(times) < 2:
        return None
    return JointTrajectory(np.array(times), np.array(rows))


class BagFrames:
    """One bag read as dataset frames at a fixed integer rate (see the module docstring).

    Opening checks the bag (topics, cameras, joint states, commands) so that a bag that cannot be exported
    fails before any of its frames is written; `episodes()` then streams the frames, one iterator per
    gap-free stretch. Use as a context manager (the bag stays open while its frames are read)."""

    def __init__(self, bag: str | Path, robot: RobotConfig, config: ExportConfig, fps: int | None = None):
        self.bag, self.robot, self.config = str(bag), robot, config
        self.kinematics = BimanualKinematics(robot)
        self.state_space = config.state_space or ("wall_oss_ee" if robot.action_space == "wall_oss_ee_relative"
                                                  else "joint_position")
        self.report = BagReport()
        self.reader = BagReader(bag)
        try:
            self._check(fps or config.fps)
        except BaseException:
            self.reader.close()
            raise

    def _check(self, fps: int | None):
        reader, robot = self.reader, self.robot
        self.joint_topic = topics.JOINT_STATES
        self.instruction_topic = topics.qualified(topics.INSTRUCTION, self.config.namespace)
        reader.check_topics([self.joint_topic])
        self.cameras = camera_topics(reader, robot)
        missing = [c.name for c in robot.cameras if c.name not in self.cameras]
        if missing:
            raise ExportError(f"bag {self.bag} has no frames for cameras {missing}; it has {sorted(reader.topics)}")
        self.joints = joint_trajectory_from_messages(reader.messages([self.joint_topic]), robot, self.report.skipped)
        if len(self.joints.times) < 2:
            raise ExportError(f"bag {self.bag} holds fewer than two usable joint states")
        stamps = np.array([header_stamp(m.message) for m in reader.messages([self.cameras[robot.cameras[0].name]])])
        if len(stamps) < 2:
            raise ExportError(f"bag {self.bag} holds fewer than two frames of camera {robot.cameras[0].name}")
        # the median frame interval, which a gap in the recording does not change (a frame count would)
        intervals = np.diff(stamps)
        intervals = intervals[intervals > 0]
        if not fps and not len(intervals):
            raise ExportError(f"bag {self.bag}: camera {robot.cameras[0].name} frames all carry one stamp")
        self.fps = fps or max(1, int(round(1.0 / float(np.median(intervals)))))
        self.commands = _command_trajectory(reader, robot) if self.config.action_source != "next_state" else None
        if self.config.action_source == "commands" and self.commands is None:
            raise ExportError(f"bag {self.bag} has no complete controller commands; use action_source=next_state")
        start = float(stamps[0])
        end = float(min(stamps[-1], self.joints.times[-1] - (0 if self.commands else 1.0 / self.fps)))
        self.instants = start + np.arange(int(np.floor((end - start) * self.fps + 1e-6)) + 1) / self.fps

    def __enter__(self) -> BagFrames:
        return self

    def __exit__(self, *exc):
        self.reader.close()

    def frames(self) -> Iterator[tuple[int, Frame]]:
        """(stretch number, frame) for every instant with a complete observation; the stretch number goes up
        after each gap. Instants without one are counted in report.skipped as frame:<reason>."""
        assembler = ObservationAssembler(self.kinematics, self.config.assembly)
        feeder = BagObservationFeeder(self.reader.messages(list(self.cameras.values()) + [self.joint_topic,
                                                                                         self.instruction_topic]),
                                      assembler, self.cameras, self.joint_topic, self.instruction_topic,
                                      self.config.lookahead, self.report.skipped)
        stretch, last_time, missed_since = 0, None, None
        for instant in self.instants:
            feeder.advance(instant)
            observation = assembler.assemble(instant, feeder.instruction)
            if isinstance(observation, Unavailable):
                self.report.skipped[f"frame:{observation.reason}"] += 1
                missed_since = instant if missed_since is None else missed_since
                continue
            if missed_since is not None and last_time is not None:
                stretch += 1
                self.report.gaps.append((float(last_time), float(instant)))
            missed_since, last_time = None, instant
            if self.commands is not None:
                target = self.commands.at(np.array([instant]))[0]
            else:
                target = self.joints.at(np.array([instant + 1.0 / self.fps]))[0]
            state = observation.joint_positions
            if self.state_space == "wall_oss_ee":
                state, target = self._ee_state(state), self._ee_state(target)
            yield stretch, Frame(float(instant), np.asarray(state, np.float32), np.asarray(target, np.float32),
                                 {c.name: observation.images[c.name] for c in self.robot.cameras},
                                 feeder.instruction)

    def episodes(self) -> Iterator[Iterator[Frame]]:
        """One lazy frame iterator per gap-free stretch (consume each before asking for the next)."""
        for _, stretch in itertools.groupby(self.frames(), key=lambda item: item[0]):
            yield (frame for _, frame in stretch)

    def _ee_state(self, command: np.ndarray) -> np.ndarray:
        grippers = {arm.name: float(command[self.kinematics.gripper_index(arm.name)])
                    for arm in self.kinematics.config.arms}
        return aspace.ee_state_vector(self.kinematics.ee_poses(command), grippers)


# --- statistics --------------------------------------------------------------------------------------
def feature_stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot statistics of (N, D) values: min, max, mean, std, count and the quantiles q01 … q99.
    min and max keep the values' type (int64 lists for integer columns, as LeRobot writes them)."""
    values = np.asarray(values)
    stats = {"min": values.min(axis=0), "max": values.max(axis=0), "mean": values.mean(axis=0, dtype=np.float64),
             "std": values.std(axis=0, dtype=np.float64), "count": np.array([len(values)])}
    for q in QUANTILES:
        stats[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0)
    return {key: value.tolist() for key, value in stats.items()}


def downsample(image: np.ndarray, target: int = 150, threshold: int = 300) -> np.ndarray:
    """Every k-th pixel so the long side is about `target` (LeRobot's auto_downsample_height_width)."""
    height, width = image.shape[:2]
    if max(height, width) < threshold:
        return image
    step = int(max(height, width) / target)
    return image[::step, ::step]


class FrameSampler:
    """Evenly spaced, downsampled frames of a stream of unknown length, at most `capacity` of them: every
    stride-th frame is kept and the stride doubles (every other sample dropped) when the sample is full."""

    def __init__(self, capacity: int):
        self.capacity, self.stride, self.seen = capacity, 1, 0
        self.samples: list[np.ndarray] = []

    def add(self, image: np.ndarray):
        if self.seen % self.stride == 0:
            self.samples.append(np.ascontiguousarray(downsample(image)))
            if len(self.samples) > self.capacity:
                self.samples, self.stride = self.samples[::2], self.stride * 2
        self.seen += 1

    def stats(self) -> dict[str, list]:
        """Per-channel statistics of the sampled pixels scaled to [0, 1], shaped (3, 1, 1) as LeRobot stores
        them; count = frames seen."""
        pixels = np.concatenate([s.reshape(-1, 3) for s in self.samples])
        stats = {key: (np.asarray(value) / 255.0)[:, None, None].tolist()
                 for key, value in feature_stats(pixels).items() if key != "count"}
        stats["count"] = [self.seen]
        return stats


def aggregate_stats(episode_stats: list[dict[str, list]]) -> dict[str, list]:
    """Dataset statistics from per-episode ones, as LeRobot's aggregate_stats combines them: extreme min/max,
    count-weighted mean, pooled std, count-weighted quantiles."""
    counts = np.array([s["count"][0] for s in episode_stats], dtype=np.float64)
    weights = (counts / counts.sum()).reshape((-1,) + (1,) * np.asarray(episode_stats[0]["mean"]).ndim)
    means = np.array([s["mean"] for s in episode_stats])
    mean = (weights * means).sum(axis=0)
    variance = (weights * (np.array([s["std"] for s in episode_stats]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    result = {"min": np.min([s["min"] for s in episode_stats], axis=0).tolist(),
              "max": np.max([s["max"] for s in episode_stats], axis=0).tolist(),
              "mean": mean.tolist(), "std": np.sqrt(variance).tolist(), "count": [int(counts.sum())]}
    for key in episode_stats[0]:
        if key.startswith("q"):
            result[key] = (weights * np.array([s[key] for s in episode_stats])).sum(axis=0).tolist()
    return result


def stats_from_bags(bags: list[str | Path], robot_config: str | Path | None = None,
                    config: ExportConfig = ExportConfig()) -> dict:
    """observation.state and action statistics over every frame of `bags` (stats.json layout)."""
    robot = load_robot_config(robot_config or default_config_path())
    states, actions, fps = [], [], config.fps
    for bag in bags:
        with BagFrames(bag, robot, config, fps) as source:
            fps = source.fps
            for _, frame in source.frames():
                states.append(frame.state)
                actions.append(frame.action)
    if not states:
        raise ExportError(f"no frame of {[str(b) for b in bags]} had a complete observation")
    return {"observation.state": feature_stats(np.array(states)), "action": feature_stats(np.array(actions))}


# --- writing -----------------------------------------------------------------------------------------
class _VideoEncoder:
    """One camera's mp4 for the whole dataset; frames appended as they come (constant frame rate)."""

    def __init__(self, path: Path, fps: int, width: int, height: int, config: ExportConfig):
        import av

        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
        path.parent.mkdir(parents=True, exist_ok=True)
        # faststart: the index (moov atom) goes before the frames, so players and streaming readers can seek
        self.container = av.open(str(path), "w", options={"movflags": "faststart"})
        self.stream = self.container.add_stream(config.vcodec, rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"g": str(config.gop), "crf": str(config.crf)}
        self.frame_type = av.VideoFrame

    def add(self, image: np.ndarray):
        for packet in self.stream.encode(self.frame_type.from_ndarray(image, format="rgb24")):
            self.container.mux(packet)

    def close(self):
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _png(frame: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]))
    if not ok:
        raise ExportError("PNG encoding of a frame failed")
    return encoded.tobytes()


class DatasetWriter:
    """Streams episodes into the v3.0 files (data parquet, one mp4 per camera) and writes the metadata at the
    end. Image sizes are fixed by the first frame; a later frame of another size is an ExportError."""

    def __init__(self, out: Path, robot: RobotConfig, config: ExportConfig, fps: int, state_space: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.out, self.robot, self.config, self.fps = out, robot, config, fps
        self.names = feature_names(robot, state_space)
        self.image_keys = {camera.name: f"observation.images.{camera.name}" for camera in robot.cameras}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.encoders: dict[str, _VideoEncoder] = {}
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict] = []
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.index_columns: dict[str, list[np.ndarray]] = {key: [] for key in INDEX_COLUMNS}
        self.image_stats: dict[str, list[dict]] = {key: [] for key in self.image_keys.values()}
        width = len(self.names)
        fields = [("observation.state", pa.list_(pa.float32(), width)), ("action", pa.list_(pa.float32(), width)),
                  ("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
                  ("index", pa.int64()), ("task_index", pa.int64())]
        if not config.video:
            fields += [(key, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
                       for key in self.image_keys.values()]
        self.schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": self._hf_features()}})})
        self.data_path = out / DATA_PATH.format(chunk_index=0, file_index=0)
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self.data_writer = pq.ParquetWriter(self.data_path, self.schema)
        self.total_frames = 0
        self.closed = False

    def _hf_features(self) -> dict:
        """The `datasets` Features of the data parquet (what LeRobot's hf_features gives for these features)."""
        vector = {"feature": {"dtype": "float32", "_type": "Value"}, "length": len(self.names), "_type": "List"}
        features = {"observation.state": vector, "action": dict(vector),
                    "timestamp": {"dtype": "float32", "_type": "Value"}}
        features.update({key: {"dtype": "int64", "_type": "Value"} for key in INDEX_COLUMNS[1:]})
        if not self.config.video:
            features.update({key: {"_type": "Image"} for key in self.image_keys.values()})
        return features

    def _check_images(self, frame: Frame, source: str):
        for camera, image in frame.images.items():
            expected = self.shapes.setdefault(camera, image.shape)
            if image.shape != expected:
                raise ExportError(f"{source}: camera {camera} frames are {image.shape}, earlier ones {expected}; "
                                  "export bags with different image sizes separately")

    def add_episode(self, frames: Iterable[Frame], source: str, report: BagReport) -> bool:
        """Write one episode; False (and the frames counted as frame:short_episode) when it has fewer than
        min_episode_frames frames."""
        frames = iter(frames)
        head = list(itertools.islice(frames, self.config.min_episode_frames))
        if len(head) < self.config.min_episode_frames:
            report.skipped["frame:short_episode"] += len(head)
            return False
        episode_index, start = len(self.episode_rows), self.total_frames
        samplers = {key: FrameSampler(self.config.stats_samples) for key in self.image_keys.values()}
        states, actions, task_indices, tasks, rows = [], [], [], [], []
        for frame in itertools.chain(head, frames):
            self._check_images(frame, source)
            task_index = self.tasks.setdefault(frame.task, len(self.tasks))
            states.append(frame.state)
            actions.append(frame.action)
            task_indices.append(task_index)
            tasks.append(frame.task)
            frame_index = len(states) - 1
            row = {"observation.state": frame.state, "action": frame.action,
                   "timestamp": np.float32(frame_index / self.fps), "frame_index": frame_index,
                   "episode_index": episode_index, "index": start + frame_index, "task_index": task_index}
            for camera, key in self.image_keys.items():
                image = frame.images[camera]
                samplers[key].add(image)
                if self.config.video:
                    self._encoder(key, image).add(image)
                else:
                    row[key] = {"bytes": _png(image), "path": None}
            rows.append(row)
            if len(rows) >= ROWS_PER_WRITE:
                self._write_rows(rows)
                rows = []
        self._write_rows(rows)
        length = len(states)
        states_array, actions_array = np.array(states), np.array(actions)
        columns = {"timestamp": (np.arange(length) / self.fps).astype(np.float32),
                   "frame_index": np.arange(length, dtype=np.int64),
                   "episode_index": np.full(length, episode_index, dtype=np.int64),
                   "index": np.arange(start, start + length, dtype=np.int64),
                   "task_index": np.array(task_indices, dtype=np.int64)}
        # column order as LeRobot's episode metadata: identity and locations, videos, stats, meta/episodes
        row = {"episode_index": episode_index, "tasks": list(dict.fromkeys(tasks)), "length": length,
               "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": start,
               "dataset_to_index": start + length}
        if self.config.video:
            offset = start / self.fps
            for key in self.image_keys.values():
                row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                            f"videos/{key}/from_timestamp": offset,
                            f"videos/{key}/to_timestamp": offset + length / self.fps})
        stats = {"observation.state": feature_stats(states_array), "action": feature_stats(actions_array)}
        for key, sampler in samplers.items():
            stats[key] = sampler.stats()
            self.image_stats[key].append(stats[key])
        stats.update({key: feature_stats(values[:, None]) for key, values in columns.items()})
        for feature, values in stats.items():
            for stat, value in values.items():
                row[f"stats/{feature}/{stat}"] = value
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        self.episode_rows.append(row)
        self.states.append(states_array)
        self.actions.append(actions_array)
        for key, values in columns.items():
            self.index_columns[key].append(values)
        self.total_frames += length
        report.episodes += 1
        report.frames += length
        return True

    def _encoder(self, key: str, image: np.ndarray) -> _VideoEncoder:
        if key not in self.encoders:
            path = self.out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            self.encoders[key] = _VideoEncoder(path, self.fps, image.shape[1], image.shape[0], self.config)
        return self.encoders[key]

    def _write_rows(self, rows: list[dict]):
        import pyarrow as pa

        if rows:
            columns = {name: [row[name] for row in rows] for name in self.schema.names}
            columns["observation.state"] = [list(v) for v in columns["observation.state"]]
            columns["action"] = [list(v) for v in columns["action"]]
            self.data_writer.write_table(pa.table(columns, schema=self.schema))

    def close(self):
        """Finish the data and video files (idempotent); the metadata is written by finish()."""
        if not self.closed:
            self.closed = True
            self.data_writer.close()
            for encoder in self.encoders.values():
                encoder.close()

    def finish(self, reports: dict[str, BagReport], failures: dict[str, str]) -> dict:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.close()
        meta = self.out / "meta"
        episodes_path = self.out / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), episodes_path)
        pd.DataFrame({"task_index": list(self.tasks.values())}, index=list(self.tasks)).to_parquet(
            meta / "tasks.parquet")

        all_stats = {"observation.state": feature_stats(np.concatenate(self.states)),
                     "action": feature_stats(np.concatenate(self.actions))}
        all_stats.update({key: aggregate_stats(stats) for key, stats in self.image_stats.items()})
        all_stats.update({key: feature_stats(np.concatenate(values)[:, None])
                          for key, values in self.index_columns.items()})
        (meta / "stats.json").write_text(json.dumps(all_stats, indent=2))

        width = len(self.names)
        features = {"observation.state": {"dtype": "float32", "shape": [width], "names": self.names},
                    "action": {"dtype": "float32", "shape": [width], "names": self.names}}
        for camera, key in self.image_keys.items():
            height, image_width, channels = self.shapes[camera]
            feature = {"dtype": "video" if self.config.video else "image", "shape": [height, image_width, channels],
                       "names": ["height", "width", "channels"]}
            if self.config.video:
                feature["info"] = {"video.height": height, "video.width": image_width, "video.codec": "av1",
                                   "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": self.fps,
                                   "video.channels": channels, "has_audio": False}
            features[key] = feature
        features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        features.update({key: {"dtype": "int64", "shape": [1], "names": None} for key in INDEX_COLUMNS[1:]})
        episodes = len(self.episode_rows)
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": self.config.robot_type,
                "total_episodes": episodes, "total_frames": self.total_frames, "total_tasks": len(self.tasks),
                "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": self.fps,
                "splits": {"train": f"0:{episodes}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if self.config.video else None, "features": features}
        (meta / "info.json").write_text(json.dumps(info, indent=4))
        report = {"bags": {bag: r.as_dict() for bag, r in reports.items()}, "failures": failures}
        (self.out / REPORT_PATH).write_text(json.dumps(report, indent=2))
        return info


def export_dataset(bags: list[str | Path], out_dir: str | Path, robot_config: str | Path | None = None,
                   config: ExportConfig = ExportConfig(), progress: bool = True) -> dict:
    """Write the dataset; returns its info.json content. Bags that cannot be read are reported and skipped
    (ExportError when none can); skipped frames and gaps are logged and written to meta/wall_oss_export.json."""
    robot = load_robot_config(robot_config or default_config_path())
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new dataset directory")
    writer: DatasetWriter | None = None
    reports: dict[str, BagReport] = {}
    failures: dict[str, str] = {}
    iterator = bags
    if progress:
        from tqdm import tqdm
        iterator = tqdm(bags, desc="exporting bags", unit="bag")
    try:
        for bag in iterator:
            try:  # one unreadable bag must not lose the others; it is found out before any frame is written
                source = BagFrames(bag, robot, config, writer.fps if writer else None)
            except Exception as error:
                failures[str(bag)] = f"{type(error).__name__}: {error}"
                LOG.warning("skipping bag %s: %s", bag, error)
                continue
            with source:
                if writer is None:
                    writer = DatasetWriter(out, robot, config, source.fps, source.state_space)
                for episode in source.episodes():
                    writer.add_episode(episode, str(bag), source.report)
            reports[str(bag)] = source.report
            if source.report.skipped or source.report.gaps:
                LOG.warning("bag %s: %d episodes, skipped %s, gaps %s", bag, source.report.episodes,
                            dict(source.report.skipped), source.report.gaps)
            if source.report.episodes == 0:
                failures[str(bag)] = f"no complete observation long enough for an episode ({dict(source.report.skipped)})"
        if writer is None or not writer.episode_rows:
            raise ExportError(f"no bag could be exported: {failures}")
        return writer.finish(reports, failures)
    finally:
        if writer is not None:
            writer.close()
