"""How a ROS 2 install runs the package: the executables CMake installs from scripts/node_entry.py.in
(`ros2 run wall_oss <node>` runs that file as a script, not with `python -m`)."""
from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from conftest import REPO_ROOT, wait_for

ENTRY_TEMPLATE = REPO_ROOT / "scripts" / "node_entry.py.in"


def configured_entry(node: str, directory: Path) -> Path:
    """The file CMake's configure_file(... @ONLY) makes of the template for `node`."""
    path = directory / node
    path.write_text(ENTRY_TEMPLATE.read_text().replace("@node@", node).replace("@module@", node))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_entry_template_is_committed_executable():
    """configure_file copies the template's mode, and colcon --symlink-install links to that copy."""
    mode = subprocess.run(["git", "ls-files", "-s", "scripts/node_entry.py.in"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True).stdout.split()[0]
    assert mode == "100755"


def test_installed_sim_entry_starts_its_spawned_camera_process(ros_node, node_processes, tmp_path):
    """The sim's camera renderer is a spawn-started process, which re-imports the main script: the
    entry script must not run the node again when imported."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    sim = node_processes(configured_entry("sim_arm_node", tmp_path),
                         params={"camera_rate_hz": 10.0, "image_width": 64, "image_height": 48})
    frames = []
    ros_node.create_subscription(Image, "/cameras/face/image_raw", frames.append, qos_profile_sensor_data)
    wait_for(lambda: frames or not sim.alive(), 30, poll=ros_node.spin_briefly, message="a camera frame")
    assert sim.alive(), sim.log()
    assert (frames[0].width, frames[0].height) == (64, 48)
