"""rviz content as plain data: predicted / executed end-effector paths, workspace boxes, safety state.
May import: robot, policy.interface."""
