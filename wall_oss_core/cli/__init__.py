"""The ROS-free wall-oss subcommands (infer, make-checkpoint, eval, export-dataset, stats).
May import anything in wall_oss_core; nothing imports cli."""
