"""The robot layout every node shares (config/bimanual.yaml): arms, joints, controllers, cameras.

Loaded once per process and validated against the URDF, so a typo in a joint name fails at startup
with a message naming it instead of surfacing later as a silently ignored joint.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from wall_oss_core.paths import share_file

ActionSpaceName = Literal["wall_oss_ee_relative", "joint_position"]
ControllerInterface = Literal["forward_command", "joint_trajectory"]
ACTION_SPACES: tuple[str, ...] = ("wall_oss_ee_relative", "joint_position")
# How sim_arm_node simulates the robot: "kinematic" (joint dynamics on the URDF, flat-shaded
# renderer) or "aloha_mujoco" (the ALOHA scene in MuJoCo, wall_oss_core.sim.aloha).
SIMULATORS: tuple[str, ...] = ("kinematic", "aloha_mujoco")
CONTROLLER_INTERFACES: tuple[str, ...] = ("forward_command", "joint_trajectory")


class ConfigError(ValueError):
    """A robot configuration file is missing a field or names something that does not exist."""


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box [m] in the base frame that an arm's tool centre point must stay in."""

    min: np.ndarray
    max: np.ndarray

    def contains(self, point: np.ndarray) -> bool:
        return bool(np.all(point >= self.min) and np.all(point <= self.max))


@dataclass(frozen=True)
class ArmConfig:
    name: str
    joints: tuple[str, ...]
    ee_frame: str
    gripper_joint: str
    gripper_mimic_joints: tuple[str, ...]
    workspace: WorkspaceBox
    home: np.ndarray
    controller: str
    gripper_controller: str
    gripper_home: float = 0.02  # gripper opening at home (grippers differ in range)

    @property
    def command_joints(self) -> tuple[str, ...]:
        """Joints the executor commands for this arm: the arm joints, then the gripper."""
        return self.joints + (self.gripper_joint,)


@dataclass(frozen=True)
class CameraConfig:
    name: str
    topic: str
    frame: str


@dataclass(frozen=True)
class RobotConfig:
    urdf_path: Path
    base_frame: str
    arms: tuple[ArmConfig, ...]
    cameras: tuple[CameraConfig, ...]
    action_space: ActionSpaceName
    controller_interface: ControllerInterface
    max_acceleration_revolute: float
    max_acceleration_gripper: float
    position_margin_revolute: float
    position_margin_gripper: float
    simulator: str = "kinematic"
    sim_scene: str = ""  # the simulator's default scene (aloha_mujoco: a wall_oss_core.sim.aloha scene)
    max_jerk_revolute: float = 60.0  # [rad/s^3] when the YAML has no max_jerk
    max_jerk_gripper: float = 5.0    # [m/s^3]
    source: Path = field(default=Path())

    @property
    def command_joints(self) -> tuple[str, ...]:
        """Every commanded joint in a fixed order: left arm + gripper, then right arm + gripper."""
        return tuple(j for arm in self.arms for j in arm.command_joints)

    @property
    def gripper_joints(self) -> tuple[str, ...]:
        return tuple(arm.gripper_joint for arm in self.arms)

    def arm(self, name: str) -> ArmConfig:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm named {name!r}; arms are {[a.name for a in self.arms]}")

    def home_positions(self) -> np.ndarray:
        """Home of every command joint (each arm's home, then its gripper_home)."""
        return np.concatenate([np.append(arm.home, arm.gripper_home) for arm in self.arms])


def _require(mapping: dict, key: str, where: str):
    if not isinstance(mapping, dict) or key not in mapping:
        raise ConfigError(f"{where}: missing required field {key!r}")
    return mapping[key]


def _vector(value, length: int, where: str) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.shape != (length,) or not np.all(np.isfinite(array)):
        raise ConfigError(f"{where}: expected {length} finite numbers, got {value!r}")
    return array


def load_robot_config(path: str | Path) -> RobotConfig:
    """Parse and validate a robot layout YAML (see config/bimanual.yaml)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"robot config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"robot config {path} is not valid YAML: {error}") from error
    where = str(path)
    urdf_path = (path.parent / _require(raw, "urdf", where)).resolve()
    if not urdf_path.is_file():
        raise ConfigError(f"{where}: URDF {urdf_path} does not exist")

    arms = []
    for name, arm in _require(raw, "arms", where).items():
        arm_where = f"{where}: arms.{name}"
        joints = tuple(_require(arm, "joints", arm_where))
        box = _require(arm, "workspace", arm_where)
        workspace = WorkspaceBox(_vector(_require(box, "min", arm_where), 3, arm_where + ".workspace.min"),
                                 _vector(_require(box, "max", arm_where), 3, arm_where + ".workspace.max"))
        if np.any(workspace.min >= workspace.max):
            raise ConfigError(f"{arm_where}.workspace: min must be below max on every axis")
        arms.append(ArmConfig(
            name=name,
            joints=joints,
            ee_frame=_require(arm, "ee_frame", arm_where),
            gripper_joint=_require(arm, "gripper_joint", arm_where),
            gripper_mimic_joints=tuple(arm.get("gripper_mimic_joints", ())),
            workspace=workspace,
            home=_vector(_require(arm, "home", arm_where), len(joints), arm_where + ".home"),
            controller=_require(arm, "controller", arm_where),
            gripper_controller=_require(arm, "gripper_controller", arm_where),
            gripper_home=float(arm.get("gripper_home", 0.02)),
        ))
    if [a.name for a in arms] != ["left", "right"]:
        raise ConfigError(f"{where}: arms must be exactly 'left' then 'right', got {[a.name for a in arms]}")

    cameras = tuple(
        CameraConfig(name=name, topic=_require(cam, "topic", f"{where}: cameras.{name}"),
                     frame=_require(cam, "frame", f"{where}: cameras.{name}"))
        for name, cam in _require(raw, "cameras", where).items())
    action_space = _require(raw, "action_space", where)
    if action_space not in ACTION_SPACES:
        raise ConfigError(f"{where}: action_space must be one of {ACTION_SPACES}, got {action_space!r}")
    interface = raw.get("controller_interface", "forward_command")
    if interface not in CONTROLLER_INTERFACES:
        raise ConfigError(f"{where}: controller_interface must be one of {CONTROLLER_INTERFACES}, got {interface!r}")
    sim = raw.get("sim") or {}
    simulator = sim.get("backend", "kinematic")
    if simulator not in SIMULATORS:
        raise ConfigError(f"{where}: sim.backend must be one of {SIMULATORS}, got {simulator!r}")
    accel = _require(raw, "max_acceleration", where)
    margin = _require(raw, "position_margin", where)
    jerk = raw.get("max_jerk", {})
    if not isinstance(jerk, dict):
        raise ConfigError(f"{where}: max_jerk must be a mapping with 'default' and 'gripper', got {jerk!r}")
    jerk_defaults = {f.name: f.default for f in fields(RobotConfig)}
    try:
        max_jerk = {key: float(jerk.get(key, jerk_defaults[f"max_jerk_{name}"]))
                    for key, name in (("default", "revolute"), ("gripper", "gripper"))}
    except (TypeError, ValueError):
        max_jerk = {"default": np.nan}
    if not all(np.isfinite(value) and value > 0 for value in max_jerk.values()):
        raise ConfigError(f"{where}: max_jerk values must be positive numbers, got {jerk!r}")
    return RobotConfig(
        urdf_path=urdf_path,
        base_frame=raw.get("base_frame", "world"),
        arms=tuple(arms),
        cameras=cameras,
        action_space=action_space,
        controller_interface=interface,
        max_acceleration_revolute=float(_require(accel, "default", where + ": max_acceleration")),
        max_acceleration_gripper=float(_require(accel, "gripper", where + ": max_acceleration")),
        position_margin_revolute=float(_require(margin, "revolute", where + ": position_margin")),
        position_margin_gripper=float(_require(margin, "gripper", where + ": position_margin")),
        simulator=simulator,
        sim_scene=str(sim.get("scene", "")),
        max_jerk_revolute=max_jerk["default"],
        max_jerk_gripper=max_jerk["gripper"],
        source=path,
    )


def default_config_path() -> Path:
    """config/bimanual.yaml of this source tree or of an installed share/wall_oss."""
    return share_file("config/bimanual.yaml")


def controller_joints_mismatch(controller: str, commanded, declared) -> str | None:
    """Why `controller` must not be commanded, or None. ros2_control's forward-command and trajectory
    controllers take values in the order of their `joints` parameter while wall_oss sends the robot
    config's order: a differently ordered controller YAML would move the wrong joints."""
    commanded, declared = tuple(commanded), tuple(declared)
    if commanded == declared:
        return None
    how = "the same joints in another order" if sorted(commanded) == sorted(declared) else "other joints"
    return (f"controller {controller} has joints {list(declared)} ({how}) but the robot config commands it with "
            f"{list(commanded)}: make the controller's joints parameter and the robot config list the same "
            "joints in the same order")
