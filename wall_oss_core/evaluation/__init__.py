"""Open-loop evaluation of a policy against a recorded bag, its report, and comparison of two runs.
May import: robot, policy, control, data, backends. Never sim or cli."""
