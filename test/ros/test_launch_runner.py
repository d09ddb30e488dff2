"""The launch runner's supervision rules with real node processes: prefixed output, Ctrl-C → clean
exit 0, a dying node → the others stopped and exit 1, a bad launch file → exit 2."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import NodeProcess, stop_all, wait_for

from wall_oss_ros.launch_plan import plan_launch
from wall_oss_ros.launch_runner import LaunchRunner


def _write(tmp_path: Path, text: str, name: str = "test.launch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- running ----------------------------------------------------------------------------------------

SIM_NODES = """
launch:
- node:
    pkg: wall_oss
    exec: sim_arm_node
    name: {first}
    param: [{{name: camera_rate_hz, value: 0.0}}, {{name: joint_states_topic, value: /{first}/joint_states}}]
- node:
    pkg: wall_oss
    exec: sim_arm_node
    name: {second}
    param: [{{name: camera_rate_hz, value: 0.0}}, {{name: joint_states_topic, value: /{second}/joint_states}}]
"""


class _Runner:
    """`wall-oss launch` in its own process; collects its output lines on a thread."""

    def __init__(self, path: Path, *arguments: str):
        import threading

        self.process = subprocess.Popen([sys.executable, "-m", "wall_oss_ros.cli", "launch", str(path), *arguments],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True, env=os.environ.copy())
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(self.process.stdout.readline, "")),
                                        daemon=True)
        self._thread.start()

    def output(self) -> str:
        return "".join(self.lines)

    def pids(self) -> dict[str, int]:
        return {m.group(1).rsplit("/", 1)[-1]: int(m.group(2))
                for m in re.finditer(r"\[launch\] started (\S+) \(pid (\d+)\)", self.output())}

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._thread.join(5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def runner():
    started = []

    def start(path, *arguments):
        started.append(_Runner(path, *arguments))
        return started[-1]

    yield start
    for item in started:
        item.close()
        for pid in item.pids().values():  # a failed test must not leave nodes behind
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_ctrl_c_stops_every_node_and_exits_zero(tmp_path, ros_node, runner):
    from sensor_msgs.msg import JointState

    path = _write(tmp_path, SIM_NODES.format(first="sim_a", second="sim_b"))
    launched = runner(path)
    received = set()
    for name in ("sim_a", "sim_b"):
        ros_node.create_subscription(JointState, f"/{name}/joint_states", lambda _, n=name: received.add(n), 10)
    wait_for(lambda: received == {"sim_a", "sim_b"}, 30, poll=ros_node.spin_briefly,
             message="joint states from both launched nodes")
    wait_for(lambda: "[sim_a] [INFO]" in launched.output() and "[sim_b] [INFO]" in launched.output(), 10,
             message="node output prefixed with the node name")
    pids = launched.pids()
    os.killpg(launched.process.pid, signal.SIGINT)
    assert launched.process.wait(30) == 0, launched.output()
    assert not any(_alive(pid) for pid in pids.values())
    assert "interrupted; stopping all nodes" in launched.output()


def test_a_dying_node_stops_the_others_and_fails_the_launch(tmp_path, ros_node, runner):
    from sensor_msgs.msg import JointState

    path = _write(tmp_path, SIM_NODES.format(first="steady", second="doomed"))
    launched = runner(path)
    received = set()
    ros_node.create_subscription(JointState, "/doomed/joint_states", lambda _: received.add(1), 10)
    wait_for(lambda: received and len(launched.pids()) == 2, 30, poll=ros_node.spin_briefly,
             message="the launched nodes running")
    pids = launched.pids()
    os.killpg(pids["doomed"], signal.SIGKILL)
    assert launched.process.wait(30) == 1
    assert "node 'doomed' died (exit code -9); stopping the others" in launched.output()
    wait_for(lambda: not _alive(pids["steady"]), 5, message="the surviving node stopped")


def test_a_node_that_fails_at_startup_fails_the_launch(tmp_path, runner):
    path = _write(tmp_path, """
        launch:
        - node:
            pkg: wall_oss
            exec: sim_arm_node
            name: misconfigured
            param: [{name: initial_positions, value: [1.0]}]
        """)
    launched = runner(path)
    assert launched.process.wait(60) == 1
    assert "node 'misconfigured' died (exit code 2)" in launched.output()
    assert "[misconfigured] sim_arm_node: cannot start: initial_positions needs 14 finite values" in launched.output()


def test_bad_launch_file_exits_two_with_the_reason(tmp_path):
    path = _write(tmp_path, "launch:\n- arg: {name: a}\n")
    result = subprocess.run([sys.executable, "-m", "wall_oss_ros.cli", "launch", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "launch argument 'a' has no default" in result.stderr


# --- a node that hangs on SIGINT fails the shutdown check ------------------------------------------------

SIGNAL_SCRIPT = """\
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN if sys.argv[1] == "hang" else lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def test_the_runner_kills_a_node_that_ignores_sigint_and_tells_it_from_one_it_killed(tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    (prefix / "lib" / "tool_pkg").mkdir(parents=True)
    for name, mode in (("hangs", "hang"), ("stops", "stop"), ("crashes", "stop")):
        executable = prefix / "lib" / "tool_pkg" / name
        executable.write_text(f"#!{sys.executable}\nimport sys\nsys.argv[1:] = [{mode!r}]\n" + SIGNAL_SCRIPT)
        executable.chmod(0o755)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    path = _write(tmp_path, "launch:\n" + "".join(f"- node: {{pkg: tool_pkg, exec: {name}}}\n"
                                                for name in ("hangs", "stops", "crashes")))
    output = io.StringIO()
    runner = LaunchRunner(plan_launch(path), stream=output, shutdown_timeout=1.0)
    runner.start()
    try:
        wait_for(lambda: output.getvalue().count("] ready") == 3, 30, message="the three nodes up")
        runner.kill_node("crashes")
    finally:
        runner.stop()
    codes = {name: process.returncode for name, process in runner.processes.items()}
    assert codes == {"hangs": -9, "stops": 0, "crashes": -9}
    assert runner.killed == {"crashes"}  # the graph fixture accepts -9 only from these
    assert "hangs did not exit within 1 s of SIGINT; killing it" in output.getvalue()


def test_stopping_test_nodes_reports_one_that_does_not_exit_zero_on_sigint(tmp_path):
    script = tmp_path / "signal_node.py"
    script.write_text(SIGNAL_SCRIPT)
    nodes = [NodeProcess(script, mode, name=mode, log_dir=tmp_path) for mode in ("hang", "stop", "dead")]
    wait_for(lambda: all("ready" in node.log() for node in nodes), 30, message="the nodes up")
    nodes[2].kill()  # as a test that kills a node on purpose
    assert stop_all(nodes, timeout=1.0) == ["hang: -9"]
