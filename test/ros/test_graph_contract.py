"""The graph contract (wall_oss_ros.graph, wall_oss_core.topics): one definition of each QoS profile and
topic name, and a /diagnostics builder every node uses."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from wall_oss_core import topics

NODE_SOURCES = sorted((REPO_ROOT / "wall_oss_ros").glob("*.py"))
# The recorder mirrors whatever QoS the recorded publishers offer, and live replay re-offers a bag's recorded
# profiles: their QoS comes from the data, not from the graph contract.
QOS_FROM_DATA = {"recorder.py", "live_replay.py"}
GRAPH_TOPICS = {topics.JOINT_STATES, topics.ACTION_CHUNK, topics.INSTRUCTION, topics.CANDIDATE_COMMAND,
                topics.SAFETY_STATUS, topics.ESTOP, topics.ESTOP_HEARTBEAT, topics.MARKERS, topics.DIAGNOSTICS}


def _calls(path: Path, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


@pytest.mark.parametrize("path", [p for p in NODE_SOURCES if p.name not in QOS_FROM_DATA | {"graph.py"}],
                         ids=lambda p: p.name)
def test_qos_profiles_are_built_only_in_the_graph_module(path):
    assert not _calls(path, "QoSProfile"), f"{path.name} builds a QoSProfile; take it from wall_oss_ros.graph"
    assert "qos_profile_sensor_data" not in path.read_text(), f"{path.name}: use graph.IMAGE_QOS"


@pytest.mark.parametrize("path", NODE_SOURCES, ids=lambda p: p.name)
def test_nodes_name_graph_topics_through_the_topics_module(path):
    """A string literal equal to a graph topic passed to create_publisher / create_subscription is a second
    definition of the name that a rename would miss."""
    for call in _calls(path, "create_publisher") + _calls(path, "create_subscription"):
        literals = [arg.value for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        assert not set(literals) & GRAPH_TOPICS, f"{path.name}:{call.lineno} names {literals} literally"


def test_controller_topics():
    assert topics.controller_topic("left_arm_controller", topics.CONTROLLER_COMMANDS) == "/left_arm_controller/commands"
    assert topics.controller_topic("arm", topics.CONTROLLER_TRAJECTORY) == "/arm/joint_trajectory"
    with pytest.raises(ValueError, match="controller topic kind"):
        topics.controller_topic("arm", "command")


def test_diagnostic_array_names_the_node_and_stringifies_values(ros_node):
    from diagnostic_msgs.msg import DiagnosticStatus

    from wall_oss_ros.graph import diagnostic_array

    msg = diagnostic_array(ros_node, "policy", DiagnosticStatus.WARN, "no chunks", [("count", 3), ("ok", True)])
    [status] = msg.status
    assert status.name == f"{ros_node.get_fully_qualified_name()}: policy"
    assert status.level == DiagnosticStatus.WARN and status.message == "no chunks"
    assert [(kv.key, kv.value) for kv in status.values] == [("count", "3"), ("ok", "True")]
    assert msg.header.stamp.sec > 0


def test_latched_inputs_are_subscribed_with_both_durabilities():
    """A transient-local subscription never matches a volatile publisher (`ros2 topic pub`): each latched input
    needs one subscription of each durability, all reliable."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from wall_oss_ros import graph

    for profiles in (graph.INSTRUCTION_SUBSCRIPTION_QOS, graph.ESTOP_SUBSCRIPTION_QOS):
        assert {p.durability for p in profiles} == {DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE}
        assert {p.reliability for p in profiles} == {ReliabilityPolicy.RELIABLE}
    assert graph.INSTRUCTION_PUBLISHER_QOS.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert graph.JOINT_STATES_QOS.reliability == ReliabilityPolicy.BEST_EFFORT  # matches any publisher
