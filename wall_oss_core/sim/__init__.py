"""Simulation: the ALOHA scene in MuJoCo, tasks and their progress score, the scripted expert, ROS-free episodes,
expert demonstrations (bags → dataset) and the ROS-free closed-loop evaluation; the kinematic bimanual arm.
May import: robot, policy, control, data (bag types, dataset export), backends, evaluation (closed-loop summaries).
Never cli."""
