"""The Wall-OSS policy backend: observation -> state schema -> chunk in the standard EE action space."""
import json

import numpy as np
import pytest
import torch

from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig
from wall_oss_core.model.checkpoint_generator import CAMERAS, generate_checkpoint
from wall_oss_core.policy.action_space import ee_state_vector, wall_oss_names
from wall_oss_core.policy.interface import Observation, PolicyError


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz, cy, sy, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def _pose(position, angles) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = _rotation(*angles)
    pose[:3, 3] = position
    return pose


def _observation(instruction="pick up the red cube", stamp=12.5) -> Observation:
    rng = np.random.default_rng(7)
    return Observation(
        stamp=stamp,
        images={camera: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for camera in CAMERAS},
        joint_positions=np.zeros(14),
        joint_names=tuple(f"j{i}" for i in range(14)),
        ee_poses={"left": _pose([0.4, 0.2, 0.3], (0.1, -0.2, 0.3)), "right": _pose([0.45, -0.2, 0.25], (-0.3, 0.1, 0.0))},
        grippers={"left": 0.02, "right": 0.035},
        instruction=instruction,
    )


@pytest.fixture(scope="module", params=["wall_oss_05", "wall_oss_flow"])
def checkpoint(request, tmp_path_factory):
    return request.param, generate_checkpoint(tmp_path_factory.mktemp(request.param), "tiny", request.param, seed=0)


def test_predict_returns_the_pipeline_chunk_in_the_standard_space(checkpoint):
    generation, directory = checkpoint
    policy = WallOssPolicy(WallOssPolicyConfig(str(directory), seed=5))
    observation = _observation()
    chunk = policy.predict(observation)
    assert chunk.actions.shape == (32, 26) and chunk.actions.dtype == np.float64
    assert chunk.action_space == "wall_oss_ee_relative"
    assert chunk.action_names == wall_oss_names(relative=True) == policy.action_names
    assert chunk.stamp == observation.stamp and chunk.dt == pytest.approx(1 / 32)
    assert chunk.instruction == observation.instruction and chunk.inference_latency > 0

    # The state fed to the model is the Wall-OSS schema of the observation's EE poses and grippers.
    width = 26 if generation == "wall_oss_05" else 20
    expected_state = ee_state_vector(observation.ee_poses, observation.grippers)[:width]
    assert np.array_equal(policy.state_vector(observation), expected_state)
    assert np.allclose(expected_state[3:9], observation.ee_poses["left"][:2, :3].reshape(-1))
    images = {camera: observation.images[camera][None] for camera in CAMERAS}
    generator = torch.Generator().manual_seed(5)
    actions, _ = policy.pipeline(images, expected_state[None], [observation.instruction], generator=generator)
    assert np.allclose(chunk.actions[:, :width], actions[0].double().numpy(), atol=1e-6)
    assert np.all(chunk.actions[:, width:] == 0)


def test_seeded_policies_repeat_their_chunk_sequence(checkpoint):
    _, directory = checkpoint
    first, second = (WallOssPolicy(WallOssPolicyConfig(str(directory), seed=11)) for _ in range(2))
    observation = _observation()
    a1, a2 = first.predict(observation), first.predict(observation)
    b1 = second.predict(observation)
    assert np.array_equal(a1.actions, b1.actions)
    assert not np.array_equal(a1.actions, a2.actions)


def test_bad_observations_raise_policy_errors(checkpoint):
    _, directory = checkpoint
    policy = WallOssPolicy(WallOssPolicyConfig(str(directory), seed=0))
    observation = _observation(instruction="  ")
    with pytest.raises(PolicyError, match="no instruction"):
        policy.predict(observation)
    observation = _observation()
    del observation.images["left_wrist_view"]
    with pytest.raises(PolicyError, match="missing camera"):
        policy.predict(observation)
    observation = _observation()
    observation.ee_poses["right"] = np.full((4, 4), np.nan)
    with pytest.raises(PolicyError, match="right arm"):
        policy.predict(observation)
    observation = _observation()
    del observation.grippers["left"]
    with pytest.raises(PolicyError, match="gripper of the left arm"):
        policy.predict(observation)
    observation = _observation()
    observation.images["face_view"] = observation.images["face_view"][..., :2]
    with pytest.raises(PolicyError, match="HxWx3"):
        policy.predict(observation)


def test_bad_checkpoints_raise_policy_errors(tmp_path):
    with pytest.raises(PolicyError, match="cannot load"):
        WallOssPolicy(WallOssPolicyConfig(str(tmp_path / "missing")))
    directory = generate_checkpoint(tmp_path / "other_schema", "tiny", "wall_oss_05", seed=0)
    config = json.loads((directory / "config.json").read_text())
    config["action_names"] = [f"joint_{i}" for i in range(26)]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(PolicyError, match="end-effector schema"):
        WallOssPolicy(WallOssPolicyConfig(str(directory)))
    with pytest.raises(PolicyError, match="action_dt"):
        WallOssPolicy(WallOssPolicyConfig(str(directory), action_dt=0.0))
