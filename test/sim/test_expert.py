"""The scripted expert in physics: it does the tasks (task progress from the MuJoCo state) with its
chunks going through the chunk executor and the safety supervisor, follows the instruction (also when it
changes mid-episode), and speaks the policy interface's chunks."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIG_DIR

from wall_oss_core.policy.interface import Policy, PolicyError
from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import AlohaSim
from wall_oss_core.sim.episode import EpisodeRunner, observe
from wall_oss_core.sim.expert import ScriptedExpert
from wall_oss_core.sim.tasks import ProgressTracker, load_tasks

EPISODE = 9.5  # [s] the hand-over plan's length


@pytest.fixture(scope="module")
def robot():
    return load_robot_config(CONFIG_DIR / "aloha.yaml")


@pytest.fixture(scope="module")
def kinematics(robot):
    return BimanualKinematics(robot)


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()


@pytest.mark.parametrize("seed", [0, 7])
def test_expert_transfers_the_cube_in_physics(robot, kinematics, tasks, seed):
    task = tasks["transfer_cube"]
    sim = AlohaSim(robot, task.scene, seed=seed)
    expert = ScriptedExpert(kinematics, tasks, sim.object_poses)
    assert isinstance(expert, Policy)
    tracker = ProgressTracker(task, tasks.groups, sim)
    result = EpisodeRunner(sim, expert, kinematics).run(tracker, task.instructions[1], EPISODE)
    assert result.progress >= 95 and result.success, result
    assert result.rejected_chunks == 0
    # the supervisor never stops the expert and only shapes its command by jerk rounding (sub-millimetre / mrad)
    assert result.held_ticks == 0 and result.max_correction < 2e-3, result
    assert 0 < result.time_to_success < EPISODE
    # the cube stays in the left gripper, up in the air, after the right one let go
    cube = sim.object_poses()["box"][:3, 3]
    assert cube[2] > 0.1 and np.linalg.norm(cube - kinematics.ee_poses(sim.joint_positions())["left"][:3, 3]) < 0.05


def test_expert_inserts_the_peg_in_physics(robot, kinematics, tasks):
    task = tasks["insertion"]
    sim = AlohaSim(robot, task.scene, seed=3)
    tracker = ProgressTracker(task, tasks.groups, sim)
    result = EpisodeRunner(sim, ScriptedExpert(kinematics, tasks, sim.object_poses), kinematics).run(
        tracker, task.instructions[0], 8.0)
    assert result.progress >= 95 and result.success, result
    assert result.reached["grasped_both"]
    # the peg ends inside the socket's mouth, lined up with it
    peg, socket = sim.object_poses()["peg"][:3, 3], sim.object_poses()["socket"][:3, 3]
    assert 0.09 < peg[0] - socket[0] < 0.12 and np.linalg.norm((peg - socket)[1:]) < 0.008


def test_the_instruction_chooses_the_cube_and_a_new_one_changes_the_goal(robot, kinematics, tasks):
    sim = AlohaSim(robot, "two_cubes", seed=4)
    expert = ScriptedExpert(kinematics, tasks, sim.object_poses)
    red = ProgressTracker(tasks["hand_over_red_cube"], tasks.groups, sim)
    green = ProgressTracker(tasks["hand_over_green_cube"], tasks.groups, sim)
    both = _Both(red, green)
    runner = EpisodeRunner(sim, expert, kinematics)
    runner.run(both, "hand over the green cube", 1.0)
    assert expert.task.name == "hand_over_green_cube"
    runner.run(both, "Give the red cube to the left arm.", EPISODE)
    assert expert.task.name == "hand_over_red_cube"
    assert red.progress >= 95 and red.success
    assert green.progress == 0


class _Both:
    """Scores two tasks on one episode (a run takes one tracker)."""

    def __init__(self, first: ProgressTracker, second: ProgressTracker):
        self.first, self.second = first, second

    def update(self, sim):
        self.second.update(sim)
        return self.first.update(sim)

    progress = property(lambda self: self.first.progress)
    success = property(lambda self: self.first.success)
    reached = property(lambda self: self.first.reached)


def test_chunks_are_joint_targets_in_command_order_continuing_one_plan(robot, kinematics, tasks):
    sim = AlohaSim(robot, "transfer_cube", seed=1)
    expert = ScriptedExpert(kinematics, tasks, sim.object_poses, horizon=20, dt=0.05)
    instruction = tasks["transfer_cube"].instructions[0]
    first = expert.predict(observe(sim, kinematics, instruction))
    assert first.actions.shape == (20, 14) and first.action_space == "joint_position"
    assert first.action_names == list(robot.command_joints) and first.dt == 0.05
    np.testing.assert_allclose(first.actions[0], sim.joint_positions(), atol=1e-3)  # starts where the robot is
    steps = np.abs(np.diff(first.actions, axis=0)) / first.dt
    assert np.all(steps <= kinematics.limits.velocity), "the plan moves no joint faster than its limit"
    sim.step(0.5)  # the robot did not move (no commands), the plan does not restart
    later = expert.predict(observe(sim, kinematics, instruction))
    assert later.stamp == pytest.approx(first.stamp + 0.5)
    np.testing.assert_allclose(later.actions[:10], first.actions[10:])
    with pytest.raises(PolicyError, match="names no known task"):
        expert.predict(observe(sim, kinematics, "dance"))
    with_images = observe(sim, kinematics, instruction, cameras=("face_view", "left_wrist_view"))
    assert set(with_images.images) == {"face_view", "left_wrist_view"}
    assert with_images.images["face_view"].shape == (224, 224, 3)
    np.testing.assert_allclose(with_images.ee_poses["left"], kinematics.ee_poses(sim.joint_positions())["left"])


@pytest.mark.parametrize("task_name", ["transfer_cube", "insertion", "hand_over_red_cube", "hand_over_green_cube"])
def test_plans_stay_within_the_joint_limits_and_workspaces_the_supervisor_enforces(robot, kinematics, tasks,
                                                                                   task_name):
    task = tasks[task_name]
    limits = kinematics.limits
    for seed in (0, 1, 2):
        sim = AlohaSim(robot, task.scene, seed=seed)
        expert = ScriptedExpert(kinematics, tasks, sim.object_poses)
        plan = expert.plan(task, sim.joint_positions())
        velocity = np.diff(plan, axis=0) / expert.dt
        acceleration = np.diff(velocity, axis=0) / expert.dt
        assert np.all(plan >= limits.lower - 1e-9) and np.all(plan <= limits.upper + 1e-9)
        assert np.all(np.abs(velocity) <= limits.velocity)
        # headroom for the executor's stitching and the supervisor's per-tick budget
        assert np.all(np.abs(acceleration) <= 0.6 * limits.acceleration)
        for q in plan[::5]:
            for arm, pose in kinematics.ee_poses(q).items():
                assert robot.arm(arm).workspace.contains(pose[:3, 3]), (task_name, seed, arm, pose[:3, 3])


def test_a_task_without_a_known_skill_is_reported(robot, kinematics, tasks):
    sim = AlohaSim(robot, "transfer_cube")
    task = tasks["transfer_cube"]
    broken = type(task)(**{**task.__dict__, "expert": {"skill": "juggle"}})
    with pytest.raises(PolicyError, match="no skill for task 'transfer_cube'"):
        ScriptedExpert(kinematics, tasks, sim.object_poses).plan(broken, sim.joint_positions())
