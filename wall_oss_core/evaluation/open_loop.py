"""Offline open-loop evaluation of a policy on a recorded bag, and comparison of two runs.

At each evaluation instant the policy gets exactly the observation the live policy node would
have assembled: the bag's camera frames and joint states are fed, in order, to the same
`ObservationAssembler` the node uses, with their header stamps, and the assembler is asked for the
observation at the instant. The predicted chunk is compared, action by action at the same target
times, with the ground truth over its horizon:

  chunks        the recorded `action_chunk` messages (what the policy that ran predicted),
                resampled at the predicted action times within the recorded chunk that was current
  joint_states  what the robot then did: joint states interpolated at the action times, mapped
                into the predicted chunk's action space (relative to the observation's EE poses
                for `wall_oss_ee_relative`, via forward kinematics)
  auto          recorded chunks when the bag has them in the predicted action space, else joint states

Evaluation instants (`EvaluationConfig.instants`):
  chunks  the observation stamp of every recorded action chunk (reproduces what the live policy saw)
  frames  the stamp of every frame of the first camera (dense, one per image)
  period  every `period` seconds from the first moment every input is present

Metrics: per-dimension MAE / RMSE; per-arm end-effector position error [mm] and rotation error
[deg] (mean / median / p95 / max, and mean by horizon step); gripper open/close timing error
(open/close events of the stitched predicted and recorded gripper trajectories, matched in order);
coverage (instants evaluated vs skipped, with reasons). Outputs: metrics.json, report.html with PNG
plots, and an MCAP bag of the predicted chunks.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wall_oss_core import topics
from wall_oss_core.backends.replay import ACTION_CHUNK_TYPE
from wall_oss_core.data.bag_observations import (
    BagObservationFeeder,
    JointTrajectory,
    camera_topics,
    header_stamp,
    joint_trajectory_from_messages,
)
from wall_oss_core.data.bag_reader import BagError, BagReader
from wall_oss_core.evaluation.ablation import CameraAblation
from wall_oss_core.evaluation.statistics import summary_statistics
from wall_oss_core.policy import action_space as aspace
from wall_oss_core.policy.interface import Chunk, Observation, Policy, PolicyError, chunk_from_message
from wall_oss_core.policy.observation import AssemblyLimits, ObservationAssembler, Unavailable
from wall_oss_core.robot.config import RobotConfig, default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics

LOG = logging.getLogger(__name__)
INSTANT_MODES = ("chunks", "frames", "period")
GROUND_TRUTHS = ("auto", "chunks", "joint_states")
JOINT_POSITION = "joint_position"
EE_RELATIVE = "wall_oss_ee_relative"


class EvaluationError(RuntimeError):
    """The evaluation cannot run at all (the message says what is missing)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """How instants are chosen and ground truth is built. Topic names follow the ROS graph contract."""

    instants: str = "chunks"
    period: float = 0.5
    ground_truth: str = "auto"
    namespace: str = topics.NAMESPACE
    joint_states_topic: str = topics.JOINT_STATES
    assembly: AssemblyLimits = field(default_factory=AssemblyLimits)
    # messages are released to the assembler by header stamp; read this far [s] past an instant so
    # that inputs stamped before it but received after it are not missed
    lookahead: float = 0.5
    max_instants: int | None = None
    gripper_threshold: float | None = None  # opening [m] separating closed/open; None: mid of the range
    ablate_cameras: bool = False  # also measure how far each camera's ablation moves the chunk (ablation.py)
    progress: bool = True

    def __post_init__(self):
        if self.instants not in INSTANT_MODES:
            raise ValueError(f"instants must be one of {INSTANT_MODES}, got {self.instants!r}")
        if self.ground_truth not in GROUND_TRUTHS:
            raise ValueError(f"ground_truth must be one of {GROUND_TRUTHS}, got {self.ground_truth!r}")
        if not self.period > 0:
            raise ValueError(f"period must be positive, got {self.period}")
        if self.max_instants is not None and self.max_instants <= 0:
            raise ValueError(f"max_instants must be positive, got {self.max_instants}")

    def topic(self, relative: str) -> str:
        return topics.qualified(relative, self.namespace)


def ee_trajectory(chunk_actions: np.ndarray, action_space: str, action_names: list[str],
                  reference_poses: dict[str, np.ndarray], kinematics: BimanualKinematics
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Absolute EE poses (arm → (H, 4, 4)) and gripper openings (arm → (H,)) a chunk's actions target."""
    if action_space == EE_RELATIVE:
        return aspace.relative_actions_to_poses(chunk_actions, reference_poses)
    if action_space == JOINT_POSITION:
        order = [action_names.index(name) for name in kinematics.config.command_joints]
        commands = chunk_actions[:, order]
        poses = {arm.name: np.empty((len(commands), 4, 4)) for arm in kinematics.config.arms}
        for k, command in enumerate(commands):
            for arm, pose in kinematics.ee_poses(command).items():
                poses[arm][k] = pose
        grippers = {arm.name: commands[:, kinematics.gripper_index(arm.name)].copy() for arm in kinematics.config.arms}
        return poses, grippers
    raise EvaluationError(f"action space {action_space!r} has no end-effector interpretation")


def truth_from_joints(trajectory: JointTrajectory, times: np.ndarray, action_space: str, action_names: list[str],
                      reference_poses: dict[str, np.ndarray], kinematics: BimanualKinematics) -> np.ndarray:
    """Joint-state ground truth at `times`, expressed in the predicted chunk's action space."""
    commands = trajectory.at(times)
    if action_space == JOINT_POSITION:
        index = {name: i for i, name in enumerate(kinematics.config.command_joints)}
        missing = [name for name in action_names if name not in index]
        if missing:
            raise EvaluationError(f"joint_position actions name joints the robot config lacks: {missing}")
        return commands[:, [index[name] for name in action_names]]
    if action_space == EE_RELATIVE:
        poses = {arm.name: np.empty((len(times), 4, 4)) for arm in kinematics.config.arms}
        for k, command in enumerate(commands):
            for arm, pose in kinematics.ee_poses(command).items():
                poses[arm][k] = pose
        grippers = {arm.name: commands[:, kinematics.gripper_index(arm.name)] for arm in kinematics.config.arms}
        truth = aspace.poses_to_relative_actions(poses, grippers, reference_poses)
        return truth[:, [aspace.wall_oss_names(relative=True).index(name) for name in action_names]]
    raise EvaluationError(f"no joint-state ground truth for action space {action_space!r}")


def resample_chunk(chunk: Chunk, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's actions linearly interpolated at `times` → (values (T, A), mask of times it covers)."""
    own = chunk.action_times()
    covered = (times >= own[0] - 1e-9) & (times <= own[-1] + 1e-9)
    values = np.stack([np.interp(times, own, chunk.actions[:, j]) for j in range(chunk.actions.shape[1])], axis=-1)
    return values, covered


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle [deg] of the rotation between (…, 3, 3) rotations a and b."""
    relative = a @ np.swapaxes(b, -1, -2)
    cosine = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


# --- metric accumulation -------------------------------------------------------------------------
def gripper_events(times: np.ndarray, openings: np.ndarray, threshold: float) -> list[tuple[float, str]]:
    """(time, "open"|"close") at every crossing of `threshold`, the time linearly interpolated."""
    events = []
    state = openings > threshold
    for i in np.nonzero(state[1:] != state[:-1])[0]:
        a, b = openings[i], openings[i + 1]
        fraction = (threshold - a) / (b - a) if b != a else 0.0
        events.append((float(times[i] + fraction * (times[i + 1] - times[i])), "open" if state[i + 1] else "close"))
    return events


def match_events(predicted: list[tuple[float, str]], recorded: list[tuple[float, str]], max_gap: float
                 ) -> tuple[list[float], int, int]:
    """Pair every recorded event with the nearest unused predicted event of the same kind within
    `max_gap` s. Returns (signed errors predicted - recorded, unmatched recorded, unmatched predicted)."""
    used = set()
    errors = []
    for t, kind in recorded:
        candidates = [(abs(pt - t), i) for i, (pt, pk) in enumerate(predicted)
                      if pk == kind and i not in used and abs(pt - t) <= max_gap]
        if candidates:
            _, best = min(candidates)
            used.add(best)
            errors.append(predicted[best][0] - t)
    return errors, len(recorded) - len(errors), len(predicted) - len(used)


@dataclass
class InstantResult:
    """One evaluated instant, kept for plots and the stitched trajectories."""

    stamp: float
    times: np.ndarray
    predicted_poses: dict[str, np.ndarray]
    truth_poses: dict[str, np.ndarray]
    predicted_grippers: dict[str, np.ndarray]
    truth_grippers: dict[str, np.ndarray]


class ChunkComparison:
    """Accumulates predicted-vs-truth errors over instants; shared by offline evaluation and run comparison."""

    def __init__(self, kinematics: BimanualKinematics, gripper_threshold: float | None = None):
        self.kinematics = kinematics
        self.arms = [arm.name for arm in kinematics.config.arms]
        self.names: list[str] | None = None
        self.abs_sum = self.sq_sum = self.count = None
        self.position_mm: dict[str, list[float]] = {arm: [] for arm in self.arms}
        self.rotation_deg: dict[str, list[float]] = {arm: [] for arm in self.arms}
        self.position_by_step: dict[str, dict[int, list[float]]] = {arm: {} for arm in self.arms}
        self.instants: list[InstantResult] = []
        self.coverage: Counter[str] = Counter()
        self.steps_outside_truth = 0
        limits = kinematics.limits
        grippers = [kinematics.gripper_index(arm) for arm in self.arms]
        self.gripper_threshold = (gripper_threshold if gripper_threshold is not None
                                  else float(np.mean((limits.lower[grippers] + limits.upper[grippers]) / 2)))

    def skip(self, reason: str):
        self.coverage[f"skipped:{reason}"] += 1

    def add(self, predicted: Chunk, times: np.ndarray, predicted_values: np.ndarray, truth_values: np.ndarray,
            reference_poses: dict[str, np.ndarray]):
        """Errors of one instant: `predicted_values` / `truth_values` (T, A) at `times` in predicted's space."""
        if self.names is None:
            self.names = list(predicted.action_names)
            width = len(self.names)
            self.abs_sum, self.sq_sum, self.count = np.zeros(width), np.zeros(width), 0
        elif list(predicted.action_names) != self.names:
            self.skip("action names changed between chunks")
            return
        error = predicted_values - truth_values
        self.abs_sum += np.abs(error).sum(axis=0)
        self.sq_sum += (error ** 2).sum(axis=0)
        self.count += len(error)
        space, names = predicted.action_space, list(predicted.action_names)
        predicted_poses, predicted_grippers = ee_trajectory(predicted_values, space, names, reference_poses,
                                                            self.kinematics)
        truth_poses, truth_grippers = ee_trajectory(truth_values, space, names, reference_poses, self.kinematics)
        for arm in self.arms:
            position = np.linalg.norm(predicted_poses[arm][:, :3, 3] - truth_poses[arm][:, :3, 3], axis=1) * 1000.0
            self.position_mm[arm].extend(position.tolist())
            self.rotation_deg[arm].extend(rotation_angle_deg(predicted_poses[arm][:, :3, :3],
                                                             truth_poses[arm][:, :3, :3]).tolist())
            for step, value in enumerate(position):
                self.position_by_step[arm].setdefault(step, []).append(float(value))
        self.instants.append(InstantResult(predicted.stamp, times, predicted_poses, truth_poses,
                                           predicted_grippers, truth_grippers))
        self.coverage["evaluated"] += 1

    def stitched(self, source: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One trajectory from all instants: each instant's actions until the next instant begins."""
        times, poses, grippers = [], {arm: [] for arm in self.arms}, {arm: [] for arm in self.arms}
        for i, item in enumerate(self.instants):
            end = self.instants[i + 1].stamp if i + 1 < len(self.instants) else math.inf
            keep = (item.times >= item.stamp - 1e-9) & (item.times < end)
            times.append(item.times[keep])
            for arm in self.arms:
                pose_source = item.predicted_poses if source == "predicted" else item.truth_poses
                grip_source = item.predicted_grippers if source == "predicted" else item.truth_grippers
                poses[arm].append(pose_source[arm][keep])
                grippers[arm].append(grip_source[arm][keep])
        if not times:
            return np.zeros(0), {a: np.zeros((0, 4, 4)) for a in self.arms}, {a: np.zeros(0) for a in self.arms}
        return (np.concatenate(times), {a: np.concatenate(poses[a]) for a in self.arms},
                {a: np.concatenate(grippers[a]) for a in self.arms})

    def metrics(self) -> dict:
        per_dimension = {}
        if self.names is not None and self.count:
            mae = self.abs_sum / self.count
            rmse = np.sqrt(self.sq_sum / self.count)
            per_dimension = {name: {"mae": float(mae[j]), "rmse": float(rmse[j])} for j, name in enumerate(self.names)}
        end_effector = {}
        for arm in self.arms:
            steps = self.position_by_step[arm]
            end_effector[arm] = {
                "position_error_mm": summary_statistics(self.position_mm[arm]),
                "rotation_error_deg": summary_statistics(self.rotation_deg[arm]),
                "position_error_mm_by_step": [float(np.mean(steps[k])) for k in sorted(steps)],
            }
        evaluated = self.coverage.get("evaluated", 0)
        skipped = {key.split(":", 1)[1]: n for key, n in sorted(self.coverage.items()) if key.startswith("skipped:")}
        return {
            "per_dimension": per_dimension,
            "overall": {"mae": float(np.mean([d["mae"] for d in per_dimension.values()])) if per_dimension else None,
                        "rmse": float(np.sqrt(np.mean([d["rmse"] ** 2 for d in per_dimension.values()])))
                        if per_dimension else None,
                        "compared_actions": int(self.count or 0)},
            "end_effector": end_effector,
            "gripper_timing": self._gripper_timing(),
            "coverage": {"instants": evaluated + sum(skipped.values()), "evaluated": evaluated,
                         "skipped": sum(skipped.values()), "skipped_by_reason": skipped,
                         "actions_outside_ground_truth": self.steps_outside_truth},
        }

    def _gripper_timing(self) -> dict:
        predicted_t, _, predicted_g = self.stitched("predicted")
        truth_t, _, truth_g = self.stitched("truth")
        result = {"threshold_m": self.gripper_threshold}
        if len(predicted_t) < 2:
            return result
        span = float(predicted_t[-1] - predicted_t[0])
        for arm in self.arms:
            predicted = gripper_events(predicted_t, predicted_g[arm], self.gripper_threshold)
            recorded = gripper_events(truth_t, truth_g[arm], self.gripper_threshold)
            errors, missed, extra = match_events(predicted, recorded, max_gap=max(span, 1.0))
            result[arm] = {"recorded_events": len(recorded), "predicted_events": len(predicted),
                           "matched": len(errors), "missed": missed, "extra": extra,
                           "timing_error_s": summary_statistics(np.abs(errors)),
                           "mean_signed_error_s": float(np.mean(errors)) if errors else None}
        return result


# --- the offline evaluation ----------------------------------------------------------------------
@dataclass
class EvaluationResult:
    metrics: dict
    comparison: ChunkComparison
    predicted_chunks: list[Chunk]
    recorded_ee: dict  # arm → (times, positions (N, 3)) from the recorded joint states
    outputs: dict[str, str] = field(default_factory=dict)


class Evaluator:
    """Runs a policy over a bag; see the module docstring for instants, ground truth and metrics."""

    def __init__(self, policy: Policy, robot_config: RobotConfig | str | Path | None = None,
                 config: EvaluationConfig = EvaluationConfig()):
        self.policy = policy
        self.robot = robot_config if isinstance(robot_config, RobotConfig) else load_robot_config(
            robot_config or default_config_path())
        self.kinematics = BimanualKinematics(self.robot)
        self.config = config

    def evaluate(self, bag: str | Path, out_dir: str | Path | None = None) -> EvaluationResult:
        config = self.config
        chunk_topic, instruction_topic = config.topic(topics.ACTION_CHUNK), config.topic(topics.INSTRUCTION)
        with BagReader(bag) as reader:
            reader.check_topics([config.joint_states_topic])
            cameras = camera_topics(reader, self.robot)
            missing = [c.name for c in self.robot.cameras if c.name not in cameras]
            if missing:
                raise BagError(f"bag {bag} has no frames for cameras {missing} (looked for "
                               f"{[c.topic for c in self.robot.cameras if c.name in missing]} and their /compressed); "
                               f"it has {sorted(reader.topics)}")
            skipped_inputs: Counter[str] = Counter()
            trajectory = joint_trajectory_from_messages(reader.messages([config.joint_states_topic]), self.robot, skipped_inputs)
            if len(trajectory.times) < 2:
                raise EvaluationError(f"bag {bag} holds fewer than two usable joint states")
            recorded = self._recorded_chunks(reader, chunk_topic, skipped_inputs)
            truth_source = self._truth_source(recorded)
            instants = self._instants(reader, recorded, cameras, trajectory)
            comparison = ChunkComparison(self.kinematics, config.gripper_threshold)
            ablation = CameraAblation([c.name for c in self.robot.cameras]) if config.ablate_cameras else None
            predicted = self._run(reader, instants, cameras, instruction_topic, trajectory, recorded, truth_source,
                                  comparison, skipped_inputs, ablation)
            warnings = list(reader.warnings)
            bytes_read = reader.bytes_read
        metrics = comparison.metrics()
        metrics["bag"] = str(bag)
        metrics["ground_truth"] = truth_source
        metrics["instant_mode"] = config.instants
        metrics["policy_action_space"] = self.policy.action_space
        metrics["rejected_inputs"] = dict(sorted(skipped_inputs.items()))
        metrics["bag_warnings"] = warnings
        metrics["bag_bytes_read"] = bytes_read
        metrics["config"] = {k: v for k, v in asdict(config).items() if k != "assembly"}
        if ablation is not None:
            metrics["camera_ablation"] = ablation.metrics()
        recorded_ee = self._recorded_ee(trajectory)
        result = EvaluationResult(metrics, comparison, predicted, recorded_ee)
        if out_dir is not None:
            result.outputs = write_outputs(result, Path(out_dir), self.robot)
        return result

    def _recorded_chunks(self, reader: BagReader, topic: str, skipped: Counter) -> list[Chunk]:
        if topic not in reader.topics or reader.topics[topic].msgtype != ACTION_CHUNK_TYPE:
            return []
        chunks = []
        for item in reader.messages([topic]):
            try:
                chunks.append(chunk_from_message(item.message))
            except ValueError:
                skipped["action_chunk:invalid"] += 1
        return sorted(chunks, key=lambda c: c.stamp)

    def _truth_source(self, recorded: list[Chunk]) -> str:
        same_space = bool(recorded) and recorded[0].action_space == self.policy.action_space and list(
            recorded[0].action_names) == list(self.policy.action_names)
        if self.config.ground_truth == "chunks":
            if not same_space:
                raise EvaluationError("ground_truth=chunks needs recorded action chunks in the policy's action space "
                                      f"({self.policy.action_space}); the bag has "
                                      f"{recorded[0].action_space if recorded else 'none'}")
            return "chunks"
        if self.config.ground_truth == "joint_states":
            return "joint_states"
        return "chunks" if same_space else "joint_states"

    def _instants(self, reader: BagReader, recorded: list[Chunk], cameras: dict[str, str],
                  trajectory: JointTrajectory) -> list[float]:
        mode = self.config.instants
        if mode == "chunks":
            if not recorded:
                raise EvaluationError("instants=chunks needs recorded action chunks on "
                                      f"{self.config.topic('action_chunk')}; use instants=frames or period")
            instants = [c.stamp for c in recorded]
        elif mode == "frames":
            first_camera = cameras[self.robot.cameras[0].name]
            instants = [header_stamp(item.message) for item in reader.messages([first_camera])]
        else:
            start, end = trajectory.times[0], trajectory.times[-1]
            instants = list(np.arange(start + self.config.assembly.camera_max_age, end, self.config.period))
        instants = sorted(set(instants))
        return instants[:self.config.max_instants] if self.config.max_instants else instants

    def _run(self, reader, instants, cameras, instruction_topic, trajectory, recorded, truth_source,
             comparison, rejections, ablation: CameraAblation | None = None) -> list[Chunk]:
        assembler = ObservationAssembler(self.kinematics, self.config.assembly)
        topics = list(cameras.values()) + [self.config.joint_states_topic, instruction_topic]
        feeder = BagObservationFeeder(reader.messages(topics), assembler, cameras, self.config.joint_states_topic,
                                instruction_topic, self.config.lookahead, rejections)
        recorded_stamps = [c.stamp for c in recorded]
        predicted_chunks = []
        progress = _progress(instants, self.config.progress)
        for instant in progress:
            feeder.advance(instant)
            observation = assembler.assemble(instant, feeder.instruction)
            if isinstance(observation, Unavailable):
                comparison.skip(f"no observation ({observation.reason})")
                continue
            try:
                chunk = self.policy.predict(observation)
            except (PolicyError, ValueError) as error:
                comparison.skip(f"policy error: {_reason(error)}")
                continue
            predicted_chunks.append(chunk)
            if ablation is not None:
                ablation.add(self.policy, observation, chunk)
            self._compare(chunk, observation, trajectory, recorded, recorded_stamps, truth_source, comparison)
        return predicted_chunks

    def _compare(self, chunk: Chunk, observation: Observation, trajectory: JointTrajectory, recorded: list[Chunk],
                 recorded_stamps: list[float], truth_source: str, comparison: ChunkComparison):
        times = chunk.action_times()
        if truth_source == "chunks":
            index = bisect_right(recorded_stamps, chunk.stamp + 1e-9) - 1
            if index < 0:
                comparison.skip("no recorded chunk at or before the instant")
                return
            truth, covered = resample_chunk(recorded[index], times)
        else:
            covered = trajectory.covers(times)
            truth = None
        if not covered.any():
            comparison.skip("ground truth does not cover the horizon")
            return
        comparison.steps_outside_truth += int((~covered).sum())
        times = times[covered]
        if truth is None:
            truth = truth_from_joints(trajectory, times, chunk.action_space, list(chunk.action_names),
                                      observation.ee_poses, self.kinematics)
        else:
            truth = truth[covered]
        comparison.add(chunk, times, chunk.actions[covered], truth, observation.ee_poses)

    def _recorded_ee(self, trajectory: JointTrajectory) -> dict:
        step = max(1, len(trajectory.times) // 2000)  # plots need no more than ~2000 points
        times = trajectory.times[::step]
        positions = {arm.name: [] for arm in self.robot.arms}
        for command in trajectory.positions[::step]:
            for arm, pose in self.kinematics.ee_poses(command).items():
                positions[arm].append(pose[:3, 3])
        return {arm: (times, np.array(values).reshape(-1, 3)) for arm, values in positions.items()}


def _reason(error: Exception, limit: int = 100) -> str:
    """A counting key for an error: its first line with numbers and paths masked, so that the same
    failure at different instants counts under one reason."""
    text = re.sub(r"/\S+", "<path>", str(error).split("\n")[0])
    text = re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", text)
    return text if len(text) <= limit else text[:limit] + "…"


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc="evaluating", unit="obs", dynamic_ncols=True)


# --- outputs ---------------------------------------------------------------------------------------
def write_outputs(result: EvaluationResult, out_dir: Path, robot: RobotConfig) -> dict[str, str]:
    """metrics.json, report.html + plots/*.png, predicted_chunks/ (MCAP bag) under out_dir."""
    from wall_oss_core.evaluation.report import write_html_report, write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"metrics": str(out_dir / "metrics.json")}
    (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2))
    plots = write_plots(result, out_dir / "plots", robot)
    outputs["report"] = str(write_html_report(result.metrics, plots, out_dir / "report.html"))
    if result.predicted_chunks:
        outputs["predicted_bag"] = str(write_chunk_bag(result.predicted_chunks, out_dir / "predicted_chunks",
                                                       robot.base_frame))
    return outputs


def write_chunk_bag(chunks: list[Chunk], path: Path, frame_id: str = "",
                    topic: str = "/wall_oss/action_chunk") -> Path:
    """Chunks as wall_oss/msg/ActionChunk messages in a new MCAP bag (logged at their stamps)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from wall_oss_core.data.bag_types import wall_oss_typestore

    store = wall_oss_typestore()
    ActionChunk = store.types[ACTION_CHUNK_TYPE]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    if path.exists():
        raise FileExistsError(f"{path} exists; choose a new output directory")
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, ACTION_CHUNK_TYPE, typestore=store)
        for chunk_id, chunk in enumerate(chunks):
            nanoseconds = int(round(chunk.stamp * 1e9))
            msg = ActionChunk(header=Header(stamp=Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9),
                                            frame_id=frame_id),
                              chunk_id=chunk_id, action_space=chunk.action_space,
                              action_names=list(chunk.action_names), horizon=chunk.horizon,
                              action_dim=chunk.actions.shape[1], time_step=chunk.dt,
                              first_action_offset=chunk.first_action_offset,
                              data=np.ascontiguousarray(chunk.actions, dtype=np.float64).ravel(),
                              instruction=chunk.instruction, inference_latency=chunk.inference_latency)
            writer.write(connection, nanoseconds, bytes(store.serialize_cdr(msg, ACTION_CHUNK_TYPE)))
    return path


def evaluate_bag(bag: str | Path, policy: Policy, out_dir: str | Path | None = None,
                 robot_config: str | Path | None = None, config: EvaluationConfig = EvaluationConfig()
                 ) -> EvaluationResult:
    """One call: run `policy` over `bag` and (with out_dir) write metrics, report and predicted bag."""
    started = time.perf_counter()
    result = Evaluator(policy, robot_config, config).evaluate(bag, out_dir)
    result.metrics["wall_time_s"] = time.perf_counter() - started
    if out_dir is not None:
        Path(result.outputs["metrics"]).write_text(json.dumps(result.metrics, indent=2))
    return result
