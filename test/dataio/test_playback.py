"""Playback scheduling (pure): bag time → wall time at a rate, start offset, duration, loop passes shifted
forward, /clock ticks, latched carry-over, header stamp shifting; and `wall-oss replay` refusing
empty, corrupt or unsuitable bags with a clear error before anything is played (never a hang)."""
from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState
from synthetic_bags import storage_file, write_synthetic_bag

from wall_oss_core.data.bag_types import wall_oss_typestore
from wall_oss_core.data.playback import (
    NS,
    PlaybackConfig,
    PlaybackError,
    Timeline,
    latest_by_topic,
    pass_messages,
    playback_events,
    shift_header_stamp,
    starts_with_header,
)
from wall_oss_core.evaluation.run_comparison import chunks_by_pass
from wall_oss_core.policy.interface import Chunk

BAG_START = 50 * NS


def _messages(times_s, topic="/joint_states"):
    """(topic, recorded ns, item) with the item naming its own time, as a bag reader would yield them."""
    return [(topic, BAG_START + round(t * NS), f"{topic}@{t}") for t in times_s]


def _events(timeline, window, clock_rate=None, latched_before=()):
    return playback_events(timeline, lambda k: pass_messages(timeline, k, window, latched_before), clock_rate)


def _message_events(events):
    return [event for event in events if not event.is_clock]


@pytest.mark.parametrize("rate", [1.0, 2.0, 0.5])
def test_wall_offsets_follow_recorded_times_at_the_rate_factor(rate):
    times = [0.0, 0.02, 0.05, 0.4, 1.0]
    window = _messages(times)
    timeline = Timeline.for_bag(PlaybackConfig(rate=rate), BAG_START, window[-1][1], len(window))
    events = _message_events(_events(timeline, window))
    assert [e.item for e in events] == [item for _, _, item in window]
    assert np.allclose([e.wall_offset for e in events], np.array(times) / rate)
    assert [e.sim_time_ns for e in events] == [t for _, t, _ in window]  # sim time is the bag's own time
    for event in events:
        assert timeline.sim_time_ns(event.wall_offset) == event.sim_time_ns


def test_start_offset_and_duration_cut_the_window_and_move_time_zero():
    window = _messages(np.arange(0.0, 3.0, 0.25))
    config = PlaybackConfig(start=1.0, duration=1.0)
    timeline = Timeline.for_bag(config, BAG_START, window[-1][1], len(window))
    assert (timeline.start_ns, timeline.stop_ns, timeline.period_ns) == (BAG_START + NS, BAG_START + 2 * NS, NS)
    events = _message_events(_events(timeline, window))
    assert [e.item for e in events] == [f"/joint_states@{t}" for t in (1.0, 1.25, 1.5, 1.75)]
    assert np.allclose([e.wall_offset for e in events], [0.0, 0.25, 0.5, 0.75])


def test_latched_message_from_before_the_start_is_sent_first_at_the_window_start():
    window = _messages([0.1, 1.2, 1.5])
    instructions = _messages([0.0, 0.6], topic="/wall_oss/instruction") + _messages([2.0], "/wall_oss/instruction")
    timeline = Timeline.for_bag(PlaybackConfig(start=1.0), BAG_START, window[-1][1], 6)
    events = _message_events(_events(timeline, window, latched_before=instructions))
    # the instruction recorded at 0.6 s (the latest before the window) leads; the one at 2.0 s is not "before"
    assert [e.item for e in events] == ["/wall_oss/instruction@0.6", "/joint_states@1.2", "/joint_states@1.5"]
    assert events[0].wall_offset == 0.0 and events[0].sim_time_ns == timeline.start_ns
    other = _messages([0.7], "/other")
    assert latest_by_topic(instructions[:2] + other) == [instructions[1], other[0]]
    assert latest_by_topic(instructions + other) == [other[0], instructions[2]]


def test_loop_passes_are_shifted_forward_so_time_never_runs_backwards():
    window = _messages([0.2, 0.7, 1.2])
    timeline = Timeline.for_bag(PlaybackConfig(start=0.2, loop=True, loops=3), BAG_START, window[-1][1], 3)
    assert timeline.period_ns == round(1.6 * NS)  # the window (1 s) plus one mean gap of the bag (1.2 s / 2)
    events = _message_events(_events(timeline, window, latched_before=_messages([0.0], "/latched")))
    assert [e.pass_index for e in events] == [0] * 4 + [1] * 3 + [2] * 3  # the latched carry-over: first pass only
    sims = [e.sim_time_ns for e in events]
    assert sims == sorted(sims)
    offsets = [e.wall_offset for e in events[1:]]
    assert np.allclose(offsets, [0.0, 0.5, 1.0, 1.6, 2.1, 2.6, 3.2, 3.7, 4.2])
    for event in events[1:]:
        pass_index, source_ns = timeline.source_time_ns(event.sim_time_ns)
        assert pass_index == event.pass_index
        assert event.item == f"/joint_states@{(source_ns - BAG_START) / NS}"


def test_endless_loop_is_lazy_and_the_duration_sets_the_period():
    window = _messages([0.0, 0.1])
    timeline = Timeline.for_bag(PlaybackConfig(loop=True, duration=0.25), BAG_START, window[-1][1], 2)
    assert timeline.passes is None and timeline.period_ns == round(0.25 * NS)
    reads = []

    def read_pass(k):
        reads.append(k)
        return pass_messages(timeline, k, window)

    first = list(itertools.islice(playback_events(timeline, read_pass), 2000))
    assert len(first) == 2000 and reads == list(range(1000))  # passes are read one at a time, on demand
    assert np.allclose([e.wall_offset for e in first[-2:]], [999 * 0.25, 999 * 0.25 + 0.1])


def test_endless_loop_over_a_window_without_messages_ends_instead_of_idling():
    window = _messages([0.0, 2.0])
    timeline = Timeline.for_bag(PlaybackConfig(start=0.5, duration=1.0, loop=True), BAG_START, window[-1][1], 2)
    assert list(_events(timeline, window, clock_rate=10.0)) == []
    latched = _messages([0.0], "/wall_oss/instruction")  # only the carried-over instruction, then nothing
    events = _message_events(_events(timeline, window, latched_before=latched))
    assert [e.item for e in events] == ["/wall_oss/instruction@0.0"]


def test_clock_ticks_between_messages_and_never_lags_a_sent_message():
    window = _messages([0.0, 0.003, 0.1, 0.45])
    timeline = Timeline.for_bag(PlaybackConfig(rate=2.0), BAG_START, window[-1][1], len(window))
    events = list(_events(timeline, window, clock_rate=50.0))
    clocks = [e for e in events if e.is_clock]
    assert [e.sim_time_ns for e in clocks] == sorted({e.sim_time_ns for e in clocks})  # strictly increasing
    latest_clock = None
    for event in events:
        if event.is_clock:
            latest_clock = event.sim_time_ns
            assert event.sim_time_ns == timeline.sim_time_ns(event.wall_offset)
        else:
            assert latest_clock is not None and latest_clock >= event.sim_time_ns
    offsets = [e.wall_offset for e in events]
    assert offsets == sorted(offsets)
    clock_offsets = np.array([e.wall_offset for e in clocks])
    for k in range(12):  # 50 Hz wall ticks through the 0.225 s that a 0.45 s bag lasts at rate 2
        assert np.isclose(clock_offsets, k * 0.02, rtol=0, atol=1e-12).any()
    assert clock_offsets.max() <= events[-1].wall_offset


def test_timeline_rejects_unplayable_windows_and_bad_settings():
    with pytest.raises(PlaybackError, match="no message"):
        Timeline.for_bag(PlaybackConfig(), BAG_START, BAG_START, 0)
    with pytest.raises(PlaybackError, match="past the end"):
        Timeline.for_bag(PlaybackConfig(start=5.0), BAG_START, BAG_START + 2 * NS, 10)
    with pytest.raises(PlaybackError, match="single instant"):
        Timeline.for_bag(PlaybackConfig(loop=True), BAG_START, BAG_START, 1)
    for bad in ({"rate": 0.0}, {"rate": float("nan")}, {"start": -1.0}, {"duration": 0.0}, {"loops": 2},
                {"loop": True, "loops": 0}, {"clock_rate": -5.0}):
        with pytest.raises(PlaybackError):
            PlaybackConfig(**bad)


def test_header_stamp_shift_patches_the_serialized_stamp_only():
    msg = JointState(name=["a", "b"], position=[1.0, 2.0])
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100, 900_000_000
    msg.header.frame_id = "base"
    raw = serialize_message(msg)
    shifted = deserialize_message(shift_header_stamp(raw, 3 * NS + 250_000_000), JointState)
    assert (shifted.header.stamp.sec, shifted.header.stamp.nanosec) == (104, 150_000_000)  # nanoseconds carry
    assert shifted.header.frame_id == "base" and list(shifted.name) == ["a", "b"]
    assert list(shifted.position) == [1.0, 2.0]
    assert shift_header_stamp(raw, 0) is raw

    store = wall_oss_typestore()  # big-endian CDR, as another middleware may have recorded it
    big_endian = bytes(store.serialize_cdr(_rosbags_joint_state(store), "sensor_msgs/msg/JointState",
                                           little_endian=False))
    patched = store.deserialize_cdr(shift_header_stamp(big_endian, NS // 2), "sensor_msgs/msg/JointState")
    assert (patched.header.stamp.sec, patched.header.stamp.nanosec) == (8, 500_000_000)

    with pytest.raises(PlaybackError, match="too short"):
        shift_header_stamp(raw[:8], NS)
    with pytest.raises(PlaybackError, match="encapsulation"):
        shift_header_stamp(b"\x00\x07\x00\x00" + raw[4:], NS)
    with pytest.raises(PlaybackError, match="does not fit"):
        shift_header_stamp(raw, -200 * NS)
    assert struct.unpack_from("<iI", shift_header_stamp(raw, NS), 4) == (101, 900_000_000)


def _rosbags_joint_state(store):
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    return store.types["sensor_msgs/msg/JointState"](header=Header(stamp=Time(sec=8, nanosec=0), frame_id="x"),
                                                     name=["j"], position=np.array([0.5]), velocity=np.array([]),
                                                     effort=np.array([]))


def test_only_types_that_lead_with_a_header_are_stamped():
    store = wall_oss_typestore()
    assert starts_with_header(store, "sensor_msgs/msg/Image")
    assert starts_with_header(store, "wall_oss/msg/ActionChunk")
    assert not starts_with_header(store, "std_msgs/msg/String")
    assert not starts_with_header(store, "rosgraph_msgs/msg/Clock")
    assert not starts_with_header(store, "no_such/msg/Type")


def test_looped_run_chunks_are_grouped_by_pass_and_restamped_to_the_source_time():
    timeline = Timeline(start_ns=100 * NS, stop_ns=103 * NS, period_ns=3 * NS, rate=1.0, passes=2)
    chunks = [Chunk(actions=np.zeros((2, 1)), dt=0.1, action_space="joint_position", action_names=["j"], stamp=s)
              for s in (100.5, 102.9, 103.5, 105.0, 107.0)]
    by_pass = chunks_by_pass(chunks, timeline)
    assert {k: [round(c.stamp, 9) for c in v] for k, v in by_pass.items()} == {0: [100.5, 102.9],
                                                                             1: [100.5, 102.0, 104.0]}
    assert chunks[2].stamp == 103.5  # the run's chunks are left as recorded


@pytest.mark.timeout(60)
def test_replay_refuses_missing_empty_corrupt_and_unsuitable_bags(tmp_path, capsys):
    from wall_oss_ros.cli import main

    def replay(bag, *extra):
        code = main(["replay", "--bag", str(bag), "--out", str(tmp_path / "out"), "--wait", "0", *extra])
        return code, capsys.readouterr().err

    code, err = replay(tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    empty = tmp_path / "empty.mcap"
    empty.write_bytes(b"")
    code, err = replay(empty)
    assert code == 2 and "empty" in err
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"definitely not an mcap file" * 10)
    code, err = replay(garbage)
    assert code == 2 and "not an MCAP file" in err

    bag = write_synthetic_bag(tmp_path / "bag", duration=1.0).path
    code, err = replay(bag, "--topics", "/not/in/bag")
    assert code == 2 and "/not/in/bag" in err
    code, err = replay(bag, "--rate", "0")
    assert code == 2 and "rate" in err
    code, err = replay(bag, "--start", "9")
    assert code == 2 and "past the end" in err
    code, err = replay(bag, "--topics", "joint_states")
    assert code == 2 and "absolute" in err
    # a bag cut short in the middle of a record: the reader salvages it; playback needs at least the topics
    cut = tmp_path / "cut.mcap"
    data = storage_file(bag).read_bytes()
    cut.write_bytes(data[:200])
    code, err = replay(cut)
    assert code == 2 and "none of the default input topics" in err
    assert not (tmp_path / "out" / "run_bag").exists()
