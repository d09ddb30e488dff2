"""Wall-OSS on bimanual arms, without ROS: robot, policy, control, model, data, backends, evaluation, sim, cli.

Layers, lowest first (a subpackage imports only from those before it): paths / topics → robot → policy →
control → model → data → backends → evaluation → sim / visualization → cli. No module here imports rclpy.
"""
