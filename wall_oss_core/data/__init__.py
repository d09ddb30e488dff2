"""Recorded data: rosbag2 reading and message types, timed playback, bag → observations, LeRobot v3.0 export.
May import: robot, policy. Never backends, evaluation, sim or cli."""
