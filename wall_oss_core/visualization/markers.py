"""What rviz shows of a running graph, as plain data (no ROS): the markers node turns it into a
`visualization_msgs/MarkerArray`, and tests check it without rviz.

- predicted EE path of each arm in the latest chunk, colored by time (blue = first action, red = last)
- executed EE path of each arm (forward kinematics of the recent joint states), grey
- each arm's workspace box: green when the supervisor is OK, yellow while it is limiting, red when
  that arm's workspace limit acted or the supervisor is in FAULT / ESTOP
- a text line with the safety state, its reason and the command counters
All positions are in the robot base frame.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.kinematics import BimanualKinematics

SAFETY_STATES = ("OK", "LIMITING", "HOLD", "ESTOP", "FAULT")


@dataclass(frozen=True)
class Rgba:
    r: float
    g: float
    b: float
    a: float = 1.0


GREEN, YELLOW, RED, GREY, WHITE = Rgba(0.1, 0.8, 0.2, 0.25), Rgba(0.95, 0.8, 0.1, 0.3), Rgba(0.9, 0.1, 0.1, 0.45), \
    Rgba(0.6, 0.6, 0.6, 0.9), Rgba(1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class PathMarker:
    """A line through `points` (N, 3) with one color per point."""

    namespace: str
    id: int
    points: np.ndarray
    colors: tuple[Rgba, ...]
    width: float


@dataclass(frozen=True)
class BoxMarker:
    namespace: str
    id: int
    center: np.ndarray
    size: np.ndarray
    color: Rgba


@dataclass(frozen=True)
class TextMarker:
    namespace: str
    id: int
    position: np.ndarray
    text: str
    color: Rgba
    height: float


@dataclass(frozen=True)
class SafetyView:
    """The part of a SafetyStatus the markers show."""

    state_name: str
    reason: str = ""
    active_limits: tuple[str, ...] = ()
    passed: int = 0
    modified: int = 0
    rejected: int = 0


def time_colors(count: int) -> tuple[Rgba, ...]:
    """Blue → red over `count` points: earlier actions blue, later ones red."""
    fractions = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(count)
    return tuple(Rgba(float(f), 0.2, float(1.0 - f), 1.0) for f in fractions)


class MarkerScene:
    """Keeps the latest chunk, recent joint states and safety state; `markers()` gives the scene."""

    def __init__(self, kinematics: BimanualKinematics, executed_length: int = 300):
        self.kinematics = kinematics
        self.config = kinematics.config
        self.arms = [arm.name for arm in self.config.arms]
        self._executed = {arm: deque(maxlen=executed_length) for arm in self.arms}
        self._joint_history: deque[tuple[float, np.ndarray]] = deque(maxlen=executed_length)
        self._predicted: dict[str, np.ndarray] = {}
        self.safety: SafetyView | None = None

    def add_joint_state(self, stamp: float, command: np.ndarray) -> None:
        """Command-joint positions at `stamp`: extends the executed path."""
        command = np.asarray(command, dtype=float)
        self._joint_history.append((stamp, command))
        for arm, pose in self.kinematics.ee_poses(command).items():
            self._executed[arm].append(pose[:3, 3].copy())

    def set_chunk(self, chunk: Chunk) -> None:
        """Latest chunk → predicted EE path per arm. Relative EE actions are taken relative to the
        joint state nearest the chunk's observation stamp; ValueError when none is known yet."""
        from wall_oss_core.evaluation.open_loop import ee_trajectory

        if not self._joint_history:
            raise ValueError("no joint state yet to anchor the chunk's end-effector path")
        stamps = np.array([s for s, _ in self._joint_history])
        reference = self._joint_history[int(np.argmin(np.abs(stamps - chunk.stamp)))][1]
        poses, _ = ee_trajectory(chunk.actions, chunk.action_space, list(chunk.action_names),
                                 self.kinematics.ee_poses(reference), self.kinematics)
        self._predicted = {arm: poses[arm][:, :3, 3].copy() for arm in self.arms}

    def set_safety(self, view: SafetyView) -> None:
        self.safety = view

    def _box_color(self, arm: str) -> Rgba:
        if self.safety is None:
            return GREEN
        if self.safety.state_name in ("FAULT", "ESTOP") or f"workspace:{arm}" in self.safety.active_limits:
            return RED
        if self.safety.state_name == "LIMITING" or self.safety.state_name == "HOLD":
            return YELLOW
        return GREEN

    def markers(self) -> list[PathMarker | BoxMarker | TextMarker]:
        items: list[PathMarker | BoxMarker | TextMarker] = []
        for index, arm in enumerate(self.arms):
            if arm in self._predicted and len(self._predicted[arm]) > 1:
                points = self._predicted[arm]
                items.append(PathMarker(f"predicted_path/{arm}", index, points, time_colors(len(points)), 0.006))
            if len(self._executed[arm]) > 1:
                points = np.array(self._executed[arm])
                items.append(PathMarker(f"executed_path/{arm}", index, points, (GREY,) * len(points), 0.004))
            box = self.config.arm(arm).workspace
            items.append(BoxMarker(f"workspace/{arm}", index, (box.min + box.max) / 2, box.max - box.min,
                                   self._box_color(arm)))
        if self.safety is not None:
            top = max(arm.workspace.max[2] for arm in self.config.arms) + 0.1
            text = (f"safety {self.safety.state_name}" + (f": {self.safety.reason}" if self.safety.reason else "")
                    + f"  passed {self.safety.passed} modified {self.safety.modified} "
                      f"rejected {self.safety.rejected}")
            color = RED if self.safety.state_name in ("FAULT", "ESTOP") else WHITE
            items.append(TextMarker("safety", 0, np.array([0.4, 0.0, top]), text, Rgba(color.r, color.g, color.b, 1.0),
                                    0.04))
        return items
