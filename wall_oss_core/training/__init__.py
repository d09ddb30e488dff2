"""Training Wall-OSS checkpoints: the reference flow objective, LeRobot v3.0 dataset samples, the training loop.
May import: model, data, policy, robot (and torch, numpy, peft, pyarrow, av). Never backends, evaluation, sim or ROS."""
