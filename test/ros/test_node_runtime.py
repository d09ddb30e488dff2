"""How every node process stops: a terminal's Ctrl-C under `ros2 launch` reaches each node as SIGINT
twice within milliseconds, and the node must still exit 0."""
import os
import signal
import sys
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



@pytest.mark.parametrize("module, node_name, parameter, value", [
    ("wall_oss_ros.safety_supervisor_node", "safety_supervisor", "command_rate", 100.0),
    ("wall_oss_ros.chunk_executor_node", "chunk_executor", "rate_hz", 100.0),
    ("wall_oss_ros.sim_arm_node", "sim_arm", "physics_rate_hz", 100.0),
])
def test_parameter_changes_at_runtime_are_refused(node_processes, ros_node, module, node_name, parameter, value):
    """Parameters are read once at startup: `ros2 param set` gets a refusal instead of silently doing nothing."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    node_processes(module, "--ros-args", "-r", f"__node:={node_name}", "-r", "__ns:=/read_only",
                   "-p", "camera_rate_hz:=0.0")
    client = ros_node.create_client(SetParameters, f"/read_only/{node_name}/set_parameters")
    wait_for(client.service_is_ready, 30, poll=ros_node.spin_briefly, message="the set_parameters service")
    future = client.call_async(SetParameters.Request(parameters=[Parameter(parameter, value=value).to_parameter_msg()]))
    wait_for(future.done, 10, poll=ros_node.spin_briefly, message="the set_parameters response")
    result = future.result().results[0]
    assert not result.successful and "read-only" in result.reason


@pytest.mark.parametrize("has_events_executor", [True, False])
def test_make_executor_binds_the_context_and_falls_back_without_events_executor(monkeypatch, has_events_executor):
    """Jazzy's rclpy before 7.1.4 has no rclpy.experimental.EventsExecutor: SingleThreadedExecutor then."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from wall_oss_ros.node_runtime import make_executor

    if not has_events_executor:
        monkeypatch.setitem(sys.modules, "rclpy.experimental", None)  # import fails as on an older rclpy
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        executor = make_executor(context)
        assert executor.context is context
        assert isinstance(executor, SingleThreadedExecutor) != has_events_executor
        executor.shutdown()
    finally:
        rclpy.shutdown(context=context)
