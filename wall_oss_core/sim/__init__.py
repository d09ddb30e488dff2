"""Simulation: the kinematic bimanual arm with its OpenCV renderer and the scripted demonstration.
May import: robot, policy, control (interpolation), backends.replay. Never evaluation or cli."""
