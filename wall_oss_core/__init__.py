"""Wall-OSS on bimanual arms: ROS-free core (model, processing, kinematics, execution, safety)."""
