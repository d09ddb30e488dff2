"""Scripted expert for the simulated tasks: solves them from privileged object poses, as a policy backend.

Like the ACT paper's scripted policies, each skill is a few tool-centre-point waypoints per arm (pose
and gripper opening at a time) placed relative to the objects where the episode found them. The expert
turns every waypoint into joints with the URDF's IK, moves between them on eased joint-space lines
sampled at the chunk period, and serves that joint plan as `joint_position` chunks through the `Policy` interface, so its
demonstrations run through the same executor and safety supervisor as a model's chunks.

The instruction picks the task (config/tasks.yaml); a new instruction re-plans from where the robot
and the objects are at that moment.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wall_oss_core.policy.interface import Chunk, Observation, PolicyError
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.tasks import Task, TaskSet

# Gripper commands 1 mm inside the finger slide's range (0.021–0.057 m), so that the executor's
# spline never asks the supervisor for a position beyond the limit.
GRIPPER_OPEN = 0.056
GRIPPER_CLOSED = 0.022  # the fingers stop on the object and squeeze it
FINGERTIP = 0.024       # [m] from the TCP to the fingertips along the gripper's x axis

# Gripper orientations in the world (columns: the gripper's x = pointing, y = closing, z axes).
RIGHT_DOWN = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]).T
RIGHT_TOWARDS_LEFT = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]).T
LEFT_DOWN = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).T
LEFT_TOWARDS_RIGHT_ROLLED = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]).T  # fingers close vertically


@dataclass(frozen=True)
class Waypoint:
    """Where one arm's TCP is at time t [s from plan start], and its gripper opening [m]."""

    t: float
    position: np.ndarray
    rotation: np.ndarray
    gripper: float


def _pick(start: Waypoint, grasp: np.ndarray, rotation: np.ndarray) -> list[Waypoint]:
    """From the start pose down onto `grasp` (a TCP position) from 10 cm above, close, lift 12 cm (t = 3.8 s)."""
    return [
        start,
        Waypoint(1.5, grasp + [0.0, 0.0, 0.10], rotation, GRIPPER_OPEN),
        Waypoint(2.3, grasp, rotation, GRIPPER_OPEN),
        Waypoint(2.5, grasp, rotation, GRIPPER_OPEN),
        Waypoint(3.0, grasp, rotation, GRIPPER_CLOSED),
        Waypoint(3.8, grasp + [0.0, 0.0, 0.12], rotation, GRIPPER_CLOSED),
    ]


def _hand_over(objects: dict[str, np.ndarray], start: dict[str, Waypoint], expert: dict) -> dict[str, list[Waypoint]]:
    """Right arm picks the cube from above by its upper half, turns it towards the left arm, which takes
    the half that sticks out past the right fingertips with its fingers closing vertically."""
    cube = objects[expert["object"]][:3, 3]
    meet = np.array([0.10, 0.5, 0.22])               # right TCP at the hand-over
    right_tip = meet[0] - FINGERTIP                    # the cube's centre sits at the right fingertips
    left_tcp = np.array([right_tip - 0.006 - FINGERTIP, meet[1], meet[2]])  # left tips stop 6 mm short
    grasp = cube + [0.0, 0.0, FINGERTIP]               # right fingertips at the cube's centre height
    right = _pick(start["right"], grasp, RIGHT_DOWN) + [
        Waypoint(5.5, meet, RIGHT_TOWARDS_LEFT, GRIPPER_CLOSED),
        Waypoint(7.2, meet, RIGHT_TOWARDS_LEFT, GRIPPER_CLOSED),
        Waypoint(7.7, meet, RIGHT_TOWARDS_LEFT, GRIPPER_OPEN),
        Waypoint(8.7, meet + [0.10, 0.0, 0.0], RIGHT_TOWARDS_LEFT, GRIPPER_OPEN),
        Waypoint(9.5, meet + [0.10, 0.0, 0.0], RIGHT_TOWARDS_LEFT, GRIPPER_OPEN),
    ]
    left = [
        start["left"],
        Waypoint(4.0, left_tcp - [0.08, 0.0, 0.0], LEFT_TOWARDS_RIGHT_ROLLED, GRIPPER_OPEN),
        Waypoint(5.8, left_tcp - [0.08, 0.0, 0.0], LEFT_TOWARDS_RIGHT_ROLLED, GRIPPER_OPEN),
        Waypoint(6.6, left_tcp, LEFT_TOWARDS_RIGHT_ROLLED, GRIPPER_OPEN),
        Waypoint(7.1, left_tcp, LEFT_TOWARDS_RIGHT_ROLLED, GRIPPER_CLOSED),
        Waypoint(7.7, left_tcp, LEFT_TOWARDS_RIGHT_ROLLED, GRIPPER_CLOSED),
        Waypoint(8.7, left_tcp - [0.10, 0.0, 0.0], LEFT_TOWARDS_RIGHT_ROLLED, GRIPPER_CLOSED),
        Waypoint(9.5, left_tcp - [0.10, 0.0, 0.0], LEFT_TOWARDS_RIGHT_ROLLED, GRIPPER_CLOSED),
    ]
    return {"left": left, "right": right}


def _insert(objects: dict[str, np.ndarray], start: dict[str, Waypoint], expert: dict) -> dict[str, list[Waypoint]]:
    """Left arm picks the socket by its middle, right arm the peg just right of its middle, both from
    above (the fingers close across the objects' long x axis); the socket is held up in the middle
    and the peg, lined up along x, is pushed 3 cm into its mouth, onto the pin."""
    peg, socket = objects[expert["peg"]][:3, 3], objects[expert["socket"]][:3, 3]
    tips_up = [0.0, 0.0, FINGERTIP - 0.005]              # fingertips 5 mm above the object's centre
    peg_grasp = peg + [0.005, 0.0, 0.0] + tips_up
    socket_grasp = socket + tips_up
    socket_held = np.array([-0.05, 0.5, 0.20])           # socket centre at the meeting point
    peg_ready = socket_held + [0.15, 0.0, 0.0]           # peg tip 3 cm before the socket's mouth
    peg_in = socket_held + [0.09, 0.0, 0.0]              # peg tip 3 cm inside (the pin starts 2 cm in)
    left = _pick(start["left"], socket_grasp, LEFT_DOWN) + [
        Waypoint(5.0, socket_held + (socket_grasp - socket), LEFT_DOWN, GRIPPER_CLOSED),
        Waypoint(8.0, socket_held + (socket_grasp - socket), LEFT_DOWN, GRIPPER_CLOSED),
    ]
    right = _pick(start["right"], peg_grasp, RIGHT_DOWN) + [
        Waypoint(5.0, peg_ready + (peg_grasp - peg), RIGHT_DOWN, GRIPPER_CLOSED),
        Waypoint(5.5, peg_ready + (peg_grasp - peg), RIGHT_DOWN, GRIPPER_CLOSED),
        Waypoint(7.0, peg_in + (peg_grasp - peg), RIGHT_DOWN, GRIPPER_CLOSED),
        Waypoint(8.0, peg_in + (peg_grasp - peg), RIGHT_DOWN, GRIPPER_CLOSED),
    ]
    return {"left": left, "right": right}


SKILLS: dict[str, Callable[[dict[str, np.ndarray], dict[str, Waypoint], dict], dict[str, list[Waypoint]]]] = {
    "hand_over": _hand_over,
    "insert": _insert,
}


def _smoothstep(u: np.ndarray) -> np.ndarray:
    """Time scaling of one segment: starts and ends at rest, so the joint velocity is continuous."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _sample(keys: np.ndarray, values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Values (K, J) at knot times (K,) sampled at `times`, each segment eased by `_smoothstep`."""
    segment = np.clip(np.searchsorted(keys, times, side="right") - 1, 0, len(keys) - 2)
    u = (times - keys[segment]) / np.maximum(keys[segment + 1] - keys[segment], 1e-9)
    s = _smoothstep(u)[:, None]
    return values[segment] + s * (values[segment + 1] - values[segment])


class ScriptedExpert:
    """A `Policy` that plans a task's skill from privileged object poses and serves it as chunks.

    object_poses: returns the scene's object body → 4×4 world pose now (the sim's privileged state).
    horizon, dt: actions per chunk and their spacing [s] (dt is also the planning period).
    """

    action_space = "joint_position"

    def __init__(self, kinematics: BimanualKinematics, tasks: TaskSet,
                 object_poses: Callable[[], dict[str, np.ndarray]], *, horizon: int = 50, dt: float = 0.02):
        if horizon < 1 or not dt > 0:
            raise ValueError("the expert needs horizon >= 1 and dt > 0")
        self.kinematics = kinematics
        self.tasks = tasks
        self.object_poses = object_poses
        self.horizon = horizon
        self.dt = dt
        self.action_names = list(kinematics.config.command_joints)
        self.task: Task | None = None
        self._plan: np.ndarray | None = None   # (N, command joints) at plan_start + k·dt
        self._plan_start = 0.0

    def plan(self, task: Task, joint_positions: np.ndarray) -> np.ndarray:
        """Joint targets every dt from `joint_positions` through the task's skill.

        Each waypoint is solved with IK once; between waypoints the joints move on eased straight
        lines (short segments, so the TCP path stays close to the straight one). The IK solution of a
        waypoint is the one nearest the previous waypoint's among those away from the joint limits,
        starting from the previous solution and from the robot's home (the wrist of the ViperX has two
        equivalent branches, forearm roll ±π; one of them runs into the limits)."""
        skill = SKILLS.get(task.expert.get("skill"))
        if skill is None:
            raise PolicyError(f"the scripted expert has no skill for task {task.name!r} "
                              f"(expert: {task.expert!r}; skills: {sorted(SKILLS)})")
        joint_positions = np.asarray(joint_positions, dtype=float)
        start = {arm: Waypoint(0.0, pose[:3, 3], pose[:3, :3],
                               float(joint_positions[self.kinematics.gripper_index(arm)]))
                 for arm, pose in self.kinematics.ee_poses(joint_positions).items()}
        waypoints = skill(self.object_poses(), start, task.expert)
        duration = max(w[-1].t for w in waypoints.values())
        times = np.arange(0.0, duration + self.dt / 2, self.dt)
        plan = np.tile(joint_positions, (len(times), 1))
        for arm, arm_waypoints in waypoints.items():
            sl, gripper = self.kinematics.arm_slice(arm), self.kinematics.gripper_index(arm)
            solutions = [joint_positions]
            for waypoint in arm_waypoints[1:]:
                solutions.append(self._solve(task, arm, waypoint, solutions[-1]))
            keys = np.array([w.t for w in arm_waypoints])
            values = np.array([np.append(q[sl], w.gripper) for q, w in zip(solutions, arm_waypoints, strict=True)])
            sampled = _sample(keys, values, times)
            plan[:, sl], plan[:, gripper] = sampled[:, :-1], sampled[:, -1]
        return plan

    def _solve(self, task: Task, arm: str, waypoint: Waypoint, previous: np.ndarray) -> np.ndarray:
        target = np.eye(4)
        target[:3, :3], target[:3, 3] = waypoint.rotation, waypoint.position
        sl = self.kinematics.arm_slice(arm)
        limits = self.kinematics.limits
        home = previous.copy()
        home[sl] = self.kinematics.config.home_positions()[sl]
        best, best_cost, closest = None, np.inf, None
        for seed in (previous, home):
            result = self.kinematics.solve_ik(arm, target, seed, max_iterations=150)
            if closest is None or result.position_error < closest.position_error:
                closest = result
            if result.position_error > 1e-3 or result.rotation_error > 1e-2:
                continue
            headroom = np.min(np.minimum(result.positions[sl] - limits.lower[sl], limits.upper[sl] - result.positions[sl]))
            cost = np.linalg.norm(result.positions[sl] - previous[sl]) + (100.0 if headroom < 0.2 else 0.0)
            if cost < best_cost:
                best, best_cost = result.positions, cost
        if best is None:
            raise PolicyError(f"task {task.name}: the {arm} arm cannot reach its waypoint at t={waypoint.t:.2f} s "
                              f"({closest.position_error * 1000:.1f} mm, {closest.rotation_error:.3f} rad off)")
        return best

    def predict(self, observation: Observation) -> Chunk:
        task = self.tasks.for_instruction(observation.instruction)
        if task is None:
            raise PolicyError(f"instruction {observation.instruction!r} names no known task")
        if task is not self.task:
            self._plan = self.plan(task, observation.joint_positions)
            self._plan_start = observation.stamp
            self.task = task
        steps = np.round((observation.stamp - self._plan_start) / self.dt).astype(int) + np.arange(self.horizon)
        actions = self._plan[np.clip(steps, 0, len(self._plan) - 1)]
        return Chunk(actions=actions, dt=self.dt, action_space=self.action_space, action_names=self.action_names,
                     stamp=self._plan_start + steps[0] * self.dt, instruction=observation.instruction)


class ObjectPoseFeed:
    """The newest privileged object poses a running sim reported (the expert's `object_poses` in the
    graph). Fed from the sim's object-pose topic on one thread, read by the policy worker on another.

    The expert asks for the poses when it plans, i.e. when a task starts or the instruction changes,
    so it plans from where the objects are at that moment: poses re-derived from the scene's seed would
    be wrong as soon as anything moved them (a grasp, a push, a dropped cube)."""

    def __init__(self, max_age: float = 1.0, clock: Callable[[], float] | None = None):
        self.max_age = max_age
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._poses: dict[str, np.ndarray] = {}
        self._received: float | None = None

    def update(self, poses: dict[str, np.ndarray]) -> None:
        checked = {}
        for body, pose in poses.items():
            pose = np.asarray(pose, dtype=float)
            if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
                raise ValueError(f"object {body!r}: a pose is a finite 4×4 matrix, got shape {pose.shape}")
            checked[body] = pose
        with self._lock:
            self._poses, self._received = checked, self._clock()

    def __call__(self) -> dict[str, np.ndarray]:
        with self._lock:
            poses, received = dict(self._poses), self._received
        if received is None:
            raise PolicyError("no object poses from the sim yet (the scripted expert needs the privileged scene state)")
        if self._clock() - received > self.max_age:
            raise PolicyError(f"the newest object poses are {self._clock() - received:.1f} s old "
                              f"(more than {self.max_age:g} s): is the sim still running?")
        return poses
