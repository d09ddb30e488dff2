"""Shared test fixtures: an isolated ROS domain per test session, real node processes, deadlines.

Every pytest session picks its own ROS_DOMAIN_ID (and keeps discovery on localhost) before rclpy is
imported anywhere, so concurrent test runs on one machine never see each other's topics.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "config"
ROBOT_CONFIG = CONFIG_DIR / "bimanual.yaml"

os.environ["ROS_DOMAIN_ID"] = os.environ.get("WALL_OSS_TEST_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(CONFIG_DIR / "fastdds.xml")
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")


def wait_for(condition, timeout: float, poll=None, interval: float = 0.02, message: str = "condition"):
    """Call `poll()` (e.g. spinning a test node) until `condition()` is true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if poll is not None:
            poll()
        else:
            time.sleep(interval)
    if condition():
        return
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {message}")


class NodeProcess:
    """A wall_oss node (or any module) in its own process, with its log kept for failure reports."""

    def __init__(self, module: str | Path, *args: str, name: str | None = None, params: dict | None = None,
                 params_file: Path | None = None, log_dir: Path):
        """`module` is a module name (run with -m) or the Path of a script (an installed executable)."""
        if isinstance(module, Path):
            self.name = name or module.name
            command = [sys.executable, str(module), *args, "--ros-args"]
        else:
            self.name = name or module.rsplit(".", 1)[-1]
            command = [sys.executable, "-m", module, *args, "--ros-args"]
        if params_file is not None:
            command += ["--params-file", str(params_file)]
        for key, value in (params or {}).items():
            command += ["-p", f"{key}:={_param_literal(value)}"]
        self.log_path = log_dir / f"{self.name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (the node writes to it until stop())
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=os.environ.copy())

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self):
        """SIGKILL, as a crashed node would die."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (Ctrl-C) and wait; escalates to SIGKILL if the node does not exit."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode


def _param_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'"
    return repr(value)


@pytest.fixture
def node_processes(tmp_path, request):
    """Factory for NodeProcess; stops them all at the end and prints the logs of a failed test."""
    started: list[NodeProcess] = []

    def start(module: str, *args: str, **kwargs) -> NodeProcess:
        node = NodeProcess(module, *args, log_dir=tmp_path, **kwargs)
        started.append(node)
        return node

    yield start
    unclean = stop_all(reversed(started))
    report = getattr(request.node, "rep_call", None)
    if unclean or (report is not None and report.failed):
        for node in started:
            sys.stderr.write(f"\n----- log of {node.name} -----\n{node.log()}\n")
    if unclean:
        pytest.fail(f"nodes that did not exit 0 on SIGINT: {unclean}", pytrace=False)


def stop_all(nodes, timeout: float = 10.0) -> list[str]:
    """Stop every node; returns `name: exit code` for each one that was running and did not exit 0 on SIGINT
    within `timeout` (a node that hangs on Ctrl-C ends SIGKILLed, -9). Nodes that had already exited
    (killed by the test, failed at startup) are the test's business."""
    unclean = []
    for node in nodes:
        running = node.alive()
        code = node.stop(timeout)
        if running and code != 0:
            unclean.append(f"{node.name}: {code}")
    return unclean


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the test item (used to print node logs on failure)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def ros_node():
    """An rclpy context + node in the test process (real DDS), and a spin helper for `wait_for`."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("wall_oss_test_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    node.spin_briefly = lambda: executor.spin_once(timeout_sec=0.01)
    yield node
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)
