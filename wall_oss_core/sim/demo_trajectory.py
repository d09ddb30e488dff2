"""A scripted reach-and-grasp demonstration for the replay backend, so the demo runs with no checkpoint.

Both arms reach for an object of the simulated scene (left: the red cube, right: the green can),
descend, close the gripper, lift, put it back, open and return home; the cycle is periodic, so the
replay backend can loop it for as long as the demo runs. Keyframes are solved with IK on the URDF
and joined with minimum-jerk segments (zero velocity and acceleration at every keyframe), which keeps
the motion well inside the velocity and acceleration limits. The chunks are absolute
`joint_position` actions, so replaying them from any starting time gives the same motion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wall_oss_core.backends.replay import Recording
from wall_oss_core.policy.interface import Chunk
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.kinematic_arm import DEFAULT_OBJECTS, TABLE_TOP_Z, SceneObject

DEMO_INSTRUCTION = "pick up the red cube and the green can, then put them back"
_GRIPPER_DOWN = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # tool z axis pointing down


@dataclass(frozen=True)
class DemoSettings:
    """Timing of the demonstration and of the recorded chunks."""

    period: float = 10.0            # one full reach-grasp-lift-place-return cycle [s]
    chunk_interval: float = 0.2     # time between recorded chunks [s]
    horizon: int = 32               # actions per chunk
    action_dt: float = 1.0 / 30.0   # time between actions [s]
    approach_height: float = 0.14   # tool centre point above the object before descending [m]
    grasp_height: float = 0.035     # tool centre point above the table when grasping [m]
    open_gripper: float = 0.035     # finger opening [m]
    instruction: str = DEMO_INSTRUCTION


# (fraction of the period, phase): where the tool is (home / above / grasp) and the gripper (rest / open / closed)
_PHASES = (
    (0.00, "home_rest"), (0.20, "above_open"), (0.35, "grasp_open"), (0.43, "grasp_closed"),
    (0.55, "above_closed"), (0.68, "grasp_closed"), (0.76, "grasp_open"), (0.86, "above_open"), (1.00, "home_rest"),
)
TARGETS = {"left": "red_cube", "right": "green_can"}


def _object(name: str) -> SceneObject:
    return next(obj for obj in DEFAULT_OBJECTS if obj.name == name)


def _keyframes(kinematics: BimanualKinematics, settings: DemoSettings) -> np.ndarray:
    """Command vectors (K, n_joints) at each phase of `_PHASES`."""
    robot = kinematics.config
    home = robot.home_positions()
    frames = []
    for _, phase in _PHASES:
        place, gripper = phase.split("_")
        command = home.copy()
        for arm in robot.arms:
            if place == "home":  # the config's home pose, gripper included: where the arm starts
                continue
            obj = _object(TARGETS[arm.name])
            closed = max(0.0, obj.size[1] / 2 - 0.005)  # fingers squeeze slightly into the object
            command[kinematics.gripper_index(arm.name)] = settings.open_gripper if gripper == "open" else closed
            height = settings.grasp_height + (settings.approach_height if place == "above" else 0.0)
            target = np.eye(4)
            target[:3, :3] = _GRIPPER_DOWN
            target[:3, 3] = [obj.position[0], obj.position[1], TABLE_TOP_Z + height]
            seed = frames[-1] if frames else home
            solution = kinematics.solve_ik(arm.name, target, seed, max_iterations=200)
            if not solution.converged:
                raise RuntimeError(f"demo keyframe {phase} of the {arm.name} arm is unreachable "
                                   f"({solution.position_error * 1000:.1f} mm off)")
            command[kinematics.arm_slice(arm.name)] = solution.positions[kinematics.arm_slice(arm.name)]
        frames.append(command)
    return np.array(frames)


def _minimum_jerk(s: np.ndarray) -> np.ndarray:
    return s ** 3 * (10 - 15 * s + 6 * s ** 2)


class DemoTrajectory:
    """The periodic joint trajectory: `positions(t)` for any t ≥ 0 (wraps every period)."""

    def __init__(self, kinematics: BimanualKinematics, settings: DemoSettings = DemoSettings()):
        self.settings = settings
        self.joint_names = list(kinematics.config.command_joints)
        self.keyframes = _keyframes(kinematics, settings)
        self.times = np.array([fraction for fraction, _ in _PHASES]) * settings.period

    def positions(self, t) -> np.ndarray:
        """(len(t), n_joints) command vectors at times t [s]."""
        t = np.mod(np.atleast_1d(np.asarray(t, dtype=float)), self.settings.period)
        segment = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 2)
        start, end = self.times[segment], self.times[segment + 1]
        blend = _minimum_jerk(np.clip((t - start) / (end - start), 0.0, 1.0))[:, None]
        return self.keyframes[segment] + blend * (self.keyframes[segment + 1] - self.keyframes[segment])

    def recording(self) -> Recording:
        """One period of chunks, each starting at its own stamp (relative time from 0)."""
        settings = self.settings
        offsets = np.arange(settings.horizon) * settings.action_dt
        chunks = [Chunk(actions=self.positions(stamp + offsets), dt=settings.action_dt, action_space="joint_position",
                        action_names=self.joint_names, stamp=float(stamp), instruction=settings.instruction)
                  for stamp in np.arange(0.0, settings.period, settings.chunk_interval)]
        return Recording(chunks, source="scripted reach-and-grasp demonstration")
