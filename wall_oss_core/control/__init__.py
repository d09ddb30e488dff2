"""Turning chunks into safe joint commands: interpolation, the chunk executor, the safety supervisor.
May import: robot, policy (Chunk, action spaces). Never model, data, sim or evaluation."""
