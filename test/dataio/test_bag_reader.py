"""BagReader on real bags: finished MCAP and SQLite3, truncated, empty, corrupt, missing topics, unknown types."""
import shutil

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from synthetic_bags import START, storage_file, write_synthetic_bag

from wall_oss_core.data.bag_reader import BagError, BagReader

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_reads_every_topic_in_time_order_and_counts_bytes(tmp_path, storage):
    bag = write_synthetic_bag(tmp_path / "bag", storage=storage, duration=1.0)
    with BagReader(bag.path) as reader:
        assert reader.topics["/joint_states"].message_count == len(bag.joint_times)
        assert reader.topics["/cameras/face/image_raw"].message_count == len(bag.frame_times)
        messages = list(reader.messages())
        times = [m.log_time_ns for m in messages]
        assert times == sorted(times) and len(messages) == reader.message_count
        assert reader.bytes_read == sum(len(m.raw) for m in messages) > 0
        states = [m.message for m in reader.messages(["/joint_states"])]
        stamps = [s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in states]
        np.testing.assert_allclose(stamps, bag.joint_times, atol=1e-9)
        assert reader.warnings == []


def test_truncated_mcap_gives_the_complete_messages_before_the_cut(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", duration=3.0, image_size=(160, 120))
    data = storage_file(bag.path).read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    with BagReader(cut) as reader:
        assert reader.salvaged and any("truncated" in w for w in reader.warnings)
        states = [m.message for m in reader.messages(["/joint_states"])]
    assert 0 < len(states) < len(bag.joint_times)
    first = states[0].header.stamp
    assert first.sec + first.nanosec * 1e-9 == pytest.approx(START)
    stamps = [s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in states]
    assert stamps == sorted(stamps)


def test_recorder_that_died_before_metadata_is_still_read(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", duration=0.5)
    (bag.path / "metadata.yaml").unlink()
    with BagReader(bag.path) as reader:
        assert any("metadata.yaml" in w for w in reader.warnings)
        assert reader.topics["/joint_states"].message_count == len(bag.joint_times)


def test_empty_and_garbage_bags_fail_clearly(tmp_path):
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    with pytest.raises(BagError, match="no .mcap or .db3"):
        BagReader(empty_dir)
    (tmp_path / "empty.mcap").write_bytes(b"")
    with pytest.raises(BagError, match="empty"):
        BagReader(tmp_path / "empty.mcap")
    (tmp_path / "noise.mcap").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(BagError, match="not an MCAP file"):
        BagReader(tmp_path / "noise.mcap")
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "missing")


def test_truncated_sqlite_fails_with_a_clear_error(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", storage="sqlite3", duration=1.0)
    data = storage_file(bag.path).read_bytes()
    cut = tmp_path / "cut.db3"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(BagError, match="SQLite3"):
        BagReader(cut)


def test_corrupt_record_in_the_middle_keeps_what_precedes_it(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", duration=3.0, image_size=(160, 120))
    data = bytearray(storage_file(bag.path).read_bytes())
    chunk_starts, position = [], 8  # walk the top-level MCAP records after the magic
    while position + 9 <= len(data):
        length = int.from_bytes(data[position + 1:position + 9], "little")
        if data[position] == 0x06:
            chunk_starts.append(position)
        position += 9 + length
    assert len(chunk_starts) >= 3
    middle = chunk_starts[len(chunk_starts) // 2]
    data[middle + 1:middle + 9] = (1 << 40).to_bytes(8, "little")  # an impossible record length
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(bytes(data[:-200]))  # and no footer, as after a crash: forces the scan
    with BagReader(damaged) as reader:
        count = sum(1 for _ in reader.messages(["/joint_states"]))
        assert any("needs" in w for w in reader.warnings)
    assert 0 < count < len(bag.joint_times)


def test_missing_topics_warn_or_raise_and_unknown_types_are_skipped(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", duration=0.5)
    with BagReader(bag.path) as reader:
        assert len(list(reader.messages(["/joint_states", "/not_there"]))) == len(bag.joint_times)
        assert any("/not_there" in w for w in reader.warnings)
        with pytest.raises(BagError, match="/not_there"):
            reader.check_topics(["/joint_states", "/not_there"])

    # a type the project's store lacks, with and without its definition in the bag
    foreign = get_typestore(Stores.EMPTY)
    foreign.register(get_types_from_msg("float64 level\nstring label", "acme_msgs/msg/Gauge"))
    gauge = foreign.types["acme_msgs/msg/Gauge"](level=2.5, label="tank")
    raw = bytes(foreign.serialize_cdr(gauge, "acme_msgs/msg/Gauge"))
    defined = tmp_path / "defined"
    with Writer(defined, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/gauge", "acme_msgs/msg/Gauge", typestore=foreign)
        writer.write(connection, 10, raw)
    with BagReader(defined) as reader:
        assert reader.topics["/gauge"].known_type
        (message,) = [m.message for m in reader.messages()]
        assert (message.level, message.label) == (2.5, "tank")
    undefined = tmp_path / "undefined"
    with Writer(undefined, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/gauge", "acme_msgs/msg/Gauge", msgdef="", rihs01="RIHS01_" + "0" * 64)
        writer.write(connection, 10, raw)
    with BagReader(undefined) as reader:
        assert not reader.topics["/gauge"].known_type
        assert list(reader.messages()) == []
        assert reader.skipped["unknown type acme_msgs/msg/Gauge"] == 1


def test_undecodable_messages_are_counted_not_fatal(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", duration=0.2)
    from wall_oss_core.data.bag_types import wall_oss_typestore
    broken = tmp_path / "broken"
    with Writer(broken, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState",
                                           typestore=wall_oss_typestore())
        writer.write(connection, 1, b"\x00\x01\x00\x00\xff\xff")
        with BagReader(bag.path) as source:
            for item in source.messages(["/joint_states"]):
                writer.write(connection, item.log_time_ns, item.raw)
    with BagReader(broken) as reader:
        assert len(list(reader.messages())) == len(bag.joint_times)
        assert reader.skipped["undecodable sensor_msgs/msg/JointState"] == 1
    shutil.rmtree(broken)
