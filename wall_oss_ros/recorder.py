"""Records chosen topics of the running graph to a rosbag2 MCAP bag (rosbag2 is not installable here).

Subscriptions take the raw CDR bytes (`raw=True`), which go into the bag unchanged with the receive
time, exactly as `ros2 bag record` stores them; nothing is deserialized on the way. The project's own
types (wall_oss/msg/ActionChunk, SafetyStatus) are registered from msg/*.msg through
`wall_oss_typestore()`, so their definitions travel in the bag and any reader can decode them.

Topics may appear late (nodes start in any order): the recorder looks for the ones it has not
subscribed yet on every `discover()` call (a timer in the node), and matches each topic's QoS to its
publishers (reliable only if all of them are, transient local if all of them are, so a latched
instruction is still recorded).

As a node: `python -m wall_oss_ros.recorder --ros-args -p topics:="['/joint_states', '/wall_oss/action_chunk']"
-p output:=runs/my_bag` records until Ctrl-C.
"""
from __future__ import annotations

import importlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from wall_oss_core.data.bag_types import wall_oss_typestore
from wall_oss_ros.node_runtime import install_stop_signals, spin_until_stopped

RECORD_DEPTH = 100
_NO_TIME = QosTime(sec=0, nsec=0)


DRAIN_ON_STOP = 0.3  # [s] callbacks still run after Ctrl-C, before the bag is closed


class RecorderError(ValueError):
    """A recording that cannot start: bad topic name, unknown message type, existing output."""


def message_class(type_name: str):
    """The rclpy message class of a 'pkg/msg/Type' name."""
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise RecorderError(f"message type {type_name!r} is not of the form pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as error:
        raise RecorderError(f"message type {type_name} is not available in this environment: {error}") from error


def _bag_qos(profile: QoSProfile) -> Qos:
    return Qos(history=QosHistory.KEEP_LAST, depth=profile.depth,
               reliability=QosReliability(int(profile.reliability)), durability=QosDurability(int(profile.durability)),
               deadline=_NO_TIME, lifespan=_NO_TIME, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=_NO_TIME, avoid_ros_namespace_conventions=False)


class BagRecorder:
    """Records `topics` (absolute names) seen by `node` into a new MCAP bag directory `output`.

    types: topic → 'pkg/msg/Type' for topics whose type should not be discovered from the graph.
    on_message: called as on_message(topic, raw_bytes, receive_time_ns) after each write (the demo
        uses it for live statistics without a second subscription).
    """

    def __init__(self, node: Node, output: str | Path, topics: list[str], *, types: dict[str, str] | None = None,
                 on_message: Callable[[str, bytes, int], None] | None = None):
        for topic in topics:
            if not topic.startswith("/"):
                raise RecorderError(f"record topics by their absolute name, got {topic!r}")
        self.node = node
        self.output = Path(output)
        if self.output.exists():
            raise RecorderError(f"bag {self.output} exists already; choose a new directory")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.topics = list(dict.fromkeys(topics))
        self.types = dict(types or {})
        self.on_message = on_message
        self.counts: Counter[str] = Counter()
        self._typestore = wall_oss_typestore()
        self._writer = Writer(self.output, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._subscriptions = {}
        self.failed: dict[str, str] = {}  # topic → why it cannot be recorded
        self._closed = False
        self.discover()

    @property
    def pending_topics(self) -> list[str]:
        """Topics not subscribed yet (no publisher seen and no type given)."""
        return [t for t in self.topics if t not in self._subscriptions and t not in self.failed]

    def discover(self) -> None:
        """Subscribe every pending topic whose type is known (given, or advertised by a publisher)."""
        if self._closed or not self.pending_topics:
            return
        advertised = dict(self.node.get_topic_names_and_types())
        for topic in self.pending_topics:
            type_name = self.types.get(topic) or next(iter(advertised.get(topic, [])), None)
            if type_name is None:
                continue
            try:
                self._subscribe(topic, type_name)
            except RecorderError as error:  # one unrecordable topic must not stop the others
                self.failed[topic] = str(error)
                self.node.get_logger().error(f"not recording {topic}: {error}")

    def _qos_for(self, topic: str) -> QoSProfile:
        publishers = self.node.get_publishers_info_by_topic(topic)
        reliable = bool(publishers) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
        latched = bool(publishers) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                           for p in publishers)
        return QoSProfile(depth=RECORD_DEPTH,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _subscribe(self, topic: str, type_name: str) -> None:
        cls = message_class(type_name)
        if type_name not in self._typestore.fielddefs:
            raise RecorderError(f"message type {type_name} of {topic} is not in the bag type store")
        qos = self._qos_for(topic)
        connection = self._writer.add_connection(topic, type_name, typestore=self._typestore,
                                                 offered_qos_profiles=[_bag_qos(qos)])
        clock = self.node.get_clock()

        def write(raw: bytes, topic=topic, connection=connection) -> None:
            if self._closed:
                return
            stamp = clock.now().nanoseconds
            self._writer.write(connection, stamp, raw)
            self.counts[topic] += 1
            if self.on_message is not None:
                self.on_message(topic, raw, stamp)

        self._subscriptions[topic] = self.node.create_subscription(cls, topic, write, qos, raw=True)
        self.node.get_logger().debug(f"recording {topic} ({type_name})")

    def close(self) -> Path:
        """Stop recording and finish the bag (metadata.yaml); returns the bag directory."""
        if not self._closed:
            self._closed = True
            for subscription in self._subscriptions.values():
                self.node.destroy_subscription(subscription)
            self._writer.close()
        return self.output


def main(args=None) -> int:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = install_stop_signals()
    node = Node("recorder")
    topics = node.declare_parameter("topics", [""], ParameterDescriptor(
        description="absolute names of the topics to record")).value
    output = node.declare_parameter("output", "", ParameterDescriptor(
        description="bag directory to create; empty = runs/bag_<timestamp>")).value
    period = node.declare_parameter("discovery_period", 0.5, ParameterDescriptor(
        description="how often to look for topics that have no publisher yet [s]")).value
    topics = [t for t in topics if t]
    try:
        if not topics:
            raise RecorderError("set the topics parameter to the topics to record")
        recorder = BagRecorder(node, output or Path("runs") / time.strftime("bag_%Y%m%d_%H%M%S"), topics)
    except RecorderError as error:
        print(f"recorder: {error}", file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    node.create_timer(period, recorder.discover)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until_stopped(executor, stop)
        # messages already delivered to this process when Ctrl-C came still belong in the bag
        drain_until = time.monotonic() + DRAIN_ON_STOP
        while time.monotonic() < drain_until and executor.context.ok():
            executor.spin_once(timeout_sec=0.02)
    finally:
        path = recorder.close()
        summary = ", ".join(f"{t}: {recorder.counts[t]}" for t in recorder.topics)
        print(f"recorder: wrote {path} ({summary})", file=sys.stderr)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
