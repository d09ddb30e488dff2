"""The shipped launch files under the real launch implementation (launch / launch_yaml / launch_ros 3.7.1 /
0.28.0), run as `ros2 launch wall_oss sim.launch.yaml` runs them on a full ROS install: from the colcon
install space (`colcon build --symlink-install`, `source install/setup.bash`), nodes started from
lib/wall_oss/<exec>, parameters through launch_ros, stopped by a terminal's Ctrl-C (two SIGINTs to the
whole process group, 10–50 ms apart)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, wait_for
from ros_install import ros2_launch_environment, wall_oss_install

# The first test of a session also builds the install (1–4 minutes on 2 cores, see ros_install.py).
pytestmark = pytest.mark.timeout(1200)
ROS2_LAUNCH = Path(__file__).with_name("ros2_launch.py")
URDF = REPO_ROOT / "urdf" / "wall_bimanual.urdf"
SIM_NODES = ("sim_arm_node", "policy_node", "chunk_executor_node", "safety_supervisor_node")


@pytest.fixture(scope="module")
def ros2_launch_env():
    return ros2_launch_environment(wall_oss_install(symlink=True))


class LaunchProcess:
    """`ros2 launch` in its own process group, as a terminal's foreground job."""

    def __init__(self, env: dict[str, str], log_path: Path, *arguments: str):
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (written until stop())
        self.process = subprocess.Popen([sys.executable, str(ROS2_LAUNCH), "wall_oss", *arguments], env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def terminal_ctrl_c(self, timeout: float = 60.0) -> int:
        """SIGINT to the foreground process group twice, 20 ms apart (what a terminal's Ctrl-C delivers)."""
        os.killpg(self.process.pid, signal.SIGINT)
        time.sleep(0.02)
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


def _exit_reports(log: str) -> dict[str, str]:
    """launch's last word per node process: 'finished cleanly' or 'died'."""
    pattern = r"\[(?:INFO|ERROR)\] \[([\w-]+)-\d+\]: process has (finished cleanly|died)"
    return dict(re.findall(pattern, log))


def test_sim_launch_moves_the_arm_and_stops_cleanly_on_ctrl_c(ros2_launch_env, ros_node, tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from wall_oss_core.sim.demo_trajectory import DEMO_INSTRUCTION

    launch = LaunchProcess(ros2_launch_env, tmp_path / "ros2_launch.log", "sim.launch.yaml", "use_rviz:=false",
                           "publish_robot_description:=true", f"robot_config:={REPO_ROOT / 'config' / 'bimanual.yaml'}",
                           f"urdf:={URDF}", "backend:=demonstration", "image_width:=64", "image_height:=48",
                           "camera_rate_hz:=10.0", "rate_hz:=100.0")
    try:
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        descriptions: list[String] = []
        ros_node.create_subscription(String, "/robot_description", descriptions.append, latched)
        positions: list[np.ndarray] = []
        ros_node.create_subscription(JointState, "/joint_states",
                                     lambda msg: positions.append(np.array(msg.position)), 10)
        ros_node.create_publisher(String, "/wall_oss/instruction", latched).publish(String(data=DEMO_INSTRUCTION))

        def moved() -> bool:
            return len(positions) > 1 and float(np.max(np.abs(positions[-1] - positions[0]))) > 0.05

        running = lambda: launch.process.poll() is None  # noqa: E731
        wait_for(lambda: (moved() and descriptions) or not running(), 90, poll=ros_node.spin_briefly,
                 message="the arm to move and /robot_description")
        assert running(), launch.log()
        assert moved(), launch.log()
        # robot_state_publisher got the URDF text unchanged, as a string (launch_ros `type: str`)
        assert descriptions[0].data.strip() == URDF.read_text().strip()
        log = launch.log()
        for node in SIM_NODES:  # started from the install space's lib/wall_oss, not with python -m
            assert re.search(rf"\[{node}-\d+\]: process started with pid", log), log

        returncode = launch.terminal_ctrl_c()
    finally:
        launch.kill()
    log = launch.log_path.read_text()
    assert returncode == 0, log
    reports = _exit_reports(log)
    for node in (*SIM_NODES, "robot_state_publisher"):
        assert reports.get(node) == "finished cleanly", f"{node}: {reports.get(node)}\n{log}"
    assert "Traceback" not in log, log


def test_robot_launch_comes_up_waiting_for_the_robot_and_stops_cleanly(ros2_launch_env, ros_node, tmp_path):
    """robot.launch.yaml with no robot: policy, executor, supervisor and robot_state_publisher start from the
    install space and wait for joint states; the terminal's Ctrl-C stops them all cleanly."""
    launch = LaunchProcess(ros2_launch_env, tmp_path / "ros2_launch.log", "robot.launch.yaml", "backend:=demonstration",
                           "publish_robot_description:=true", "namespace:=robot_check")
    expected = {("policy", "/robot_check"), ("chunk_executor", "/robot_check"),
                ("safety_supervisor", "/robot_check"), ("robot_state_publisher", "/")}
    try:
        wait_for(lambda: expected <= set(ros_node.get_node_names_and_namespaces())
                 or launch.process.poll() is not None, 60, poll=ros_node.spin_briefly, message="the robot graph")
        assert launch.process.poll() is None, launch.log()
        returncode = launch.terminal_ctrl_c()
    finally:
        launch.kill()
    log = launch.log_path.read_text()
    assert returncode == 0, log
    reports = _exit_reports(log)
    for node in ("policy_node", "chunk_executor_node", "safety_supervisor_node", "robot_state_publisher"):
        assert reports.get(node) == "finished cleanly", f"{node}: {reports.get(node)}\n{log}"
    assert "Traceback" not in log, log
