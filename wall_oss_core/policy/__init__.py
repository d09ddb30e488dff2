"""What crosses the policy boundary: Observation / Chunk / Policy, action spaces, and assembling observations
from camera frames, joint states and instructions. May import: robot. Never control, model, data or ROS."""
