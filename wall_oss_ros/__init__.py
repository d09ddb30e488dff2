"""Thin rclpy nodes and the wall-oss command around wall_oss_core."""
