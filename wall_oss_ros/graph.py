"""The graph's ROS contract in one place (as cartographer_ros' node_constants.h): the QoS of each kind of
topic and the /diagnostics builder; the topic names are `wall_oss_core.topics` (ROS-free, so that
evaluation and export share them). Publishers and subscribers of one topic take their profiles from here, so
they cannot drift apart and silently stop matching.
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

_RELIABLE = ReliabilityPolicy.RELIABLE

# Chunks are few and each one matters: reliable, a short queue (a newer chunk supersedes older ones).
CHUNK_QOS = QoSProfile(depth=5, reliability=_RELIABLE)
# Joint states are subscribed best-effort: that matches reliable publishers (joint_state_broadcaster) and
# best-effort ones alike, and a late sample is worth less than the next one.
JOINT_STATES_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# What the simulated arm offers, as joint_state_broadcaster does.
JOINT_STATES_PUBLISHER_QOS = QoSProfile(depth=10, reliability=_RELIABLE)
# Candidate commands and controller commands: reliable, so a subscriber sees every tick in order.
COMMAND_QOS = QoSProfile(depth=10, reliability=_RELIABLE)
# SafetyStatus, /diagnostics, markers: reliable, a queue of ten.
STATUS_QOS = QoSProfile(depth=10, reliability=_RELIABLE)
# Camera frames: sensor data (best effort, keep last 5); config/fastdds.xml sizes shared memory for 640x480.
IMAGE_QOS = qos_profile_sensor_data
# An instruction publisher latches its last instruction for nodes that start later.
INSTRUCTION_PUBLISHER_QOS = QoSProfile(depth=1, reliability=_RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# DDS never matches a transient-local subscription with a volatile publisher (`ros2 topic pub`), so latched
# inputs (instruction, e-stop) are taken by one subscription of each durability.
INSTRUCTION_SUBSCRIPTION_QOS = tuple(QoSProfile(depth=10, reliability=_RELIABLE, durability=durability)
                                     for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE))
ESTOP_SUBSCRIPTION_QOS = tuple(QoSProfile(depth=1, reliability=_RELIABLE, durability=durability)
                               for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE))


# The simulator's task progress and stage: latched, so a late subscriber (sim-eval, a test) gets the state so far.
SIM_TASK_QOS = QoSProfile(depth=16, reliability=_RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# /clock from the simulator when the graph runs on sim time.
CLOCK_QOS = QoSProfile(depth=1, reliability=_RELIABLE)


def diagnostic_array(node: Node, status_name: str, level: bytes, message: str, values) -> DiagnosticArray:
    """A one-status /diagnostics message named `<node>: <status_name>`; `values` is an iterable of (key, value)."""
    status = DiagnosticStatus(level=level, name=f"{node.get_fully_qualified_name()}: {status_name}",
                              message=message, hardware_id="wall_oss",
                              values=[KeyValue(key=str(key), value=str(value)) for key, value in values])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg
