"""Replay backend: chunk files and real MCAP / SQLite3 bags, alignment modes, re-stamping, bad sources."""
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from wall_oss_core.backends.replay import (
    ACTION_CHUNK_TYPE,
    Recording,
    RecordingError,
    ReplayPolicy,
    load_recording,
    replay_policy_from_path,
    save_recording,
)
from wall_oss_core.data.bag_types import wall_oss_typestore
from wall_oss_core.policy.interface import Chunk, Observation, PolicyError

NAMES = [f"joint_{i}" for i in range(3)]
HORIZON, DT = 5, 0.05
REC_START = 100.0


def recorded_chunks(count=10, spacing=0.1, start=REC_START):
    """Chunk i holds the value i + k/10 in every dimension of action k, so a test can tell which one it got."""
    return [Chunk(actions=np.tile((i + np.arange(HORIZON) / 10.0)[:, None], (1, len(NAMES))), dt=DT,
                  action_space="joint_position", action_names=NAMES, stamp=start + i * spacing,
                  instruction=f"recorded {i}", first_action_offset=0.01)
            for i in range(count)]


def observation(stamp, instruction="replay it"):
    return Observation(stamp=stamp, images={}, joint_positions=np.zeros(14), joint_names=(), ee_poses={},
                       grippers={}, instruction=instruction)


def served_index(chunk: Chunk) -> int:
    return int(round(chunk.actions[0, 0]))


def test_replay_policy_declares_the_space_and_names_of_the_chunks_it_serves():
    """What a node reads from a Policy before any chunk (action_space, action_names) matches what predict
    returns, and the served chunk is stamped with the observation it answers."""
    policy = ReplayPolicy(Recording(recorded_chunks()), alignment="relative")
    assert (policy.action_space, list(policy.action_names)) == ("joint_position", NAMES)
    chunk = policy.predict(observation(7000.0))
    assert (chunk.action_space, list(chunk.action_names)) == (policy.action_space, list(policy.action_names))
    assert chunk.stamp == 7000.0 and chunk.actions.shape == (HORIZON, len(NAMES))


def test_relative_alignment_serves_the_latest_started_chunk_with_recorded_timing():
    recording = Recording(recorded_chunks())
    policy = ReplayPolicy(recording, alignment="relative")
    start = 5000.0
    first = policy.predict(observation(start))
    assert served_index(first) == 0 and first.first_action_offset == pytest.approx(0.01)
    for elapsed, index in [(0.05, 0), (0.23, 2), (0.30, 3), (0.95, 9)]:
        chunk = policy.predict(observation(start + elapsed, instruction="now this"))
        assert served_index(chunk) == index
        assert chunk.stamp == start + elapsed, "re-stamped to the observation"
        assert chunk.instruction == "now this"
        assert chunk.extras["recorded_instruction"] == f"recorded {index}"
        # every action keeps its recorded time, shifted by (replay start - recording start)
        recorded = recording.chunks[index]
        np.testing.assert_allclose(chunk.action_times(), recorded.action_times() - REC_START + start, atol=1e-9)
        np.testing.assert_array_equal(chunk.actions, recorded.actions)


def test_relative_alignment_ends_with_the_recording():
    policy = ReplayPolicy(Recording(recorded_chunks()), alignment="relative")
    policy.predict(observation(5000.0))
    # the last chunk starts at 0.9 s and its actions reach 0.9 + 0.01 + 5 x 0.05 = 1.16 s
    assert served_index(policy.predict(observation(5001.15))) == 9
    with pytest.raises(PolicyError, match="no recorded chunk reaches"):
        policy.predict(observation(5001.2))


def test_loop_wraps_around_after_the_recording():
    policy = ReplayPolicy(Recording(recorded_chunks()), alignment="relative", loop=True)
    policy.predict(observation(5000.0))
    assert served_index(policy.predict(observation(5001.23))) == 2  # one period is 0.9 s + one 0.1 s gap
    assert served_index(policy.predict(observation(5003.0))) == 0


def test_absolute_alignment_reproduces_the_recorded_chunk_exactly():
    recording = Recording(recorded_chunks())
    policy = ReplayPolicy(recording, alignment="absolute")
    for chunk in recording.chunks:
        served = policy.predict(observation(chunk.stamp))
        np.testing.assert_array_equal(served.actions, chunk.actions)
        assert served.first_action_offset == chunk.first_action_offset
        assert served.stamp == chunk.stamp
    with pytest.raises(PolicyError, match="before the first recorded chunk"):
        policy.predict(observation(REC_START - 0.001))


def test_gaps_in_a_recording_are_not_bridged():
    chunks = recorded_chunks(count=2, spacing=1.0)  # each chunk covers 0.26 s, then 0.74 s of nothing
    policy = ReplayPolicy(Recording(chunks), alignment="absolute")
    assert served_index(policy.predict(observation(REC_START + 0.2))) == 0
    with pytest.raises(PolicyError):
        policy.predict(observation(REC_START + 0.5))


def test_bad_policy_options_are_rejected():
    recording = Recording(recorded_chunks())
    with pytest.raises(ValueError, match="alignment"):
        ReplayPolicy(recording, alignment="nearest")
    with pytest.raises(ValueError, match="loop"):
        ReplayPolicy(recording, alignment="absolute", loop=True)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_chunk_files_round_trip(tmp_path, suffix):
    recording = Recording(recorded_chunks())
    path = tmp_path / f"chunks{suffix}"
    save_recording(path, recording)
    loaded = load_recording(path)
    assert len(loaded.chunks) == len(recording.chunks)
    for original, back in zip(recording.chunks, loaded.chunks):
        np.testing.assert_array_equal(back.actions, original.actions)
        assert (back.stamp, back.dt, back.first_action_offset, back.instruction, back.action_names,
                back.action_space) == (original.stamp, original.dt, original.first_action_offset,
                                       original.instruction, original.action_names, original.action_space)


def write_bag(path, storage, topics):
    """topics: topic → list of rosbags ActionChunk messages (or raw CDR bytes)."""
    store = wall_oss_typestore()
    with Writer(path, version=9, storage_plugin=storage) as writer:
        for topic, messages in topics.items():
            connection = writer.add_connection(topic, ACTION_CHUNK_TYPE, typestore=store)
            for i, msg in enumerate(messages):
                raw = msg if isinstance(msg, bytes) else store.serialize_cdr(msg, ACTION_CHUNK_TYPE)
                writer.write(connection, 1_000_000_000 + i * 100_000_000, raw)


def chunk_message(chunk: Chunk, chunk_id: int):
    store = wall_oss_typestore()
    T = store.types
    sec = int(chunk.stamp)
    return T[ACTION_CHUNK_TYPE](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=sec, nanosec=int(round((chunk.stamp - sec) * 1e9))), frame_id=""),
        chunk_id=chunk_id, action_space=chunk.action_space, action_names=list(chunk.action_names),
        horizon=chunk.horizon, action_dim=chunk.actions.shape[1], time_step=chunk.dt,
        first_action_offset=chunk.first_action_offset, data=chunk.actions.ravel().copy(),
        instruction=chunk.instruction, inference_latency=0.1)


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_bag_chunks_replay_and_malformed_messages_are_skipped_with_reasons(tmp_path, storage):
    chunks = recorded_chunks()
    messages = [chunk_message(chunk, i) for i, chunk in enumerate(chunks)]
    nan_chunk = chunk_message(chunks[0], 100)
    nan_chunk.data[4] = np.nan
    short_chunk = chunk_message(chunks[0], 101)
    short_chunk.data = short_chunk.data[:-1]
    write_bag(tmp_path / "bag", storage, {"/wall_oss/action_chunk": messages[:5] + [nan_chunk, short_chunk] + messages[5:]})

    policy = replay_policy_from_path(tmp_path / "bag", alignment="absolute")
    assert len(policy.recording.chunks) == len(chunks)
    assert len(policy.recording.skipped) == 2
    assert any("NaN or infinite" in reason for reason in policy.recording.skipped)
    assert any("data has" in reason and "horizon x action_dim is" in reason for reason in policy.recording.skipped)
    for chunk in chunks:
        np.testing.assert_array_equal(policy.predict(observation(chunk.stamp)).actions, chunk.actions)
    storage_file = next((tmp_path / "bag").glob("*.mcap" if storage == StoragePlugin.MCAP else "*.db3"))
    assert len(load_recording(storage_file).chunks) == len(chunks), "the storage file alone is a valid source"


def test_bag_with_several_chunk_topics_needs_a_topic(tmp_path):
    chunks = recorded_chunks()
    write_bag(tmp_path / "bag", StoragePlugin.MCAP,
              {"/a/action_chunk": [chunk_message(c, i) for i, c in enumerate(chunks[:3])],
               "/b/action_chunk": [chunk_message(c, i) for i, c in enumerate(chunks)]})
    with pytest.raises(RecordingError, match="choose one"):
        load_recording(tmp_path / "bag")
    assert len(load_recording(tmp_path / "bag", topic="/b/action_chunk").chunks) == len(chunks)
    with pytest.raises(RecordingError, match="no wall_oss/msg/ActionChunk topic '/c'"):
        load_recording(tmp_path / "bag", topic="/c")


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(RecordingError, match="does not exist"):
        load_recording(tmp_path / "missing.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(RecordingError, match="cannot read chunk file"):
        load_recording(tmp_path / "corrupt.npz")
    (tmp_path / "corrupt.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(RecordingError, match="cannot read bag"):
        load_recording(tmp_path / "corrupt.mcap")
    write_bag(tmp_path / "only_bad", StoragePlugin.MCAP, {"/action_chunk": [b"\x00\x01\x00\x00\x05"]})
    with pytest.raises(RecordingError, match="no usable action chunks"):
        load_recording(tmp_path / "only_bad")
    np.savez(tmp_path / "partial.npz", stamps=np.zeros(2))
    with pytest.raises(RecordingError, match="lacks array"):
        load_recording(tmp_path / "partial.npz")


def test_a_recording_must_speak_one_action_space():
    chunks = recorded_chunks(count=2)
    chunks[1].action_space = "wall_oss_ee_relative"
    with pytest.raises(RecordingError, match="mixes action spaces"):
        Recording(chunks)
    with pytest.raises(RecordingError, match="no usable action chunks"):
        Recording([])
