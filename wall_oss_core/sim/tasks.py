"""Simulated tasks (config/tasks.yaml) and their task-progress score from the MuJoCo state.

Task progress is the Wall-OSS report's yardstick (0–100 per episode with stage credit). A task's
stages are conditions on contacts and heights (gym-aloha's reward stages for its two tasks); at each
instant the highest stage whose conditions all hold gives the current progress, and an episode scores
the maximum over time, as gym-aloha's episodes score their maximum reward. Which task an episode
runs is chosen by its instruction, so a new instruction mid-episode selects a new goal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wall_oss_core.paths import share_file
from wall_oss_core.robot.config import ConfigError
from wall_oss_core.sim.aloha import SCENES, AlohaSim


@dataclass(frozen=True)
class Stage:
    name: str
    progress: float
    contact: tuple[tuple[str, str], ...] = ()
    no_contact: tuple[tuple[str, str], ...] = ()
    above: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Task:
    name: str
    scene: str
    instructions: tuple[str, ...]
    stages: tuple[Stage, ...]
    success: str
    expert: dict = field(default_factory=dict)


def normalize_instruction(text: str) -> str:
    """Lower case, words only: "Hand over the red cube." and "hand over the  red cube" are one instruction."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass(frozen=True)
class TaskSet:
    tasks: dict[str, Task]
    groups: dict[str, tuple[str, ...]]
    source: Path = Path()

    def __getitem__(self, name: str) -> Task:
        if name not in self.tasks:
            raise KeyError(f"no task {name!r}; tasks are {sorted(self.tasks)}")
        return self.tasks[name]

    def for_instruction(self, instruction: str) -> Task | None:
        """The task one of whose phrasings the instruction is (after normalization), else None."""
        wanted = normalize_instruction(instruction)
        for task in self.tasks.values():
            if wanted in (normalize_instruction(i) for i in task.instructions):
                return task
        return None


def _pairs(value, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise ConfigError(f"{where}: expected a list of [a, b] pairs, got {value!r}")
    return tuple((str(a), str(b)) for a, b in value)


def load_tasks(path: str | Path | None = None) -> TaskSet:
    """Parse and validate a task file (default: the package's config/tasks.yaml)."""
    path = Path(path) if path is not None else share_file("config/tasks.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"task file {path} cannot be read: {error}") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict) or not raw["tasks"]:
        raise ConfigError(f"{path}: needs a non-empty 'tasks' mapping")
    groups = {name: tuple(geoms) for name, geoms in (raw.get("groups") or {}).items()}
    tasks = {}
    for name, spec in raw["tasks"].items():
        where = f"{path}: tasks.{name}"
        if spec.get("scene") not in SCENES:
            raise ConfigError(f"{where}: scene must be one of {sorted(SCENES)}, got {spec.get('scene')!r}")
        instructions = tuple(spec.get("instructions") or ())
        if not instructions or not all(isinstance(i, str) and i.strip() for i in instructions):
            raise ConfigError(f"{where}: needs at least one non-empty instruction")
        stages = []
        for index, stage in enumerate(spec.get("stages") or ()):
            stage_where = f"{where}.stages[{index}]"
            if "name" not in stage or "progress" not in stage:
                raise ConfigError(f"{stage_where}: needs a name and a progress")
            above = stage.get("above") or {}
            stages.append(Stage(str(stage["name"]), float(stage["progress"]),
                                _pairs(stage.get("contact", []), stage_where + ".contact"),
                                _pairs(stage.get("no_contact", []), stage_where + ".no_contact"),
                                tuple((str(b), float(z)) for b, z in above.items())))
        progress = [s.progress for s in stages]
        if not stages or progress != sorted(progress) or progress[-1] != 100 or progress[0] <= 0:
            raise ConfigError(f"{where}: stages need increasing progress in (0, 100], the last one 100")
        success = spec.get("success")
        if success not in [s.name for s in stages]:
            raise ConfigError(f"{where}: success {success!r} is not one of its stages")
        tasks[name] = Task(name, spec["scene"], instructions, tuple(stages), success, dict(spec.get("expert") or {}))
    return TaskSet(tasks, groups, path)


class ProgressTracker:
    """Task progress of one episode, updated from the sim after each control step."""

    def __init__(self, task: Task, groups: dict[str, tuple[str, ...]], sim: AlohaSim):
        self.task = task
        geoms = set(sim.geom_names)
        bodies = {sim.model.body(i).name for i in range(sim.model.nbody)}
        self._members = {}
        for stage in task.stages:
            for a, b in stage.contact + stage.no_contact:
                for member in (a, b):
                    self._members[member] = frozenset(groups.get(member, (member,)))
                    missing = self._members[member] - geoms
                    if missing:
                        raise ValueError(f"task {task.name}: geoms {sorted(missing)} are not in scene {sim.scene!r}")
            for body, _ in stage.above:
                if body not in bodies:
                    raise ValueError(f"task {task.name}: body {body!r} is not in scene {sim.scene!r}")
        self.progress = 0.0
        self.reached = {stage.name: False for stage in task.stages}

    def _touch(self, contacts: set[frozenset[str]], a: str, b: str) -> bool:
        return any(frozenset((x, y)) in contacts for x in self._members[a] for y in self._members[b])

    def holds(self, stage: Stage, sim: AlohaSim, contacts: set[frozenset[str]]) -> bool:
        return (all(self._touch(contacts, a, b) for a, b in stage.contact)
                and not any(self._touch(contacts, a, b) for a, b in stage.no_contact)
                and all(sim.body_position(body)[2] >= z for body, z in stage.above))

    def update(self, sim: AlohaSim) -> float:
        """Score this instant; returns the episode's progress so far (max over time)."""
        contacts = sim.contacts()
        now = 0.0
        for stage in self.task.stages:
            if self.holds(stage, sim, contacts):
                self.reached[stage.name] = True
                now = stage.progress
        self.progress = max(self.progress, now)
        return self.progress

    @property
    def success(self) -> bool:
        return self.reached[self.task.success]


class TaskScorer:
    """Task progress of a running scene whose task the instruction picks (the sim node's scoring).

    `select` switches to the task an instruction names, if it is a task of this scene (a new goal
    starts from zero progress); an instruction for another scene or no task leaves nothing scored.
    `update` scores the current instant and returns the stages reached for the first time."""

    def __init__(self, tasks: TaskSet, sim: AlohaSim):
        self.tasks, self.sim = tasks, sim
        self.tracker: ProgressTracker | None = None

    @property
    def task(self) -> Task | None:
        return self.tracker.task if self.tracker is not None else None

    def select_task(self, name: str) -> Task:
        if name not in self.tasks.tasks:
            raise ValueError(f"no task {name!r}; tasks are {sorted(self.tasks.tasks)}")
        task = self.tasks[name]
        if task.scene != self.sim.scene:
            raise ValueError(f"task {name!r} runs in scene {task.scene!r}, the sim holds scene {self.sim.scene!r}")
        self.tracker = ProgressTracker(task, self.tasks.groups, self.sim)
        return task

    def select(self, instruction: str) -> Task | None:
        """Score the task the instruction names from now on; None (nothing scored) when it names no task
        of this scene. The same task again keeps its progress."""
        task = self.tasks.for_instruction(instruction)
        if task is None or task.scene != self.sim.scene:
            self.tracker = None
            return None
        if task is not self.task:
            self.select_task(task.name)
        return task

    def update(self) -> list[Stage]:
        if self.tracker is None:
            return []
        before = dict(self.tracker.reached)
        self.tracker.update(self.sim)
        return [stage for stage in self.task.stages if self.tracker.reached[stage.name] and not before[stage.name]]
