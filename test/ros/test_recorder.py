"""The recorder writes what the graph publishes into a self-describing MCAP bag: real publishers
(the simulated arm in its own process, the project's messages from the test process) over real DDS,
read back with rosbags."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import wait_for
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from wall_oss_core.policy.interface import Chunk

SIM_PARAMS = {"camera_rate_hz": 5.0, "image_width": 64, "image_height": 48, "publish_compressed_images": True}


def _chunk(stamp: float) -> Chunk:
    actions = np.arange(6.0).reshape(3, 2) + stamp
    return Chunk(actions=actions, dt=0.1, action_space="joint_position", action_names=["a", "b"], stamp=stamp,
                 instruction="stack the cups")


def test_records_graph_topics_into_a_self_describing_mcap_bag(ros_node, node_processes, tmp_path):
    from std_msgs.msg import String
    from wall_oss.msg import ActionChunk, SafetyStatus

    from wall_oss_ros.conversions import chunk_to_msg
    from wall_oss_ros.recorder import BagRecorder

    sim = node_processes("wall_oss_ros.sim_arm_node", params=SIM_PARAMS)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    instruction_pub = ros_node.create_publisher(String, "/wall_oss/instruction", latched)
    instruction_pub.publish(String(data="stack the cups"))  # before the recorder exists: latched delivery
    chunk_pub = ros_node.create_publisher(ActionChunk, "/wall_oss/action_chunk", 5)
    status_pub = ros_node.create_publisher(SafetyStatus, "/wall_oss/safety_status", 10)

    topics = ["/joint_states", "/wall_oss/instruction", "/wall_oss/action_chunk", "/wall_oss/safety_status",
              "/cameras/face/image_raw/compressed", "/never/published"]
    seen = []
    recorder = BagRecorder(ros_node, tmp_path / "bag", topics, on_message=lambda topic, raw, t: seen.append(topic))
    wait_for(lambda: (recorder.discover() or True) and recorder.pending_topics == ["/never/published"], 20,
             poll=ros_node.spin_briefly, message="subscriptions to every published topic")
    wait_for(lambda: recorder.counts["/wall_oss/instruction"] == 1, 10, poll=ros_node.spin_briefly,
             message="the latched instruction")

    sent_ids = []
    for chunk_id in range(5):
        wait_for(lambda: chunk_pub.get_subscription_count() > 0, 10, poll=ros_node.spin_briefly)
        chunk_pub.publish(chunk_to_msg(_chunk(100.0 + chunk_id), chunk_id))
        status = SafetyStatus(state=SafetyStatus.STATE_LIMITING, state_name="LIMITING", reason="velocity",
                              active_limits=["velocity:left_elbow_joint"], commands_passed=chunk_id)
        status_pub.publish(status)
        sent_ids.append(chunk_id)
    wait_for(lambda: recorder.counts["/wall_oss/action_chunk"] == 5 and recorder.counts["/wall_oss/safety_status"] == 5
             and recorder.counts["/joint_states"] > 20 and recorder.counts["/cameras/face/image_raw/compressed"] > 1,
             20, poll=ros_node.spin_briefly, message="chunks, statuses, joint states and images in the bag")
    path = recorder.close()
    assert sim.alive()
    assert sum(recorder.counts.values()) == len(seen)

    with Reader(path) as reader:
        assert (path / "metadata.yaml").is_file()
        by_topic = {c.topic: c for c in reader.connections}
        assert set(by_topic) == set(topics) - {"/never/published"}
        assert by_topic["/wall_oss/action_chunk"].msgtype == "wall_oss/msg/ActionChunk"
        assert by_topic["/wall_oss/instruction"].ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
        assert {t: c.msgcount for t, c in by_topic.items()} == {t: recorder.counts[t] for t in by_topic}

        # decode with types taken only from the bag's own definitions (self-describing)
        store = get_typestore(Stores.EMPTY)
        for connection in reader.connections:
            store.register(get_types_from_msg(connection.msgdef.data, connection.msgtype))
        chunks, statuses, stamps = [], [], []
        for connection, timestamp, raw in reader.messages():
            stamps.append(timestamp)
            message = store.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == "/wall_oss/action_chunk":
                chunks.append(message)
            elif connection.topic == "/wall_oss/safety_status":
                statuses.append(message)
            elif connection.topic == "/wall_oss/instruction":
                assert message.data == "stack the cups"
            elif connection.topic == "/joint_states":
                assert len(message.name) == len(message.position) == len(message.velocity) >= 14
            elif connection.topic == "/cameras/face/image_raw/compressed":
                assert "jpeg" in message.format and bytes(message.data[:2]) == b"\xff\xd8"
    assert stamps == sorted(stamps)
    assert [c.chunk_id for c in chunks] == sent_ids
    for chunk_id, message in zip(sent_ids, chunks):
        expected = _chunk(100.0 + chunk_id)
        assert message.instruction == "stack the cups" and list(message.action_names) == ["a", "b"]
        np.testing.assert_array_equal(np.asarray(message.data).reshape(message.horizon, message.action_dim),
                                      expected.actions)
        assert message.header.stamp.sec == 100 + chunk_id
    assert [s.commands_passed for s in statuses] == sent_ids
    assert statuses[0].active_limits == ["velocity:left_elbow_joint"] and statuses[0].state_name == "LIMITING"


def test_refuses_relative_topics_and_existing_output(ros_node, tmp_path):
    from wall_oss_ros.recorder import BagRecorder, RecorderError

    with pytest.raises(RecorderError, match="absolute"):
        BagRecorder(ros_node, tmp_path / "a", ["joint_states"])
    (tmp_path / "exists").mkdir()
    with pytest.raises(RecorderError, match="exists already"):
        BagRecorder(ros_node, tmp_path / "exists", ["/joint_states"])


def test_an_unrecordable_type_is_reported_and_the_rest_records(ros_node, tmp_path):
    from std_msgs.msg import Int32

    from wall_oss_ros.recorder import BagRecorder

    publisher = ros_node.create_publisher(Int32, "/counter", 10)
    recorder = BagRecorder(ros_node, tmp_path / "bag", ["/counter", "/mystery"],
                           types={"/mystery": "no_such_pkg/msg/Thing"})
    assert "/mystery" in recorder.failed and "not available" in recorder.failed["/mystery"]
    wait_for(lambda: (recorder.discover() or True) and not recorder.pending_topics, 10, poll=ros_node.spin_briefly,
             message="the /counter subscription")
    wait_for(lambda: publisher.get_subscription_count() > 0, 10, poll=ros_node.spin_briefly)
    for value in range(3):
        publisher.publish(Int32(data=value))
    wait_for(lambda: recorder.counts["/counter"] == 3, 10, poll=ros_node.spin_briefly, message="three messages")
    recorder.close()
    with Reader(tmp_path / "bag") as reader:
        assert [c.topic for c in reader.connections] == ["/counter"]


def test_recorder_node_records_until_ctrl_c(ros_node, node_processes, tmp_path):
    from rclpy.duration import Duration
    from std_msgs.msg import String

    publisher = ros_node.create_publisher(String, "/chatter", 10)
    recorder = node_processes("wall_oss_ros.recorder", params={"topics": ["/chatter"], "output": str(tmp_path / "bag"),
                                                                "discovery_period": 0.1})
    wait_for(lambda: publisher.get_subscription_count() > 0, 20, poll=ros_node.spin_briefly,
             message="the recorder subscribed")
    for index in range(4):
        publisher.publish(String(data=f"message {index}"))
    # every message reached the recorder process before it is stopped: it subscribed reliably (as the
    # publisher offers) and the publisher waits for the acknowledgements
    assert recorder.alive() and publisher.wait_for_all_acked(Duration(seconds=10))
    assert recorder.stop() == 0
    assert "recorder: wrote" in recorder.log() and "/chatter: 4" in recorder.log()
    with Reader(tmp_path / "bag") as reader:
        assert [c.msgcount for c in reader.connections] == [4]
