"""When to send each message of a bag played into a live graph, and what time the graph sees (ROS-free).

Playback plays the window [start, start + duration) of a bag (times are the bag's receive times),
at `rate` bag seconds per wall second. Bag time maps linearly onto wall time:

    wall offset = (sim time - window start) / rate          sim time = window start + wall offset * rate

where "sim time" is what `/clock` announces, so nodes with `use_sim_time` see the bag's own time
base and the unchanged header stamps of the played messages are fresh to them.

Looping repeats the window every `period` of bag time, and each pass is shifted forward by that
period: pass k sends a message recorded at t at sim time t + k * period, and moves the header
stamp of stamped messages (those whose first field is a std_msgs/Header) by the same amount. Time
therefore never runs backwards, and nodes that reject out-of-order input stamps (the policy node)
keep working across passes. `Timeline.source_time_ns` maps a sim time back to (pass, bag time),
which is how a looped run is compared with its source.

Latched topics (transient local, e.g. the instruction): the last message recorded before the window
starts is sent first, at the window start, as a late-joining subscriber would have received it.

`playback_events` merges the messages with `/clock` ticks into one wall-ordered stream of events,
consumed lazily, so a player is a plain loop: sleep until the event's wall offset, then act.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from rosbags.typesys.store import Typestore

NS = 1_000_000_000
HEADER_TYPE = "std_msgs/msg/Header"
_CDR_ENCAPSULATIONS = {b"\x00\x00": ">", b"\x00\x01": "<"}  # plain CDR, big / little endian
_INT32_MAX = 2**31 - 1

T = TypeVar("T")


class PlaybackError(ValueError):
    """Playback cannot start or a message cannot be played (the message says why)."""


@dataclass(frozen=True)
class PlaybackConfig:
    """rate: bag seconds per wall second (2 = twice as fast). start: seconds into the bag where playback
    begins. duration: bag seconds to play from there (None: to the end). loop: repeat the window;
    loops: how many passes when looping (None: until stopped). clock_rate: /clock ticks per wall
    second between messages (a tick also precedes every message that is ahead of the last one)."""

    rate: float = 1.0
    start: float = 0.0
    duration: float | None = None
    loop: bool = False
    loops: int | None = None
    clock_rate: float = 100.0

    def __post_init__(self):
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise PlaybackError(f"rate must be a positive number, got {self.rate}")
        if not (math.isfinite(self.start) and self.start >= 0):
            raise PlaybackError(f"start offset must be >= 0 s, got {self.start}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise PlaybackError(f"duration must be a positive number of seconds, got {self.duration}")
        if self.loops is not None and (not self.loop or self.loops < 1):
            raise PlaybackError(f"loops={self.loops} needs loop=True and at least 1 pass")
        if not (math.isfinite(self.clock_rate) and self.clock_rate > 0):
            raise PlaybackError(f"clock_rate must be a positive number, got {self.clock_rate}")

    @property
    def passes(self) -> int | None:
        """Number of passes over the window (None: unbounded)."""
        return self.loops if self.loop else 1


@dataclass(frozen=True)
class Timeline:
    """The played window of a bag and the linear map between bag (sim) time and wall time."""

    start_ns: int  # bag time at which playback begins (wall offset 0)
    stop_ns: int  # messages recorded at or after this are not played
    period_ns: int  # bag time between the starts of two passes (the shift of each pass)
    rate: float
    passes: int | None

    @classmethod
    def for_bag(cls, config: PlaybackConfig, bag_start_ns: int, bag_end_ns: int, message_count: int) -> Timeline:
        """The timeline for a bag spanning [bag_start_ns, bag_end_ns] with `message_count` played messages.

        Without a duration the window runs to the bag's end, and a loop period is the window plus one
        mean gap between messages (so the last and the first message of two passes are not sent at once)."""
        if message_count <= 0 or bag_end_ns < bag_start_ns:
            raise PlaybackError("the bag holds no message on the topics to play")
        start_ns = bag_start_ns + round(config.start * NS)
        length = (bag_end_ns - bag_start_ns) / NS
        if start_ns > bag_end_ns:
            raise PlaybackError(f"start offset {config.start:.3f} s is past the end of the bag ({length:.3f} s long)")
        if config.duration is not None:
            period_ns = round(config.duration * NS)
            stop_ns = start_ns + period_ns
        else:
            mean_gap = (bag_end_ns - bag_start_ns) / (message_count - 1) if message_count > 1 else 0.0
            period_ns = round(bag_end_ns - start_ns + mean_gap)
            stop_ns = bag_end_ns + 1
            if config.loop and period_ns <= 0:
                raise PlaybackError("looping a window that holds a single instant needs a duration")
        return cls(start_ns, stop_ns, period_ns, config.rate, config.passes)

    def contains(self, recorded_ns: int) -> bool:
        return self.start_ns <= recorded_ns < self.stop_ns

    def shift_ns(self, pass_index: int) -> int:
        """How far pass `pass_index` moves recorded times and header stamps."""
        return pass_index * self.period_ns

    def wall_offset(self, sim_ns: int) -> float:
        """Wall seconds after playback began at which the graph should be at sim time `sim_ns`."""
        return (sim_ns - self.start_ns) / NS / self.rate

    def sim_time_ns(self, wall_offset: float) -> int:
        """Sim time (what /clock says) `wall_offset` wall seconds after playback began."""
        return self.start_ns + round(wall_offset * self.rate * NS)

    def pass_of(self, sim_ns: int) -> int:
        """The pass whose time range holds sim time `sim_ns` (0 before the window)."""
        if self.period_ns <= 0 or sim_ns < self.start_ns:
            return 0
        index = (sim_ns - self.start_ns) // self.period_ns
        return int(index if self.passes is None else min(index, self.passes - 1))

    def source_time_ns(self, sim_ns: int) -> tuple[int, int]:
        """(pass, recorded bag time) of sim time `sim_ns`: the inverse of the per-pass shift."""
        index = self.pass_of(sim_ns)
        return index, sim_ns - self.shift_ns(index)

    def pass_indices(self) -> Iterator[int]:
        index = 0
        while self.passes is None or index < self.passes:
            yield index
            index += 1


@dataclass(frozen=True)
class PlaybackEvent(Generic[T]):
    """At `wall_offset` s after playback began: publish `item` (or, when it is None, only the clock),
    with the graph's clock at `sim_time_ns`. `pass_index` is the loop pass the event belongs to."""

    wall_offset: float
    sim_time_ns: int
    pass_index: int
    item: T | None = None

    @property
    def is_clock(self) -> bool:
        return self.item is None


def playback_events(timeline: Timeline, read_pass: Callable[[int], Iterable[tuple[int, T]]],
                    clock_rate: float | None = None) -> Iterator[PlaybackEvent[T]]:
    """Wall-ordered events of a playback. `read_pass(k)` yields (recorded time ns, item) of pass k in time
    order (the caller reads the bag lazily, once per pass). With `clock_rate`, clock-only events tick
    every 1/clock_rate wall seconds between messages, and one precedes every message whose sim time is
    ahead of the last clock event, so the graph's clock never lags the data it has received.

    Times that go backwards within the stream are sent at once (never scheduled in the past). A pass
    without messages ends the playback: every later pass would be just as empty (no endless idle loop)."""
    period = 1.0 / clock_rate if clock_rate else None
    last_clock_ns: int | None = None
    next_tick = 0
    latest_offset = 0.0
    for pass_index in timeline.pass_indices():
        shift = timeline.shift_ns(pass_index)
        empty = True
        for recorded_ns, item in read_pass(pass_index):
            empty = False
            sim_ns = recorded_ns + shift
            offset = max(timeline.wall_offset(sim_ns), latest_offset)
            latest_offset = offset
            if period is not None:
                while next_tick * period < offset:
                    tick_offset = next_tick * period
                    next_tick += 1
                    tick_ns = timeline.sim_time_ns(tick_offset)
                    if last_clock_ns is None or tick_ns > last_clock_ns:
                        last_clock_ns = tick_ns
                        yield PlaybackEvent(tick_offset, tick_ns, timeline.pass_of(tick_ns))
                if last_clock_ns is None or sim_ns > last_clock_ns:
                    last_clock_ns = sim_ns
                    yield PlaybackEvent(offset, sim_ns, pass_index)
            yield PlaybackEvent(offset, sim_ns, pass_index, item)
        if empty:
            return


def latest_by_topic(items: Iterable[tuple[str, int, T]]) -> list[tuple[str, int, T]]:
    """The last (topic, recorded time ns, item) of each topic, in time order: what a latched topic has
    delivered to a subscriber that joins after them."""
    latest: dict[str, tuple[str, int, T]] = {}
    for entry in items:
        latest[entry[0]] = entry
    return sorted(latest.values(), key=lambda entry: entry[1])


def pass_messages(timeline: Timeline, pass_index: int, window: Iterable[tuple[str, int, T]],
                  latched_before: Iterable[tuple[str, int, T]] = ()) -> Iterator[tuple[int, T]]:
    """(recorded time ns, item) played in one pass, for `playback_events`' read_pass.

    window: (topic, recorded time ns, item) in time order, read around the window (items outside it
    are dropped). latched_before: messages of latched topics; on the first pass the last one of each
    topic recorded before the window is sent first, at the window start (not iterated on later passes)."""
    if pass_index == 0:
        carried = latest_by_topic(entry for entry in latched_before if entry[1] < timeline.start_ns)
        for _, _, item in carried:
            yield timeline.start_ns, item
    for _, recorded_ns, item in window:
        if timeline.contains(recorded_ns):
            yield recorded_ns, item


def starts_with_header(typestore: Typestore, msgtype: str) -> bool:
    """True when a message type's first field is a std_msgs/Header (its stamp leads the CDR payload)."""
    fields = typestore.fielddefs.get(msgtype, (None, []))[1]
    return bool(fields) and fields[0][1][1] == HEADER_TYPE


def shift_header_stamp(raw: bytes, shift_ns: int) -> bytes:
    """A serialized message (plain CDR) whose leading std_msgs/Header stamp is moved by `shift_ns`.

    The stamp (int32 sec, uint32 nanosec) is the first thing after the 4-byte encapsulation header,
    so it is patched in place without deserializing the rest (images stay untouched bytes)."""
    if shift_ns == 0:
        return raw
    if len(raw) < 12:
        raise PlaybackError(f"a {len(raw)}-byte message is too short to hold a header stamp")
    order = _CDR_ENCAPSULATIONS.get(bytes(raw[:2]))
    if order is None:
        raise PlaybackError(f"unsupported serialization (encapsulation bytes {bytes(raw[:2]).hex()}); "
                            "expected plain CDR")
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    total = sec * NS + nanosec + shift_ns
    if not 0 <= total // NS <= _INT32_MAX:
        raise PlaybackError(f"shifted stamp {total / NS:.3f} s does not fit a ROS time")
    patched = bytearray(raw)
    struct.pack_into(order + "iI", patched, 4, total // NS, total % NS)
    return bytes(patched)
