"""What every wall_oss node process does the same way: start, spin, report, stop.

A configuration problem found while the node is constructed (bad parameter, missing file, bad
checkpoint) exits with STARTUP_ERROR_EXIT and one clear line. Ctrl-C / SIGTERM exit 0: the signal
only sets an event that the spin loop checks between callbacks. (rclpy's own SIGINT handling
interrupts whatever the executor is doing; caught inside `take_message` it surfaces as
"RuntimeError: Unable to convert call argument" and the node dies with exit code 1.)
Nodes run on the EventsExecutor driven by spin_once: about a third of SingleThreadedExecutor's CPU per
message here, which is what lets a 2-core machine hold the command rate (rclpy 9.1.2's
MultiThreadedExecutor stalls on this platform; EventsExecutor.spin() does not return on a signal)."""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import TypeVar

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from wall_oss_core import topics
from wall_oss_core.policy.instruction import InstructionDeliveries
from wall_oss_ros.graph import INSTRUCTION_SUBSCRIPTION_QOS

Params = TypeVar("Params")
STARTUP_ERROR_EXIT = 2
STARTUP_ERRORS = (ValueError, FileNotFoundError, ParameterException, RuntimeError)


def install_stop_signals() -> threading.Event:
    """SIGINT and SIGTERM set the returned event (also when the process inherited SIGINT as ignored,
    as a process started in the background by a shell does). Call after rclpy.init with
    `signal_handler_options=SignalHandlerOptions.NO`."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def spin_until_stopped(executor, stop: threading.Event, period: float = 0.1) -> None:
    """Run callbacks until `stop` is set or the executor's context shuts down."""
    while not stop.is_set() and executor.context.ok():
        executor.spin_once(timeout_sec=period)


def ignore_further_stop_signals() -> None:
    """A terminal's Ctrl-C under `ros2 launch` delivers SIGINT twice within milliseconds. Python's
    finalization resets its own handlers to the default one (which kills with SIGINT, rc 130) but leaves an
    ignored signal ignored, so a stopping node ignores the signals that follow the first."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def make_executor(context=None):
    """EventsExecutor where this rclpy has it (Kilted; Jazzy from rclpy 7.1.4), else SingleThreadedExecutor."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


def run_node(make_node: Callable[[], Node], name: str, args=None) -> int:
    """Construct the node (startup errors → exit 2), spin it until Ctrl-C or shutdown, clean up
    (nodes release their threads and processes in `destroy_node`)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = install_stop_signals()
    try:
        return _construct_and_spin(make_node, name, stop)
    finally:
        ignore_further_stop_signals()


def _construct_and_spin(make_node: Callable[[], Node], name: str, stop: threading.Event) -> int:
    try:
        node = make_node()
    except STARTUP_ERRORS as error:
        print(f"{name}: cannot start: {error}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return STARTUP_ERROR_EXIT
    executor = make_executor()
    executor.add_node(node)
    try:
        spin_until_stopped(executor, stop)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def subscribe_instructions(node: Node, callback: Callable[[String], None], topic: str = topics.INSTRUCTION) -> None:
    """Instructions from latched (transient-local) and plain (volatile, e.g. `ros2 topic pub`) publishers
    alike: one subscription of each durability, each message passed to `callback` in order (see
    InstructionDeliveries for which subscription counts when)."""
    deliveries = InstructionDeliveries()
    for qos in INSTRUCTION_SUBSCRIPTION_QOS:
        latched = qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
        node.create_subscription(
            String, topic, lambda msg, latched=latched: callback(msg) if deliveries.accept(latched) else None, qos)


def declare_dataclass_parameters(node: Node, params_type: type[Params],
                                 descriptions: dict[str, tuple[str, FloatingPointRange | IntegerRange | None]]
                                 ) -> Params:
    """Declare one parameter per field of a parameters dataclass — default from the dataclass,
    description and range from `descriptions` — and return the dataclass filled with the values.
    rclpy refuses out-of-range values before the node does anything. A tuple field is a double array
    (an empty default cannot carry the array type)."""
    defaults = params_type()
    values = {}
    for field_info in fields(params_type):
        description, value_range = descriptions[field_info.name]
        descriptor = ParameterDescriptor(description=description, read_only=True)
        if isinstance(value_range, FloatingPointRange):
            descriptor.floating_point_range = [value_range]
        elif isinstance(value_range, IntegerRange):
            descriptor.integer_range = [value_range]
        default = getattr(defaults, field_info.name)
        if isinstance(default, tuple):
            value = node.declare_parameter(field_info.name, Parameter.Type.DOUBLE_ARRAY, descriptor).value
            values[field_info.name] = tuple(float(v) for v in (value or ()))
        else:
            values[field_info.name] = node.declare_parameter(field_info.name, default, descriptor).value
    return params_type(**values)
