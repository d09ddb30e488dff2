"""`colcon build` (plain and --symlink-install) of wall_oss against the venv's ROS 2 wheels, as a ROS
workspace builds it: executables, share files and Python packages in the install space, a node started
from it and seen over DDS, the wall-oss CLI on PATH, and `colcon test` running pytest on the install."""
from __future__ import annotations

import os
import signal
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest
from conftest import wait_for
from ros_install import NODE_EXECUTABLES, colcon, sourced_environment, wall_oss_install

# The first test of a session also builds the install (1–4 minutes on 2 cores, see ros_install.py).
pytestmark = pytest.mark.timeout(1200)
SHARE_FILES = ("package.xml", "launch/sim.launch.yaml", "launch/graph.launch.yaml", "launch/robot.launch.yaml",
               "config/bimanual.yaml", "config/policy_node.params.yaml", "config/fastdds.xml",
               "config/wall_oss.rviz", "urdf/wall_bimanual.urdf", "msg/ActionChunk.msg", "msg/SafetyStatus.msg")
# What `colcon test` runs in CI: a documented subset (ROS-free core tests and message conversions on the
# installed packages); a ROS user's `colcon test` runs the whole suite (WALL_OSS_TEST_PATHS defaults to test).
COLCON_TEST_SUBSET = "test/robot/test_core_basics.py;test/ros/test_conversions.py"


@pytest.fixture(scope="module", params=[False, True], ids=["copy", "symlink"])
def install(request):
    symlink = request.param
    workspace = wall_oss_install(symlink, *([] if symlink else [f"-DWALL_OSS_TEST_PATHS={COLCON_TEST_SUBSET}"]))
    return workspace, sourced_environment(workspace / "install" / "setup.bash")


def test_install_space_layout(install):
    workspace, _ = install
    prefix = workspace / "install" / "wall_oss"
    for executable in NODE_EXECUTABLES:
        path = prefix / "lib" / "wall_oss" / executable
        assert path.exists() and os.access(path.resolve(), os.X_OK), f"{path} is not executable"
    assert os.access((prefix / "bin" / "wall-oss").resolve(), os.X_OK)
    for name in SHARE_FILES:
        assert (prefix / "share" / "wall_oss" / name).is_file(), name
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "wall_oss").is_file()


def test_installed_python_packages_import_from_the_install_space(install):
    workspace, env = install
    result = subprocess.run(
        ["python3", "-c", "import wall_oss_core, wall_oss_ros, wall_oss.msg\n"
         "from ament_index_python.packages import get_package_share_directory as share\n"
         "for module in (wall_oss_core, wall_oss_ros, wall_oss.msg): print(module.__file__)\n"
         "print(share('wall_oss'))"], env=env, cwd=workspace, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.split():
        assert line.startswith(str(workspace / "install" / "wall_oss")), result.stdout


def test_installed_cli_is_on_path(install):
    workspace, env = install
    result = subprocess.run(["wall-oss", "launch", "sim.launch.yaml", "--show-args"], env=env, cwd=workspace,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "use_rviz:=" in result.stdout


def test_installed_node_runs_over_dds(install, ros_node, tmp_path):
    """`ros2 run wall_oss safety_supervisor_node` is lib/wall_oss/safety_supervisor_node run directly; its
    default robot config resolves from the install space."""
    workspace, env = install
    executable = workspace / "install" / "wall_oss" / "lib" / "wall_oss" / "safety_supervisor_node"
    log = tmp_path / "supervisor.log"
    with open(log, "w") as output:
        process = subprocess.Popen([str(executable), "--ros-args", "-r", "__ns:=/colcon_check"], env=env,
                                   cwd=workspace, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: ("safety_supervisor", "/colcon_check") in ros_node.get_node_names_and_namespaces()
                 or process.poll() is not None, 60, poll=ros_node.spin_briefly, message="the installed node")
        assert process.poll() is None, log.read_text()
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_colcon_test_runs_pytest_on_the_install(install):
    workspace, _ = install
    if (workspace / "install" / "wall_oss" / "lib" / "wall_oss" / "policy_node").is_symlink():
        pytest.skip("colcon test is checked once, on the plain install")
    colcon(workspace, "test", "--base-paths", "src", timeout=1200)
    result_file = workspace / "build" / "wall_oss" / "test_results" / "wall_oss" / "pytest.xml"
    suite = ElementTree.parse(result_file).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, failures, errors = (int(suite.get(key)) for key in ("tests", "failures", "errors"))
    assert tests >= 10 and failures == 0 and errors == 0, ElementTree.tostring(suite)[:2000]
