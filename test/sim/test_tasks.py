"""Task progress from the MuJoCo state, on constructed states for every stage of every task, and the
task file's validation and instruction matching."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIG_DIR

from wall_oss_core.robot.config import ConfigError, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import AlohaSim
from wall_oss_core.sim.expert import FINGERTIP, GRIPPER_CLOSED, LEFT_DOWN, RIGHT_DOWN
from wall_oss_core.sim.tasks import ProgressTracker, load_tasks

UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def robot():
    return load_robot_config(CONFIG_DIR / "aloha.yaml")


@pytest.fixture(scope="module")
def kinematics(robot):
    return BimanualKinematics(robot)


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()


def _grasp(kinematics, joints, arm, position, rotation):
    """Joints with `arm`'s TCP at `position` (fingertips FINGERTIP below it) and its gripper closed."""
    target = np.eye(4)
    target[:3, :3], target[:3, 3] = rotation, position
    result = kinematics.solve_ik(arm, target, joints, max_iterations=200)
    assert result.position_error < 1e-3, f"{arm} cannot reach {position}"
    joints = result.positions.copy()
    joints[kinematics.gripper_index(arm)] = GRIPPER_CLOSED
    return joints


def _score(tasks, name, sim, joints, objects):
    sim.set_state(joints, objects)
    return ProgressTracker(tasks[name], tasks.groups, sim).update(sim)


def _cube_states(kinematics, robot, cube: str, at: tuple[float, float]):
    """Joint/object states for each hand-over stage with `cube` (a body) at (x, y)."""
    home = robot.home_positions()
    on_table = np.array([*at, 0.0195])  # 0.5 mm into the table: resting contact as physics settles it
    lifted = on_table + [0.0, 0.0, 0.10]
    above_tcp = [0.0, 0.0, FINGERTIP]   # fingertips at the cube's centre height
    return {
        "nothing": (home, {cube: np.r_[on_table, UPRIGHT]}),
        "touched": (_grasp(kinematics, home, "right", on_table + above_tcp, RIGHT_DOWN), {cube: np.r_[on_table, UPRIGHT]}),
        "lifted": (_grasp(kinematics, home, "right", lifted + above_tcp, RIGHT_DOWN), {cube: np.r_[lifted, UPRIGHT]}),
        "low_lift": (_grasp(kinematics, home, "right", on_table + [0, 0, 0.025] + above_tcp, RIGHT_DOWN),
                     {cube: np.r_[on_table + [0, 0, 0.025], UPRIGHT]}),
        "attempted_transfer": (_grasp(kinematics, home, "left", on_table + above_tcp, LEFT_DOWN),
                               {cube: np.r_[on_table, UPRIGHT]}),
        "transferred": (_grasp(kinematics, home, "left", lifted + above_tcp, LEFT_DOWN), {cube: np.r_[lifted, UPRIGHT]}),
    }


def test_transfer_cube_stages_are_gym_alohas(robot, kinematics, tasks):
    sim = AlohaSim(robot, "transfer_cube")
    states = _cube_states(kinematics, robot, "box", (0.0, 0.5))
    expected = {"nothing": 0, "touched": 25, "lifted": 50, "low_lift": 50, "attempted_transfer": 75, "transferred": 100}
    for stage, progress in expected.items():
        assert _score(tasks, "transfer_cube", sim, *states[stage]) == progress, stage


def test_language_selected_tasks_score_only_the_named_cube(robot, kinematics, tasks):
    sim = AlohaSim(robot, "two_cubes")
    for named, other in (("red", "green"), ("green", "red")):
        body = "box" if named == "red" else "green_box"
        other_body = "green_box" if named == "red" else "box"
        states = _cube_states(kinematics, robot, body, (0.0, 0.5))
        for stage, progress in {"nothing": 0, "touched": 25, "lifted": 50, "attempted_transfer": 75,
                                "transferred": 100}.items():
            joints, objects = states[stage]
            objects = {**objects, other_body: np.r_[0.15, 0.42, 0.02, UPRIGHT]}
            assert _score(tasks, f"hand_over_{named}_cube", sim, joints, objects) == progress, (named, stage)
            assert _score(tasks, f"hand_over_{other}_cube", sim, joints, objects) == 0, (named, stage)
        # off the table but only 2.5 cm up: the height condition keeps it at "touched"
        joints, objects = states["low_lift"]
        objects = {**objects, other_body: np.r_[0.15, 0.42, 0.02, UPRIGHT]}
        assert _score(tasks, f"hand_over_{named}_cube", sim, joints, objects) == 25


def test_insertion_stages_are_gym_alohas(robot, kinematics, tasks):
    sim = AlohaSim(robot, "insertion")
    home = robot.home_positions()
    peg_at, socket_at = np.array([0.15, 0.5, 0.0095]), np.array([-0.15, 0.5, 0.0215])  # resting contact
    on_table = {"peg": np.r_[peg_at, UPRIGHT], "socket": np.r_[socket_at, UPRIGHT]}
    # left fingers on the socket's side walls (4 cm apart), right fingers on the 2 cm peg
    both = _grasp(kinematics, home, "left", socket_at + [-0.03, 0.0, FINGERTIP], LEFT_DOWN)
    both = _grasp(kinematics, both, "right", peg_at + [0.03, 0.0, FINGERTIP], RIGHT_DOWN)
    assert _score(tasks, "insertion", sim, home, on_table) == 0
    assert _score(tasks, "insertion", sim, both, on_table) == 25
    lift = [0.0, 0.0, 0.12]
    held = _grasp(kinematics, home, "left", socket_at + lift + [-0.03, 0.0, FINGERTIP], LEFT_DOWN)
    held = _grasp(kinematics, held, "right", peg_at + lift + [0.03, 0.0, FINGERTIP], RIGHT_DOWN)
    assert _score(tasks, "insertion", sim, held, {"peg": np.r_[peg_at + lift, UPRIGHT],
                                                  "socket": np.r_[socket_at + lift, UPRIGHT]}) == 50
    # in the air, no grippers: the peg 1 cm into the socket resting on its bottom wall, then on the pin
    socket = np.array([0.0, 0.5, 0.2])
    wall = socket + [0.06 + 0.06 - 0.01, 0.0, -0.018 + 0.01 - 0.0005]
    assert _score(tasks, "insertion", sim, home, {"socket": np.r_[socket, UPRIGHT], "peg": np.r_[wall, UPRIGHT]}) == 75
    pin = socket + [0.04 + 0.06 - 0.001, 0.0, 0.0]
    assert _score(tasks, "insertion", sim, home, {"socket": np.r_[socket, UPRIGHT], "peg": np.r_[pin, UPRIGHT]}) == 100


def test_progress_is_the_maximum_over_time_and_stages_are_remembered(robot, kinematics, tasks):
    sim = AlohaSim(robot, "transfer_cube")
    states = _cube_states(kinematics, robot, "box", (0.05, 0.45))
    tracker = ProgressTracker(tasks["transfer_cube"], tasks.groups, sim)
    history = []
    for stage in ("nothing", "touched", "lifted", "nothing"):
        sim.set_state(*states[stage])
        history.append(tracker.update(sim))
    assert history == [0, 25, 50, 50]
    assert tracker.reached == {"touched": True, "lifted": True, "attempted_transfer": False, "transferred": False}
    assert not tracker.success


def test_instructions_select_tasks_whatever_their_case_and_punctuation(tasks):
    assert tasks.for_instruction("Hand over the RED cube.").name == "hand_over_red_cube"
    assert tasks.for_instruction("hand over the   green cube").name == "hand_over_green_cube"
    assert tasks.for_instruction("insert the red peg into the blue socket!").name == "insertion"
    assert tasks.for_instruction("hand over the blue cube") is None
    phrasings = [normalized for task in tasks.tasks.values() for normalized in task.instructions]
    assert len(phrasings) == len(set(phrasings)), "one phrasing must not name two tasks"
    assert all(len(task.instructions) >= 3 for task in tasks.tasks.values())


def test_a_tracker_rejects_geoms_the_scene_does_not_have(robot, tasks):
    with pytest.raises(ValueError, match="not in scene 'transfer_cube'"):
        ProgressTracker(tasks["insertion"], tasks.groups, AlohaSim(robot, "transfer_cube"))


@pytest.mark.parametrize("broken, message", [
    ("tasks: {}", "non-empty 'tasks'"),
    ("tasks: {t: {scene: kitchen, instructions: [x], stages: []}}", "scene must be one of"),
    ("tasks: {t: {scene: transfer_cube, instructions: [], stages: []}}", "at least one non-empty instruction"),
    ("tasks: {t: {scene: transfer_cube, instructions: [x], success: a,"
     " stages: [{name: a, progress: 60}, {name: b, progress: 40}]}}", "increasing progress"),
    ("tasks: {t: {scene: transfer_cube, instructions: [x], success: c, stages: [{name: a, progress: 100}]}}",
     "success 'c' is not one of its stages"),
    ("tasks: {t: {scene: transfer_cube, instructions: [x], success: a,"
     " stages: [{name: a, progress: 100, contact: [red_box]}]}}", "list of \\[a, b\\] pairs"),
    ("tasks: [", "cannot be read"),
])
def test_malformed_task_files_are_rejected_with_the_reason(tmp_path, broken, message):
    path = tmp_path / "tasks.yaml"
    path.write_text(broken)
    with pytest.raises(ConfigError, match=message):
        load_tasks(path)


def test_scorer_follows_the_instruction_and_reports_each_stage_once(robot, kinematics, tasks):
    from wall_oss_core.sim.tasks import TaskScorer

    sim = AlohaSim(robot, "two_cubes", seed=0)
    scorer = TaskScorer(tasks, sim)
    assert scorer.update() == [] and scorer.task is None  # nothing scored before an instruction
    assert scorer.select("insert the red peg into the blue socket") is None  # a task of another scene
    assert scorer.select("Hand over the RED cube.").name == "hand_over_red_cube"
    states = _cube_states(kinematics, robot, "box", (0.0, 0.5))
    joints, objects = states["lifted"]
    sim.set_state(joints, {**objects, "green_box": np.r_[0.15, 0.58, 0.0195, UPRIGHT]})
    assert [s.name for s in scorer.update()] == ["touched", "lifted"]
    assert scorer.update() == []  # already reached: not reported again
    assert scorer.tracker.progress == 50
    scorer.select("give the red cube to the left arm")  # another phrasing of the same task keeps its progress
    assert scorer.tracker.progress == 50
    scorer.select("hand over the green cube")  # a new goal starts from zero; the lifted red cube does not count
    assert scorer.task.name == "hand_over_green_cube" and scorer.update() == [] and scorer.tracker.progress == 0
    with pytest.raises(ValueError, match="runs in scene 'insertion'"):
        scorer.select_task("insertion")
    with pytest.raises(ValueError, match="no task 'stack'"):
        scorer.select_task("stack")
