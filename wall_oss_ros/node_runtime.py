"""What every wall_oss node process does the same way: start, spin, report, stop.

A configuration problem found while the node is constructed (bad parameter, missing file, bad
checkpoint) exits with STARTUP_ERROR_EXIT and one clear line; Ctrl-C exits 0 without a traceback.
SingleThreadedExecutor only: rclpy 9.1.2's MultiThreadedExecutor stalls on this platform."""
from __future__ import annotations

import sys
from typing import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

STARTUP_ERROR_EXIT = 2
STARTUP_ERRORS = (ValueError, FileNotFoundError, ParameterException, RuntimeError)


def run_node(make_node: Callable[[], Node], name: str, args=None) -> int:
    """Construct the node (startup errors → exit 2), spin it until Ctrl-C or shutdown, clean up."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except STARTUP_ERRORS as error:
        print(f"{name}: cannot start: {error}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return STARTUP_ERROR_EXIT
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def diagnostic_array(node: Node, status_name: str, level: bytes, message: str, values) -> DiagnosticArray:
    """A one-status /diagnostics message; `values` is an iterable of (key, value) pairs."""
    status = DiagnosticStatus(level=level, name=f"{node.get_fully_qualified_name()}: {status_name}",
                              message=message, hardware_id="wall_oss",
                              values=[KeyValue(key=str(key), value=str(value)) for key, value in values])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg
