"""The Wall-OSS relative end-effector convention pinned by a case worked by hand (not by its own inverse):
position delta in the base frame, R_rel = R · R_refᵀ, 6D = the top two rows of R_rel."""
import numpy as np

from wall_oss_core.policy import action_space as aspace

RZ90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # reference orientation of the left arm
RX90 = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # the rotation the left arm makes


def _pose(rotation, position):
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, position
    return pose


REFERENCE = {"left": _pose(RZ90, [0.3, 0.1, 0.2]), "right": _pose(np.eye(3), [0.3, -0.1, 0.2])}
# left target: R = RX90 · RZ90 worked out by hand, moved +5 cm in base x and −5 cm in base y
LEFT_TARGET = _pose([[0, -1, 0], [0, 0, -1], [1, 0, 0]], [0.35, 0.05, 0.2])
# by hand: base-frame delta (0.05, −0.05, 0) (in the reference frame it would be (−0.05, −0.05, 0));
# top two rows of RX90 (its first two columns would be 1 0 0 0 0 1; R_refᵀ·R would give other rows)
LEFT_ACTION = [0.05, -0.05, 0.0, 1, 0, 0, 0, 0, -1, 0.02]
RIGHT_ACTION = [0, 0, 0, 1, 0, 0, 0, 1, 0, 0.04]  # the right arm stays: zero delta, identity rows


def test_relative_action_of_a_hand_worked_pose():
    actions = aspace.poses_to_relative_actions({"left": LEFT_TARGET[None], "right": REFERENCE["right"][None]},
                                               {"left": np.array([0.02]), "right": np.array([0.04])}, REFERENCE)
    np.testing.assert_allclose(actions[0], LEFT_ACTION + RIGHT_ACTION + [0] * 6, atol=1e-12)


def test_hand_worked_relative_action_to_pose():
    poses, grippers = aspace.relative_actions_to_poses(np.array([LEFT_ACTION + RIGHT_ACTION + [0] * 6]), REFERENCE)
    np.testing.assert_allclose(poses["left"][0], LEFT_TARGET, atol=1e-12)
    np.testing.assert_allclose(poses["right"][0], REFERENCE["right"], atol=1e-12)
    assert grippers["left"][0] == 0.02 and grippers["right"][0] == 0.04


def test_absolute_state_layout_by_hand():
    state = aspace.ee_state_vector({"left": LEFT_TARGET, "right": REFERENCE["right"]}, {"left": 0.02, "right": 0.04})
    # left: xyz, top two rows of R, gripper; then right; then the 6 unused dims
    np.testing.assert_allclose(state, [0.35, 0.05, 0.2, 0, -1, 0, 0, 0, -1, 0.02,
                                       0.3, -0.1, 0.2, 1, 0, 0, 0, 1, 0, 0.04] + [0] * 6, atol=1e-12)
