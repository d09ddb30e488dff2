"""Spinning a node until Ctrl-C / SIGTERM without an exception ever landing inside an rclpy call.

rclpy's own SIGINT handler (or Python's KeyboardInterrupt) interrupts whatever the executor is doing;
caught inside `take_message` it surfaces as "RuntimeError: Unable to convert call argument" and the
node dies with a traceback and exit code 1 on an ordinary Ctrl-C. Here the signal only sets an event
and the spin loop notices it between callbacks, so shutdown is always the normal path.

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = install_stop_signals()
    ...
    spin_until_stopped(executor, stop)
"""
from __future__ import annotations

import signal
import threading


def install_stop_signals() -> threading.Event:
    """SIGINT and SIGTERM set the returned event (also when the process inherited SIGINT as ignored,
    as a process started in the background by a shell does)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def spin_until_stopped(executor, stop: threading.Event, period: float = 0.1) -> None:
    """Run callbacks until `stop` is set or the executor's context shuts down."""
    while not stop.is_set() and executor.context.ok():
        executor.spin_once(timeout_sec=period)
