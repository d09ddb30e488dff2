"""Robot description: the robot config (arms, joints, limits, controllers, cameras) and Pinocchio kinematics.
May import: wall_oss_core.paths, numpy, pinocchio, yaml. Nothing else of wall_oss_core."""
