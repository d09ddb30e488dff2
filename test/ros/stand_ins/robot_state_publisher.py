#!/usr/bin/env python3
"""Test stand-in for robot_state_publisher (a C++ package with no wheel here): installed as
lib/robot_state_publisher/robot_state_publisher, it takes its `robot_description` parameter the way the
real one does (a string, read once) and republishes it on /robot_description, transient local, as the
real one does, so a test sees exactly what launch_ros handed over. It publishes no TF."""
import signal
import sys
import threading

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String


def main() -> int:
    stop = threading.Event()  # every SIGINT/SIGTERM (a terminal's Ctrl-C under launch sends several) just stops
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rclpy.init(args=sys.argv, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("robot_state_publisher")
    description = node.declare_parameter("robot_description", "").get_parameter_value().string_value
    if not description:
        node.get_logger().error("parameter robot_description (URDF text) is empty")
        return 1
    publisher = node.create_publisher(String, "robot_description",
                                      QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    publisher.publish(String(data=description))
    while not stop.is_set():
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
