"""Policy backends behind policy.interface.Policy: the Wall-OSS model and replay of recorded chunks.
May import: robot, policy, model, data. Never control, evaluation, sim or cli."""
