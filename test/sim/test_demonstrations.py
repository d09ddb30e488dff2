"""Demonstrations and ROS-free evaluation in the ALOHA sim: `wall-oss collect` records expert episodes as bags
with the graph's topics and exports one LeRobot dataset the trainer reads; a checkpoint trained on it loads
as a joint-space policy that acts through the executor and supervisor; the evaluation's first-grasp record
names the object the expert picked; the built-in checkpoint loads strictly and acts."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CONFIG_DIR

from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig
from wall_oss_core.control.executor import TOO_FAST, ChunkExecutor, ExecutorConfig, Rejected
from wall_oss_core.data.bag_reader import BagReader
from wall_oss_core.model.loading import load_model
from wall_oss_core.paths import builtin_checkpoint
from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import AlohaSim, RenderSettings
from wall_oss_core.sim.episode import observe
from wall_oss_core.sim.evaluate import SimEvalConfig, checkpoint_image_size, evaluate, expert_factory
from wall_oss_core.sim.tasks import load_tasks
from wall_oss_core.training.dataset import TrainingDataset
from wall_oss_core.training.trainer import TrainConfig, Trainer
from wall_oss_ros.cli import main

pytestmark = pytest.mark.timeout(300)
TASKS = ("transfer_cube", "hand_over_green_cube")


@pytest.fixture(scope="module")
def robot():
    return load_robot_config(CONFIG_DIR / "aloha.yaml")


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Two 1.5 s expert episodes (one per task) through the CLI, exported whatever their progress."""
    out = tmp_path_factory.mktemp("collect") / "demos"
    argv = ["collect", "--episodes", "1", "--out", str(out), "--duration", "1.5", "--image-size", "32",
            "--min-progress", "0", "--seed", "4"]
    for task in TASKS:
        argv += ["--task", task]
    assert main(argv) == 0
    return out


def test_collect_records_graph_topics_and_exports_one_dataset(collected, robot, tasks):
    episodes = json.loads((collected / "episodes.json").read_text())
    assert [(e["task"], e["seed"]) for e in episodes] == [("transfer_cube", 4), ("hand_over_green_cube", 4)]
    with BagReader(collected / "bags" / "transfer_cube_0000") as reader:
        expected = {"/joint_states", "/wall_oss/instruction", "/wall_oss/action_chunk"}
        expected |= {c.topic for c in robot.cameras}
        expected |= {f"/{a.controller}/commands" for a in robot.arms} | {f"/{a.gripper_controller}/commands"
                                                                          for a in robot.arms}
        assert expected <= set(reader.topics)
        chunks = [m.message for m in reader.messages(["/wall_oss/action_chunk"])]
        assert len(chunks) == 3 and chunks[0].action_space == "joint_position"  # every 0.5 s
        assert reader.topics["/joint_states"].message_count == 150  # every 10 ms control tick

    data = TrainingDataset(collected / "dataset", chunk_size=8)
    assert sorted(set(data.episode_index)) == [0, 1]
    assert set(data.tasks) == {tasks[t].instructions[0] for t in TASKS}
    assert data.state_names == list(robot.command_joints) == data.action_names
    assert data.cameras == tuple(c.name for c in robot.cameras)
    assert data.fps == 10.0 and data.images["face_view"].shape[1:] == (32, 32, 3)
    assert 14 <= np.sum(data.episode_index == 0) <= 15
    # the exported action is the command the supervisor sent: it starts at the home pose the arm holds
    first = data.actions[0, 0]
    assert np.allclose(first, data.states[0], atol=0.05)


def test_collect_train_load_act_end_to_end(collected, robot, tasks, tmp_path):
    trainer = Trainer(TrainConfig(dataset=str(collected / "dataset"), out=str(tmp_path / "run"), size="tiny",
                                  steps=2, batch_size=2, lr=1e-3, image_size=28, progress=False))
    trainer.run()
    checkpoint = trainer.checkpoint
    assert checkpoint_image_size(checkpoint) == 32
    policy = WallOssPolicy(WallOssPolicyConfig(str(checkpoint), seed=0))
    assert policy.action_space == "joint_position" and policy.action_names == list(robot.command_joints)
    assert policy.action_dt == pytest.approx(0.1)  # the dataset's 10 fps, not the config default
    # its chunks pass the executor's checks (names, dimensions, timing); a 2-step model's actions may
    # still be refused as too fast for the arm
    sim = AlohaSim(robot, "two_cubes", seed=1, render=RenderSettings(32, 32))
    try:
        kinematics = BimanualKinematics(robot)
        chunk = policy.predict(observe(sim, kinematics, "hand over the red cube", tuple(policy.camera_names)))
        executor = ChunkExecutor(kinematics, ExecutorConfig())
        executor.on_joint_state(sim.time, sim.joint_positions())
        prepared = executor.prepare(chunk, sim.time)
        assert not isinstance(prepared, Rejected) or prepared.reason == TOO_FAST
        # noise_scale 0 integrates the flow from the prior's mean: the same chunk whatever the noise seed
        observation = observe(sim, kinematics, "hand over the red cube", tuple(policy.camera_names))
        chunks = [WallOssPolicy(WallOssPolicyConfig(str(checkpoint), seed=seed, noise_scale=scale)).predict(
            observation).actions for scale in (0.0, 1.0) for seed in (1, 2)]
        assert np.allclose(chunks[0], chunks[1]) and not np.allclose(chunks[2], chunks[3])
    finally:
        sim.close()
    metrics = evaluate(lambda sim, kinematics: policy, tuple(policy.camera_names), robot, tasks,
                       SimEvalConfig(tasks=("hand_over_red_cube",), episodes=1, duration=1.0, image_size=32),
                       tmp_path / "eval", progress=False)
    episode = metrics["episode_results"][0]
    assert episode["error"] is None and len(episode["chunk_latency_s"]) == 2
    assert (tmp_path / "eval" / "report.html").is_file()


def test_expert_first_grasp_is_the_named_cube(robot, tasks):
    metrics = evaluate(expert_factory(tasks), (), robot, tasks,
                       SimEvalConfig(tasks=("hand_over_green_cube",), episodes=1, duration=5.0), progress=False)
    values = metrics["tasks"]["hand_over_green_cube"]
    assert values["first_grasp"] == {"named_object": "green_box", "on_named": 1, "on_other": 0, "none": 0,
                                     "named_rate": 1.0}
    assert values["progress_mean"] == 50  # lifted by t = 5 s


def test_builtin_checkpoint_loads_strictly_and_acts(robot, tasks):
    directory = builtin_checkpoint()
    load_model(directory)  # strict: every tensor of the checkpoint matches the architecture
    policy = WallOssPolicy(WallOssPolicyConfig(str(directory), seed=0))
    assert policy.action_space == "joint_position"
    metrics = evaluate(lambda sim, kinematics: policy, tuple(policy.camera_names), robot, tasks,
                       SimEvalConfig(tasks=("hand_over_red_cube",), episodes=1, duration=1.0,
                                     image_size=checkpoint_image_size(directory)), progress=False)
    episode = metrics["episode_results"][0]
    assert episode["error"] is None and len(episode["chunk_latency_s"]) == 2
    assert episode["rejections"] == {"executor_rejected_chunks": 0}
