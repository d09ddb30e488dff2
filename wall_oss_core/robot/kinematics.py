"""Forward and inverse kinematics of the bimanual arm on its URDF, with Pinocchio.

Everything works on the executor's command vector (`RobotConfig.command_joints`: each arm's joints
then its gripper), so callers never deal with Pinocchio's configuration layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pinocchio as pin

from wall_oss_core.robot.config import RobotConfig


@dataclass(frozen=True)
class JointLimits:
    """Limits of the command joints, in command order. Position bounds already include the margin."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray


@dataclass(frozen=True)
class IkResult:
    positions: np.ndarray
    position_error: float  # [m]
    rotation_error: float  # [rad]
    converged: bool


class BimanualKinematics:
    """FK / IK / limits for the arms described by a RobotConfig."""

    def __init__(self, config: RobotConfig):
        self.config = config
        self.model = pin.buildModelFromUrdf(str(config.urdf_path))
        self.data = self.model.createData()
        self._q_index = {}
        for name in config.command_joints + tuple(j for arm in config.arms for j in arm.gripper_mimic_joints):
            if not self.model.existJointName(name):
                raise ValueError(f"joint {name!r} from {config.source} is not in {config.urdf_path}")
            self._q_index[name] = self.model.joints[self.model.getJointId(name)].idx_q
        self._ee_frame = {}
        for arm in config.arms:
            if not self.model.existFrame(arm.ee_frame):
                raise ValueError(f"end-effector frame {arm.ee_frame!r} is not in {config.urdf_path}")
            self._ee_frame[arm.name] = self.model.getFrameId(arm.ee_frame)
        self._arm_slices = {}
        start = 0
        for arm in config.arms:
            self._arm_slices[arm.name] = slice(start, start + len(arm.joints))
            start += len(arm.command_joints)
        self.limits = self._joint_limits()
        # index arrays for the hot path: command vector → Pinocchio configuration without a Python loop
        self._neutral = pin.neutral(self.model)
        self._command_q = np.array([self._q_index[name] for name in config.command_joints])
        self._mimic_q = np.array([self._q_index[m] for arm in config.arms for m in arm.gripper_mimic_joints], dtype=int)
        self._mimic_source = np.array([self.gripper_index(arm.name) for arm in config.arms
                                       for _ in arm.gripper_mimic_joints], dtype=int)

    def _joint_limits(self) -> JointLimits:
        cfg = self.config
        grippers = set(cfg.gripper_joints)
        lower, upper, velocity, acceleration, jerk = [], [], [], [], []
        for name in cfg.command_joints:
            idx = self._q_index[name]
            jid = self.model.getJointId(name)
            margin = cfg.position_margin_gripper if name in grippers else cfg.position_margin_revolute
            lower.append(self.model.lowerPositionLimit[idx] + margin)
            upper.append(self.model.upperPositionLimit[idx] - margin)
            velocity.append(self.model.velocityLimit[self.model.joints[jid].idx_v])
            acceleration.append(cfg.max_acceleration_gripper if name in grippers else cfg.max_acceleration_revolute)
            jerk.append(cfg.max_jerk_gripper if name in grippers else cfg.max_jerk_revolute)
        limits = JointLimits(cfg.command_joints, np.array(lower), np.array(upper), np.array(velocity),
                             np.array(acceleration), np.array(jerk))
        if (np.any(limits.lower >= limits.upper) or np.any(limits.velocity <= 0) or np.any(limits.acceleration <= 0)
                or np.any(limits.jerk <= 0)):
            raise ValueError(f"{cfg.urdf_path}: every command joint needs position limits wider than the margin "
                             "and positive velocity / acceleration / jerk limits")
        return limits

    def arm_slice(self, arm: str) -> slice:
        """Indices of an arm's joints (without its gripper) in the command vector."""
        return self._arm_slices[arm]

    def gripper_index(self, arm: str) -> int:
        return self._arm_slices[arm].stop

    def configuration(self, command: np.ndarray) -> np.ndarray:
        """Pinocchio configuration for a command vector (mimic fingers follow their gripper joint)."""
        q = self._neutral.copy()
        q[self._command_q] = command
        q[self._mimic_q] = np.asarray(command)[self._mimic_source]
        return q

    def ee_poses(self, command: np.ndarray) -> dict[str, np.ndarray]:
        """4x4 pose of each arm's end-effector frame in the base frame."""
        pin.framesForwardKinematics(self.model, self.data, self.configuration(np.asarray(command, dtype=float)))
        return {arm: self.data.oMf[fid].homogeneous.copy() for arm, fid in self._ee_frame.items()}

    def frame_pose(self, command: np.ndarray, frame: str) -> np.ndarray:
        """4x4 pose of any URDF frame (cameras, links) for a command vector."""
        pin.framesForwardKinematics(self.model, self.data, self.configuration(np.asarray(command, dtype=float)))
        return self.data.oMf[self.model.getFrameId(frame)].homogeneous.copy()

    def solve_ik(self, arm: str, target: np.ndarray, seed: np.ndarray, *, max_iterations: int = 60,
                 tolerance: float = 1e-4, damping: float = 1e-3) -> IkResult:
        """Damped least-squares IK for one arm's 6 joints towards a 4x4 target, starting at `seed`
        (a full command vector). Joint limits are respected by clipping every iterate."""
        command = np.array(seed, dtype=float)
        sl = self._arm_slices[arm]
        fid = self._ee_frame[arm]
        target_se3 = pin.SE3(target[:3, :3], target[:3, 3])
        v_indices = [self.model.joints[self.model.getJointId(j)].idx_v for j in self.config.arm(arm).joints]
        lower, upper = self.limits.lower[sl], self.limits.upper[sl]
        for iteration in range(max_iterations + 1):
            q = self.configuration(command)
            pin.framesForwardKinematics(self.model, self.data, q)
            current = self.data.oMf[fid]
            # error in the local-world-aligned frame: translation difference and rotation log
            error = np.concatenate([target_se3.translation - current.translation,
                                    pin.log3(target_se3.rotation @ current.rotation.T)])
            converged = np.linalg.norm(error[:3]) < tolerance and np.linalg.norm(error[3:]) < 10 * tolerance
            if converged or iteration == max_iterations:
                break
            jacobian = pin.computeFrameJacobian(self.model, self.data, q, fid, pin.LOCAL_WORLD_ALIGNED)[:, v_indices]
            step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping * np.eye(6), error)
            command[sl] = np.clip(command[sl] + step, lower, upper)
        position_error = float(np.linalg.norm(error[:3]))
        rotation_error = float(np.linalg.norm(error[3:]))
        return IkResult(command, position_error, rotation_error, bool(converged))
