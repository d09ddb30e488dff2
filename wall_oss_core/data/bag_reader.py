"""Robust reading of rosbag2 bags (MCAP or SQLite3) for evaluation, export and live replay.

A bag on disk can be a finished rosbag2 directory, a single `.mcap` / `.db3` file, a directory whose
recorder died before writing `metadata.yaml`, or a file cut short by a crash or a full disk. The
reader opens all of them: finished bags through `rosbags`, and MCAP files without a valid footer by
scanning their records from the start and keeping every complete message (a salvage that is
reported in `warnings`). Messages come out in receive-time order, deserialized with the project's
type store; a message that fails to deserialize, or a topic whose type is unknown and whose bag
carries no definition for it, is skipped and counted rather than ending the read. Reading is a
single forward pass over finite files with every record length checked against the bytes left,
so a corrupt bag ends in a `BagError` or a partial result, never a hang.
"""
from __future__ import annotations

import heapq
import logging
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.rosbag2.storage_mcap import decompress as decompress_mcap_chunk
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from wall_oss_core.data.bag_types import wall_oss_typestore

LOG = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06
STORAGE_SUFFIXES = (".mcap", ".db3")


class BagError(RuntimeError):
    """The bag cannot be read at all, or lacks something the caller requires (the message says what)."""


@dataclass(frozen=True)
class TopicSummary:
    msgtype: str
    message_count: int
    known_type: bool


@dataclass(frozen=True)
class BagMessage:
    """One message: `log_time` is the bag's receive time [s]; `message` the deserialized rosbags object."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    message: Any

    @property
    def log_time(self) -> float:
        return self.log_time_ns * 1e-9


def storage_files(path: Path) -> list[Path]:
    """The storage files of a bag path (a file, or every .mcap/.db3 file of a directory, in name order)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())


class _SalvagedMcap:
    """An MCAP file read by a forward scan of its records, for files without a valid summary/footer.

    Keeps schemas, channels and every complete message up to the first incomplete or corrupt record;
    `stop_reason` says why the scan ended early (None when it reached the end cleanly)."""

    def __init__(self, path: Path):
        self.path = path
        self.schemas: dict[int, tuple[str, str, str]] = {}  # id -> (name, encoding, text)
        self.channels: dict[int, tuple[int, str, str]] = {}  # id -> (schema id, topic, encoding)
        self.messages: list[tuple[int, int, int, bytes]] = []  # (log_time, sequence, channel id, data)
        self.stop_reason: str | None = None
        data = path.read_bytes()
        if not data:
            raise BagError(f"{path} is empty (0 bytes)")
        if not data.startswith(MCAP_MAGIC):
            raise BagError(f"{path} is not an MCAP file (bad magic bytes)")
        self._scan(data, len(MCAP_MAGIC), len(data), top_level=True)
        self.messages.sort(key=lambda item: (item[0], item[1]))

    def _scan(self, data: bytes, position: int, end: int, top_level: bool):
        while position < end:
            if top_level and data.startswith(MCAP_MAGIC, position) and position + len(MCAP_MAGIC) == end:
                return  # trailing magic of a finished file
            if position + 9 > end:
                self.stop_reason = f"record header cut at byte {position}"
                return
            opcode = data[position]
            (length,) = struct.unpack_from("<Q", data, position + 1)
            body_start = position + 9
            if length > end - body_start:
                self.stop_reason = f"record at byte {position} needs {length} bytes, only {end - body_start} left"
                return
            body = memoryview(data)[body_start:body_start + length]
            try:
                self._record(opcode, body)
            except (struct.error, ReaderError, ValueError, UnicodeDecodeError) as error:
                self.stop_reason = f"corrupt record (opcode 0x{opcode:02x}) at byte {position}: {error}"
                return
            if opcode == 0x02:  # footer: the data section is over
                return
            position = body_start + length

    @staticmethod
    def _string(body: memoryview, offset: int) -> tuple[str, int]:
        (size,) = struct.unpack_from("<I", body, offset)
        if offset + 4 + size > len(body):
            raise ValueError("string runs past its record")
        return bytes(body[offset + 4:offset + 4 + size]).decode(), offset + 4 + size

    def _record(self, opcode: int, body: memoryview):
        if opcode == _OP_SCHEMA:
            (schema_id,) = struct.unpack_from("<H", body, 0)
            name, offset = self._string(body, 2)
            encoding, offset = self._string(body, offset)
            (size,) = struct.unpack_from("<I", body, offset)
            self.schemas[schema_id] = (name, encoding, bytes(body[offset + 4:offset + 4 + size]).decode())
        elif opcode == _OP_CHANNEL:
            channel_id, schema_id = struct.unpack_from("<HH", body, 0)
            topic, offset = self._string(body, 4)
            encoding, _ = self._string(body, offset)
            self.channels[channel_id] = (schema_id, topic, encoding)
        elif opcode == _OP_MESSAGE:
            channel_id, _sequence, log_time, _publish_time = struct.unpack_from("<HIQQ", body, 0)
            self.messages.append((log_time, len(self.messages), channel_id, bytes(body[22:])))
        elif opcode == _OP_CHUNK:
            _start, _end, uncompressed_size, crc = struct.unpack_from("<QQQI", body, 0)
            compression, offset = self._string(body, 28)
            (compressed_size,) = struct.unpack_from("<Q", body, offset)
            payload = bytes(body[offset + 8:offset + 8 + compressed_size])
            if len(payload) != compressed_size:
                raise ValueError("chunk payload runs past its record")
            inner = decompress_mcap_chunk(payload, compression, uncompressed_size, crc)
            self._scan(inner, 0, len(inner), top_level=False)
            if self.stop_reason:
                raise ValueError(f"inside chunk: {self.stop_reason}")

    def connections(self) -> list[Connection]:
        connections = []
        for channel_id, (schema_id, topic, encoding) in sorted(self.channels.items()):
            name, schema_encoding, text = self.schemas.get(schema_id, ("", "", ""))
            fmt = MessageDefinitionFormat.MSG if schema_encoding == "ros2msg" else MessageDefinitionFormat.NONE
            connections.append(Connection(channel_id, topic, name, MessageDefinition(fmt, text), "",
                                          sum(1 for m in self.messages if m[2] == channel_id),
                                          ConnectionExtRosbag2(encoding, []), None))
        return connections


class BagReader:
    """Open a bag once; iterate chosen topics in time order as many times as needed.

    Attributes after construction: `path`, `topics` (topic → TopicSummary), `warnings` (what was
    salvaged, skipped or missing, in plain words), `salvaged` (True when part of the bag was
    recovered by scanning), `file_bytes` (size of the storage files). `bytes_read` grows with the
    payload bytes delivered by `messages`; `skipped` counts messages dropped per reason.
    """

    def __init__(self, path: str | Path, typestore: Typestore | None = None):
        self.path = Path(path)
        self.warnings: list[str] = []
        self.skipped: Counter[str] = Counter()
        self.bytes_read = 0
        self.salvaged = False
        self._sources: list[Reader | _SalvagedMcap] = []
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        files = storage_files(self.path)
        if self.path.is_dir() and not files:
            raise BagError(f"bag directory {self.path} contains no .mcap or .db3 storage file")
        self.file_bytes = sum(f.stat().st_size for f in files)
        if self.file_bytes == 0:
            raise BagError(f"bag {self.path} is empty (its storage files hold 0 bytes)")
        self._open(files)
        self.connections: list[Connection] = [c for source in self._sources for c in self._source_connections(source)]
        self.typestore = self._typestore_for(typestore or wall_oss_typestore())
        self.topics = self._summarize()
        for warning in self.warnings:
            LOG.warning("%s: %s", self.path, warning)

    # --- opening -------------------------------------------------------------------------------
    def _open(self, files: list[Path]):
        if self.path.is_dir() and (self.path / "metadata.yaml").exists():
            reader = Reader(self.path)
            try:
                reader.open()
                self._sources.append(reader)
                return
            except (ReaderError, OSError, KeyError, ValueError) as error:
                self.warnings.append(f"rosbag2 directory could not be opened as a whole ({error}); "
                                     "reading its storage files one by one")
        elif self.path.is_dir():
            self.warnings.append("no metadata.yaml (the recorder probably stopped before finishing); "
                                 "reading the storage files directly")
        for file in files:
            self._sources.append(self._open_file(file))

    def _open_file(self, file: Path) -> Reader | _SalvagedMcap:
        if file.stat().st_size == 0:
            raise BagError(f"bag file {file} is empty (0 bytes)")
        if file.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"{file} is not a rosbag2 storage file (expected .mcap or .db3)")
        reader = Reader(file)
        try:
            reader.open()
            return reader
        except (ReaderError, OSError, ValueError, KeyError, AssertionError) as error:
            if file.suffix != ".mcap":
                raise BagError(f"cannot read SQLite3 bag {file}: {error}. A damaged SQLite3 file cannot be "
                               "partly recovered; MCAP bags (the recorder's default) can") from error
            salvaged = _SalvagedMcap(file)
            self.salvaged = True
            detail = salvaged.stop_reason or "the index/footer is missing"
            self.warnings.append(f"{file.name} is truncated or damaged ({error}); recovered "
                                 f"{len(salvaged.messages)} complete messages by scanning ({detail})")
            return salvaged

    @staticmethod
    def _source_connections(source: Reader | _SalvagedMcap) -> list[Connection]:
        return source.connections() if isinstance(source, _SalvagedMcap) else list(source.connections)

    def _typestore_for(self, base: Typestore) -> Typestore:
        """The base store, or a copy extended with definitions the bag carries for types it lacks."""
        missing = {c.msgtype: c.msgdef for c in self.connections if c.msgtype not in base.fielddefs}
        extra = {}
        for msgtype, msgdef in missing.items():
            if msgdef.format != MessageDefinitionFormat.MSG or not msgdef.data.strip():
                continue
            try:
                extra.update(_types_from_bundle(msgdef.data, msgtype))
            except Exception as error:  # rosbags raises several parser error types
                self.warnings.append(f"the bag's definition of {msgtype} does not parse: {error}")
        if not extra:
            return base
        store = get_typestore(Stores.EMPTY)
        store.register(dict(base.fielddefs))
        store.register({name: fields for name, fields in extra.items() if name not in base.fielddefs})
        return store

    def _summarize(self) -> dict[str, TopicSummary]:
        topics: dict[str, TopicSummary] = {}
        for connection in self.connections:
            known = connection.msgtype in self.typestore.fielddefs
            previous = topics.get(connection.topic)
            count = connection.msgcount + (previous.message_count if previous else 0)
            topics[connection.topic] = TopicSummary(connection.msgtype, count, known)
            if not known:
                self.warnings.append(f"topic {connection.topic} has type {connection.msgtype}, which is neither "
                                     "known nor defined in the bag; its messages will be skipped")
        return topics

    # --- reading -------------------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        return sum(t.message_count for t in self.topics.values())

    def check_topics(self, required: Iterable[str]) -> None:
        """Raise BagError naming every required topic the bag lacks (and the topics it has)."""
        missing = [t for t in required if t not in self.topics]
        if missing:
            raise BagError(f"bag {self.path} has no messages on {missing}; it has {sorted(self.topics)}")

    def time_range(self) -> tuple[float, float]:
        """First and last receive time [s] of the bag (0, 0 when it holds no message)."""
        bounds = [self._source_bounds(s) for s in self._sources]
        bounds = [b for b in bounds if b is not None]
        if not bounds:
            return 0.0, 0.0
        return min(b[0] for b in bounds) * 1e-9, max(b[1] for b in bounds) * 1e-9

    @staticmethod
    def _source_bounds(source: Reader | _SalvagedMcap) -> tuple[int, int] | None:
        if isinstance(source, _SalvagedMcap):
            return (source.messages[0][0], source.messages[-1][0]) if source.messages else None
        if source.message_count == 0:
            return None
        return source.start_time, source.end_time - 1

    def messages(self, topics: Iterable[str] | None = None, *, deserialize: bool = True,
                 start: float | None = None, stop: float | None = None) -> Iterator[BagMessage]:
        """Messages of `topics` (all when None) in receive-time order, from `start` to before `stop` [s].

        Topics absent from the bag are warned about once and otherwise ignored (use `check_topics`
        to make them an error). A storage failure in mid-read stops the iteration with a warning,
        keeping what was read (partial result)."""
        wanted = set(self.topics) if topics is None else set(topics)
        for topic in sorted(wanted - set(self.topics)):
            self._warn_once(f"topic {topic} is not in the bag")
        start_ns = None if start is None else int(start * 1e9)
        stop_ns = None if stop is None else int(stop * 1e9)
        streams = [self._source_messages(s, wanted, start_ns, stop_ns) for s in self._sources]
        merged = streams[0] if len(streams) == 1 else _merge_by_time(streams)
        for connection, timestamp, raw in merged:
            if connection.msgtype not in self.typestore.fielddefs:
                self.skipped[f"unknown type {connection.msgtype}"] += 1
                continue
            message = None
            if deserialize:
                try:
                    message = self._deserialize(raw, connection.msgtype)
                except Exception as error:  # corrupt CDR raises assorted errors inside rosbags
                    self.skipped[f"undecodable {connection.msgtype}"] += 1
                    self._warn_once(f"a message on {connection.topic} does not deserialize ({error}); skipped")
                    continue
            self.bytes_read += len(raw)
            yield BagMessage(connection.topic, connection.msgtype, timestamp, bytes(raw), message)

    def _deserialize(self, raw: bytes, msgtype: str):
        """CDR → message. Trailing bytes after a complete message are tolerated: rclpy's serializer
        (and so bags recorded from this ROS build) pads some messages, e.g. JointState, with up to 8
        bytes past the end, which `Typestore.deserialize_cdr` rejects as a size mismatch."""
        if len(raw) < 4 or bytes(raw[:2]) not in (b"\x00\x00", b"\x00\x01"):
            raise ValueError("invalid or unsupported CDR encapsulation header")
        msgdef = self.typestore.get_msgdef(msgtype)
        parse = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
        message, _ = parse(memoryview(raw)[4:], 0, msgdef.cls, self.typestore)
        return message

    def _source_messages(self, source, wanted: set[str], start_ns, stop_ns):
        if isinstance(source, _SalvagedMcap):
            by_id = {c.id: c for c in source.connections() if c.topic in wanted}
            for timestamp, _, channel_id, raw in source.messages:
                if channel_id in by_id and (start_ns is None or timestamp >= start_ns) and (
                        stop_ns is None or timestamp < stop_ns):
                    yield by_id[channel_id], timestamp, raw
            return
        connections = [c for c in source.connections if c.topic in wanted]
        if not connections:
            return
        try:
            yield from source.messages(connections, start=start_ns, stop=stop_ns)
        except (ReaderError, OSError, ValueError, KeyError, AssertionError) as error:
            self._warn_once(f"reading stopped early: {error}; the messages before it are kept")
            self.skipped["storage read error"] += 1

    def _warn_once(self, text: str):
        if text not in self.warnings:
            self.warnings.append(text)
            LOG.warning("%s: %s", self.path, text)

    def close(self):
        for source in self._sources:
            if isinstance(source, Reader) and source.is_open:
                source.close()
        self._sources = []

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info):
        self.close()


def _merge_by_time(streams):
    """Merge per-file (connection, timestamp, raw) streams into one receive-time-ordered stream."""
    return heapq.merge(*streams, key=lambda item: item[1])


def _types_from_bundle(text: str, msgtype: str) -> dict:
    """Types from a rosbag2 message definition bundle: the main definition, then `MSG: pkg/Name`
    sections separated by lines of '=' (the layout ros2 bag and rosbags write)."""
    types = {}
    sections = text.split("=" * 80 + "\n")
    types.update(get_types_from_msg(sections[0], msgtype))
    for section in sections[1:]:
        header, _, body = section.partition("\n")
        if header.startswith("MSG: "):
            name = header[5:].strip()
            if "/msg/" not in name:
                package, _, short = name.partition("/")
                name = f"{package}/msg/{short}"
            types.update(get_types_from_msg(body, name))
    return types

