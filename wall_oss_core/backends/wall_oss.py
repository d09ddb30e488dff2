"""The Wall-OSS model as a `Policy` backend for the policy node.

Observation -> Wall-OSS state schema (per arm absolute EE xyz, 6D rotation = top two rows of R,
gripper; left then right; 0.5 adds 6 unused zero dims) -> pipeline -> unnormalized chunk in the
Wall-OSS standard relative EE action space (26 names; flow's 20 dims are its first 20, the tail
is published as zeros). A checkpoint trained on a joint-position dataset (state and action named by
the same robot joints, as `wall-oss collect` on ALOHA writes them) reads those joints and emits
`joint_position` chunks instead. A trained checkpoint records its dataset's `dataset_fps`: its
actions are one frame apart, so the chunk's time step is 1/fps. Every failure is raised as
`PolicyError` with the reason.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wall_oss_core.policy.action_space import ARMS, WALL_OSS_DIM, ee_state_vector, wall_oss_names
from wall_oss_core.policy.interface import Chunk, Observation, PolicyError
from wall_oss_core.policy.observation import InputRejected, select_joints

ACTION_SPACE = "wall_oss_ee_relative"
JOINT_ACTION_SPACE = "joint_position"
FLOW_DIM = 20
# Flow checkpoints name their schema with dof/agent_pos configs; this is the standard EE layout.
_FLOW_SCHEMA = [f"{arm}_{part}_{index}" for arm in ARMS
                for part, width in (("ee_pos", 3), ("ee_rot6d", 6), ("gripper", 1)) for index in range(width)]


@dataclass(frozen=True)
class WallOssPolicyConfig:
    """How to run a checkpoint as the node's policy."""

    checkpoint_dir: str
    dtype: str = "float32"
    device: str = "cpu"
    # seconds between actions for checkpoints that do not record their dataset_fps (a trained
    # checkpoint's 1/fps always wins: its actions are one dataset frame apart)
    action_dt: float = 1.0 / 32.0
    seed: int | None = None  # flow-noise seed (a reproducible sequence of chunks); None: fresh noise
    # initial flow noise × this: 0 integrates the flow from the prior's mean (one deterministic, smooth chunk per
    # observation, as ACT samples its CVAE at the prior mean); None: the checkpoint's `inference_noise_scale`
    # when it records one, else 1 (the sampler as trained)
    noise_scale: float | None = None
    num_threads: int | None = None  # torch CPU threads for inference; None: torch's default
    camera_names: tuple[str, ...] | None = None  # prompt camera order when the checkpoint names none
    robot: str | None = None  # statistics to use when an author checkpoint holds several robots


def _schema_matches(names: list[str], expected: list[str], generic_prefix: str) -> bool:
    """Stored names must equal the robot's schema; unnamed (generic) dimensions are taken positionally."""
    generic = [f"{generic_prefix}_{index}" for index in range(len(expected))]
    return names in (expected, generic)


class WallOssPolicy:
    """Runs a local Wall-OSS checkpoint; `predict` is called on the node's worker thread."""

    def __init__(self, config: WallOssPolicyConfig):
        from wall_oss_core.model.pipeline import WallOssPipeline

        if not config.action_dt > 0:
            raise PolicyError(f"action_dt must be positive, got {config.action_dt}")
        if config.num_threads is not None:
            torch.set_num_threads(int(config.num_threads))
        self.config = config
        try:
            self.pipeline = WallOssPipeline.from_pretrained(
                Path(config.checkpoint_dir), dtype=config.dtype, device=config.device,
                camera_names=config.camera_names, robot=config.robot,
            )
        except Exception as error:  # any loading failure is reported to the node, never fatal
            raise PolicyError(f"cannot load Wall-OSS checkpoint {config.checkpoint_dir}: {error}") from error
        spec = self.pipeline.spec
        self.generation = spec.generation
        self._state_width = len(spec.state_names)
        fps = self.pipeline.config.policy_fields.get("dataset_fps")
        self.action_dt = 1.0 / float(fps) if fps else config.action_dt
        self.noise_scale = float(config.noise_scale if config.noise_scale is not None
                                 else self.pipeline.config.policy_fields.get("inference_noise_scale", 1.0))
        if not self.noise_scale >= 0:
            raise PolicyError(f"noise_scale must be >= 0, got {self.noise_scale}")
        # joint space: state and actions named by the same robot joints (the EE schema names its state
        # absolute and its actions relative, generic names are state_i / action_i)
        self.joint_space = spec.state_names == spec.action_names
        if self.joint_space:
            self.action_space, self.action_names = JOINT_ACTION_SPACE, list(spec.action_names)
        else:
            self._check_schema()
            self.action_space, self.action_names = ACTION_SPACE, wall_oss_names(relative=True)
        self.camera_names = self.pipeline.spec.camera_names
        self._generator = None
        if config.seed is not None:
            self._generator = torch.Generator(device=self.pipeline.device).manual_seed(config.seed)
        self._lock = threading.Lock()

    def _check_schema(self) -> None:
        spec = self.pipeline.spec
        if self.generation == "wall_oss_05":
            state_ok = _schema_matches(spec.state_names, wall_oss_names(relative=False), "state")
            action_ok = _schema_matches(spec.action_names, wall_oss_names(relative=True), "action")
        else:
            state_ok = spec.state_names in (wall_oss_names(relative=False)[:FLOW_DIM], _FLOW_SCHEMA)
            action_ok = spec.action_names in (wall_oss_names(relative=True)[:FLOW_DIM], _FLOW_SCHEMA)
        if not (state_ok and action_ok):
            raise PolicyError(
                f"checkpoint {self.config.checkpoint_dir} does not use the Wall-OSS end-effector schema this robot "
                f"speaks: state {spec.state_names}, action {spec.action_names}"
            )

    def state_vector(self, observation: Observation) -> np.ndarray:
        """The checkpoint's raw state for this observation (26 or, for flow, the first 20 dims; the named
        joints for a joint-space checkpoint)."""
        if self.joint_space:
            try:
                return select_joints(observation.joint_names, observation.joint_positions,
                                     tuple(self.pipeline.spec.state_names))
            except InputRejected as error:
                raise PolicyError(f"joint-space checkpoint: {error}") from error
        for arm in ARMS:
            pose = np.asarray(observation.ee_poses.get(arm) if observation.ee_poses else None, dtype=float)
            if pose.shape != (4, 4) or not np.isfinite(pose).all():
                raise PolicyError(f"end-effector pose of the {arm} arm must be a finite 4x4 matrix, got {pose!r}")
            gripper = observation.grippers.get(arm) if observation.grippers else None
            if gripper is None or not np.isfinite(gripper):
                raise PolicyError(f"gripper of the {arm} arm is missing or not finite: {gripper!r}")
        return ee_state_vector(observation.ee_poses, observation.grippers)[: self._state_width]

    def predict(self, observation: Observation) -> Chunk:
        if not isinstance(observation.instruction, str) or not observation.instruction.strip():
            raise PolicyError("no instruction: the policy needs a task to act on")
        missing = [camera for camera in self.camera_names if camera not in observation.images]
        if missing:
            raise PolicyError(f"missing camera image(s) {missing}; the checkpoint needs {list(self.camera_names)}")
        state = self.state_vector(observation)
        images = {camera: np.asarray(observation.images[camera])[None] for camera in self.camera_names}
        started = time.perf_counter()
        with self._lock:
            try:
                noise = None
                if self.noise_scale != 1.0:
                    spec = self.pipeline.spec
                    noise = self.noise_scale * torch.randn(1, spec.chunk_size, spec.model_action_dim,
                                                           generator=self._generator)
                actions, _ = self.pipeline(images, state[None], [observation.instruction], noise=noise,
                                           generator=self._generator)
            except (ValueError, RuntimeError) as error:
                raise PolicyError(f"Wall-OSS inference failed: {error}") from error
        latency = time.perf_counter() - started
        chunk = np.zeros((actions.shape[1], len(self.action_names) if self.joint_space else WALL_OSS_DIM))
        chunk[:, : actions.shape[2]] = actions[0].double().numpy()
        if not np.isfinite(chunk).all():
            raise PolicyError("Wall-OSS produced non-finite actions")
        return Chunk(
            actions=chunk,
            dt=self.action_dt,
            action_space=self.action_space,
            action_names=list(self.action_names),
            stamp=observation.stamp,
            instruction=observation.instruction,
            inference_latency=latency,
            extras={"generation": self.generation, "checkpoint": str(self.config.checkpoint_dir)},
        )
