"""Startup check that each controller's `joints` parameter lists the joints the robot config commands it
with, in the same order (asked from the controller node's get_parameters service, as
`ros2 param get /<controller> joints` would). Until a controller passed, it gets no command."""
from __future__ import annotations

from rcl_interfaces.srv import GetParameters
from rclpy.node import Node

from wall_oss_core.robot.config import controller_joints_mismatch


class ControllerJointsCheck:
    def __init__(self, node: Node, controllers: dict[str, tuple[str, ...]], poll_period: float = 0.2):
        self._node = node
        self._expected = dict(controllers)
        self._clients = {name: node.create_client(GetParameters, f"/{name}/get_parameters") for name in controllers}
        self._pending: dict[str, object] = {}
        self.passed: set[str] = set()
        self.failed: dict[str, str] = {}
        self._timer = node.create_timer(poll_period, self._poll)

    def _poll(self):
        for name, client in self._clients.items():
            if name in self.passed or name in self.failed:
                continue
            future = self._pending.get(name)
            if future is None:
                if client.service_is_ready():
                    self._pending[name] = client.call_async(GetParameters.Request(names=["joints"]))
                else:
                    self._node.get_logger().warning(
                        f"no command to {name} until its joints are verified: waiting for /{name}/get_parameters",
                        throttle_duration_sec=5.0)
            elif future.done():
                del self._pending[name]
                self._judge(name, future.result())
        if len(self.passed) + len(self.failed) == len(self._clients):
            self._timer.cancel()

    def _judge(self, name: str, response):
        values = list(response.values) if response is not None else []
        declared = tuple(values[0].string_array_value) if values else ()
        problem = controller_joints_mismatch(name, self._expected[name], declared)
        if problem is None:
            self.passed.add(name)
            self._node.get_logger().info(f"controller {name}: joints verified")
        else:
            self.failed[name] = problem
            self._node.get_logger().error(f"{problem}; {name} gets no commands")
