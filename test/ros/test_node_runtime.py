"""How every node process stops: a terminal's Ctrl-C under `ros2 launch` reaches each node as SIGINT
twice within milliseconds, and the node must still exit 0."""
import os
import signal
import time

import pytest
from conftest import wait_for


@pytest.mark.parametrize("module", ["wall_oss_ros.safety_supervisor_node", "wall_oss_ros.chunk_executor_node"])
def test_a_second_sigint_while_stopping_still_exits_zero(node_processes, module):
    node = node_processes(module, "--ros-args", "-r", "__ns:=/double_sigint")
    wait_for(lambda: "joints at" in node.log() or not node.alive(), 30, message="the node up")
    assert node.alive(), node.log()
    os.kill(node.process.pid, signal.SIGINT)
    for _ in range(8):  # the repeats a terminal and ros2 launch deliver, spread over the node's shutdown
        time.sleep(0.01)
        if node.process.poll() is None:
            os.kill(node.process.pid, signal.SIGINT)
    assert node.process.wait(15) == 0, node.log()

