"""Action spaces the policy can speak, and conversions between them.

`wall_oss_ee_relative` is the Wall-OSS standard 26-dim end-effector space: per arm (left, then right)
the position relative to the arm's end-effector at the observation (3), the relative rotation as 6D
(top two rows of R_rel = R_abs · R_stateᵀ) (6) and the gripper (1); then 6 dims this robot does not
use (base velocity, lift, head). The matching state is the same layout with absolute values.
`joint_position` is absolute targets for the command joints (each arm's joints, then its gripper).
"""
from __future__ import annotations

import numpy as np

ARMS = ("left", "right")
WALL_OSS_DIM = 26
_ARM_BLOCK = 10  # xyz 3 + rot6d 6 + gripper 1
_UNUSED_TAIL = ("base_velocity_x", "base_velocity_y", "base_velocity_yaw", "lift_height", "head_yaw", "head_pitch")


def wall_oss_names(relative: bool) -> list[str]:
    """One name per dimension of the 26-dim Wall-OSS action (relative=True) or state vector."""
    suffix = "_relative" if relative else ""
    names = []
    for arm in ARMS:
        names += [f"follow_{arm}_ee_cartesian_pos{suffix}_{axis}" for axis in "xyz"]
        names += [f"follow_{arm}_ee_rotation_6D{suffix}_{i}" for i in range(6)]
        names.append(f"follow_{arm}_gripper")
    return names + list(_UNUSED_TAIL)


def arm_block(arm: str) -> slice:
    """Indices of one arm's 10 values in a 26-dim Wall-OSS vector."""
    start = ARMS.index(arm) * _ARM_BLOCK
    return slice(start, start + _ARM_BLOCK)


def rotation_to_6d(rotation: np.ndarray) -> np.ndarray:
    """Top two rows of R (…, 3, 3) flattened to (…, 6)."""
    return np.asarray(rotation)[..., :2, :].reshape(*np.shape(rotation)[:-2], 6)


def rotation_from_6d(six: np.ndarray) -> np.ndarray:
    """Nearest rotation to two (possibly noisy, unnormalized) rows, by Gram-Schmidt (…, 6) → (…, 3, 3)."""
    six = np.asarray(six, dtype=float)
    first, second = six[..., :3], six[..., 3:]
    first_norm = np.linalg.norm(first, axis=-1, keepdims=True)
    if np.any(first_norm < 1e-9):
        raise ValueError("6D rotation with a zero first row has no orientation")
    row1 = first / first_norm
    second = second - np.sum(row1 * second, axis=-1, keepdims=True) * row1
    second_norm = np.linalg.norm(second, axis=-1, keepdims=True)
    if np.any(second_norm < 1e-9):
        raise ValueError("6D rotation rows are parallel; no orientation can be recovered")
    row2 = second / second_norm
    return np.stack([row1, row2, np.cross(row1, row2)], axis=-2)


def ee_state_vector(ee_poses: dict[str, np.ndarray], grippers: dict[str, float]) -> np.ndarray:
    """The 26-dim Wall-OSS state: per arm absolute position, 6D rotation, gripper; unused tail zero."""
    state = np.zeros(WALL_OSS_DIM)
    for arm in ARMS:
        pose = ee_poses[arm]
        state[arm_block(arm)] = np.concatenate([pose[:3, 3], rotation_to_6d(pose[:3, :3]), [grippers[arm]]])
    return state


def relative_actions_to_poses(actions: np.ndarray, reference_poses: dict[str, np.ndarray]
                              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Turn (H, 26) relative actions into absolute end-effector targets.

    Returns per arm (H, 4, 4) poses (p = p_ref + p_rel, R = R_rel · R_ref) and (H,) gripper targets.
    """
    actions = np.asarray(actions, dtype=float)
    if actions.ndim != 2 or actions.shape[1] != WALL_OSS_DIM:
        raise ValueError(f"expected (H, {WALL_OSS_DIM}) Wall-OSS actions, got {actions.shape}")
    poses, grippers = {}, {}
    for arm in ARMS:
        block = actions[:, arm_block(arm)]
        reference = reference_poses[arm]
        target = np.tile(np.eye(4), (len(actions), 1, 1))
        target[:, :3, :3] = rotation_from_6d(block[:, 3:9]) @ reference[:3, :3]
        target[:, :3, 3] = reference[:3, 3] + block[:, :3]
        poses[arm] = target
        grippers[arm] = block[:, 9].copy()
    return poses, grippers


def poses_to_relative_actions(poses: dict[str, np.ndarray], grippers: dict[str, np.ndarray],
                              reference_poses: dict[str, np.ndarray]) -> np.ndarray:
    """Inverse of `relative_actions_to_poses`: (H, 4, 4) targets per arm → (H, 26) relative actions."""
    horizon = len(next(iter(poses.values())))
    actions = np.zeros((horizon, WALL_OSS_DIM))
    for arm in ARMS:
        reference = reference_poses[arm]
        relative_rotation = poses[arm][:, :3, :3] @ reference[:3, :3].T
        actions[:, arm_block(arm)] = np.concatenate(
            [poses[arm][:, :3, 3] - reference[:3, 3], rotation_to_6d(relative_rotation), grippers[arm][:, None]], axis=1)
    return actions
