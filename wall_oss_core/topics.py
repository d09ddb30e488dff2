"""The graph's topic names, ROS-free, so that nodes, launch files, evaluation and export agree on one contract.

Node topics are relative to the graph namespace (`/wall_oss` by default); joint states are global,
as robot drivers and `joint_state_broadcaster` publish them. QoS lives with the nodes
(`wall_oss_ros.graph`), since it is a ROS concept.
"""
from __future__ import annotations

NAMESPACE = "wall_oss"
JOINT_STATES = "/joint_states"
ACTION_CHUNK = "action_chunk"
INSTRUCTION = "instruction"
CANDIDATE_COMMAND = "candidate_command"
SAFETY_STATUS = "safety_status"
ESTOP = "estop"
ESTOP_HEARTBEAT = "estop_heartbeat"
MARKERS = "markers"
# the simulator's privileged outputs (global: the sim is not part of the graph namespace)
SIM_OBJECT_POSES = "/wall_oss/sim/object_poses"    # MarkerArray, ns = object body
SIM_TASK_PROGRESS = "/wall_oss/sim/task_progress"  # Float64 0–100, latched
SIM_TASK_STAGE = "/wall_oss/sim/task_stage"        # String "<task>/<stage>" when a stage first holds, latched
DIAGNOSTICS = "/diagnostics"
# ros2_controllers' input topics: forward_command_controller and joint_trajectory_controller.
CONTROLLER_COMMANDS = "commands"
CONTROLLER_TRAJECTORY = "joint_trajectory"


def controller_topic(controller: str, kind: str) -> str:
    """`/<controller>/<kind>`: the controller's input topic (kind CONTROLLER_COMMANDS or CONTROLLER_TRAJECTORY)."""
    if kind not in (CONTROLLER_COMMANDS, CONTROLLER_TRAJECTORY):
        raise ValueError(f"controller topic kind must be {CONTROLLER_COMMANDS!r} or {CONTROLLER_TRAJECTORY!r}, "
                         f"got {kind!r}")
    return f"/{controller}/{kind}"


def qualified(name: str, namespace: str = NAMESPACE) -> str:
    """`/namespace/name` for a node topic (`/name` with an empty namespace); absolute names pass through."""
    if name.startswith("/"):
        return name
    namespace = namespace.strip("/")
    return f"/{namespace}/{name}" if namespace else f"/{name}"
