"""The Wall-OSS model: configuration, MoT decoder, checkpoint files and loading, processing, normalization, pipeline.
May import: torch, transformers, safetensors, and policy.action_space (action names). Never backends, data or ROS."""
