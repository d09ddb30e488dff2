"""markers_node: the running graph as rviz markers (`markers`, visualization_msgs/MarkerArray).

Subscribes to `action_chunk`, `/joint_states` and `safety_status`; publishes, at `publish_rate`, the
scene of `wall_oss_core.visualization.markers.MarkerScene` in the robot's base frame: predicted EE path per arm
(LINE_STRIP, per-point colors by time), executed path, workspace boxes (CUBE, red on a limit hit)
and the safety text (TEXT_VIEW_FACING).
"""
from __future__ import annotations

import sys

from geometry_msgs.msg import Point
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray
from wall_oss.msg import ActionChunk, SafetyStatus

from wall_oss_core import topics
from wall_oss_core.policy.observation import JointStateMerger
from wall_oss_core.robot.config import default_config_path, load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.visualization.markers import BoxMarker, MarkerScene, PathMarker, Rgba, SafetyView, TextMarker
from wall_oss_ros.conversions import merge_joint_state, msg_to_chunk
from wall_oss_ros.graph import CHUNK_QOS, JOINT_STATES_QOS, STATUS_QOS
from wall_oss_ros.node_runtime import run_node


def _color(rgba: Rgba) -> ColorRGBA:
    return ColorRGBA(r=float(rgba.r), g=float(rgba.g), b=float(rgba.b), a=float(rgba.a))


def _point(xyz) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def to_marker(item, frame_id: str, stamp) -> Marker:
    """One core marker → visualization_msgs/Marker."""
    marker = Marker()
    marker.header.frame_id = frame_id
    marker.header.stamp = stamp
    marker.ns, marker.id, marker.action = item.namespace, item.id, Marker.ADD
    marker.pose.orientation.w = 1.0
    if isinstance(item, PathMarker):
        marker.type = Marker.LINE_STRIP
        marker.scale.x = item.width
        marker.points = [_point(p) for p in item.points]
        marker.colors = [_color(c) for c in item.colors]
        marker.color = _color(item.colors[-1])
    elif isinstance(item, BoxMarker):
        marker.type = Marker.CUBE
        marker.pose.position = _point(item.center)
        marker.scale.x, marker.scale.y, marker.scale.z = (float(v) for v in item.size)
        marker.color = _color(item.color)
    elif isinstance(item, TextMarker):
        marker.type = Marker.TEXT_VIEW_FACING
        marker.pose.position = _point(item.position)
        marker.scale.z = item.height
        marker.text = item.text
        marker.color = _color(item.color)
    return marker


class MarkersNode(Node):
    def __init__(self):
        super().__init__("markers")
        self.declare_parameter("robot_config", str(default_config_path()),
                               ParameterDescriptor(read_only=True, description="robot layout YAML"))
        self.declare_parameter("publish_rate", 10.0, ParameterDescriptor(read_only=True,
            description="marker publishing rate [Hz]",
            floating_point_range=[FloatingPointRange(from_value=0.5, to_value=60.0)]))
        self.declare_parameter("executed_path_length", 300, ParameterDescriptor(read_only=True,
            description="joint states kept for the executed path", integer_range=[IntegerRange(from_value=2,
                                                                                                 to_value=100000)]))
        self.declare_parameter("joint_states_topic", topics.JOINT_STATES, ParameterDescriptor(read_only=True, description="joint states"))
        robot = load_robot_config(self.get_parameter("robot_config").value)
        self.frame_id = robot.base_frame
        self.joint_names = robot.command_joints
        self.joint_states = JointStateMerger(self.joint_names)
        self.scene = MarkerScene(BimanualKinematics(robot), int(self.get_parameter("executed_path_length").value))
        self.rejected = 0
        self.publisher = self.create_publisher(MarkerArray, topics.MARKERS, STATUS_QOS)
        self.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._on_chunk, CHUNK_QOS)
        self.create_subscription(JointState, self.get_parameter("joint_states_topic").value, self._on_joints,
                                 JOINT_STATES_QOS)
        self.create_subscription(SafetyStatus, topics.SAFETY_STATUS, self._on_safety, STATUS_QOS)
        self.create_timer(1.0 / float(self.get_parameter("publish_rate").value), self._publish)

    def _reject(self, what: str, error: Exception):
        self.rejected += 1
        self.get_logger().warning(f"ignored {what}: {error}", throttle_duration_sec=2.0)

    def _on_joints(self, msg: JointState):
        try:
            merged = merge_joint_state(self.joint_states, msg, self.get_clock().now().nanoseconds * 1e-9)
        except ValueError as error:
            self._reject("joint state", error)
            return
        if merged is not None:
            self.scene.add_joint_state(merged[1], merged[0])

    def _on_chunk(self, msg: ActionChunk):
        try:
            self.scene.set_chunk(msg_to_chunk(msg))
        except (ValueError, KeyError) as error:
            self._reject("action chunk", error)

    def _on_safety(self, msg: SafetyStatus):
        self.scene.set_safety(SafetyView(msg.state_name, msg.reason, tuple(msg.active_limits),
                                         int(msg.commands_passed), int(msg.commands_modified),
                                         int(msg.commands_rejected)))

    def _publish(self):
        """Each array first clears what rviz shows, then draws the scene: a path or box that is gone from
        the scene (a dropped chunk, a shorter path) does not linger as a stale marker."""
        stamp = self.get_clock().now().to_msg()
        clear = Marker(action=Marker.DELETEALL)
        clear.header.frame_id, clear.header.stamp = self.frame_id, stamp
        self.publisher.publish(MarkerArray(markers=[clear, *(to_marker(item, self.frame_id, stamp)
                                                             for item in self.scene.markers())]))


def main(args=None) -> int:
    return run_node(MarkersNode, "markers_node", args)


if __name__ == "__main__":
    sys.exit(main())
