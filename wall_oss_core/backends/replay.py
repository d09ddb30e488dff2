"""Replay backend: serves recorded action chunks as if a policy had just computed them.

Useful on its own for dry runs of recorded demonstrations through the executor and the safety
supervisor, for open-loop evaluation of a bag against its own chunks, and for the demo when no
checkpoint is at hand.

Sources: a rosbag2 bag (MCAP or SQLite3; a bag directory or the storage file) holding
`wall_oss/msg/ActionChunk` messages, or a chunk file written by `save_recording`:

  .npz          arrays stamps (N,), actions (N, H, A), dt (N,), first_action_offset (N,),
                action_names (A,) str, action_space () str, instructions (N,) str
  .safetensors  tensors stamps, actions, dt, first_action_offset (float64); metadata action_space,
                action_names and instructions (JSON lists)

Alignment (which recorded chunk answers an observation at time t):
  relative  t and the recorded stamps are measured from their own starts (the first observation the
            policy sees; the first recorded chunk), so a recording plays back from its beginning
            whenever replay starts. With `loop`, playback wraps around at the end of the recording.
  absolute  t is compared with the recorded stamps directly (replaying a bag's own chunks against
            that bag's observations, or a bag played back with its original clock).
The answer is the latest recorded chunk whose (aligned) stamp is ≤ t and whose actions still reach
t. It is re-stamped to the observation; its first_action_offset is shifted back by how long ago the
recorded chunk started, so every action keeps the time it had in the recording (the offset may be
negative, and the executor skips actions that already elapsed). Nothing matching → PolicyError.
"""
from __future__ import annotations

import json
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from wall_oss_core.policy.interface import Chunk, Observation, PolicyError, chunk_from_message

ACTION_CHUNK_TYPE = "wall_oss/msg/ActionChunk"
ALIGNMENTS: tuple[str, ...] = ("relative", "absolute")
Alignment = Literal["relative", "absolute"]
_STAMP_TOLERANCE = 1e-6  # [s] float round-off of stamps and periods must not hide an exact match


class RecordingError(ValueError):
    """A recording that cannot be replayed: missing, corrupt, empty or inconsistent."""


@dataclass
class Recording:
    """Recorded chunks sorted by stamp, all in one action space with the same action names."""

    chunks: list[Chunk]
    source: str = ""
    skipped: list[str] = field(default_factory=list)  # why unusable messages of a bag were left out

    def __post_init__(self):
        if not self.chunks:
            detail = f" ({len(self.skipped)} unusable: {self.skipped[0]})" if self.skipped else ""
            raise RecordingError(f"recording {self.source or '(in memory)'} holds no usable action chunks{detail}")
        self.chunks = sorted(self.chunks, key=lambda chunk: chunk.stamp)
        first = self.chunks[0]
        for chunk in self.chunks[1:]:
            if (chunk.action_space, chunk.action_names) != (first.action_space, first.action_names):
                raise RecordingError(
                    f"recording {self.source} mixes action spaces: {first.action_space} {len(first.action_names)} dims "
                    f"and {chunk.action_space} {len(chunk.action_names)} dims at stamp {chunk.stamp:.6f}")

    @property
    def stamps(self) -> np.ndarray:
        return np.array([chunk.stamp for chunk in self.chunks])


def load_bag(path: str | Path, topic: str | None = None) -> Recording:
    """ActionChunk messages of one topic of a rosbag2 bag (the only ActionChunk topic when `topic` is None)."""
    from rosbags.rosbag2 import Reader

    from wall_oss_core.data.bag_types import wall_oss_typestore

    store = wall_oss_typestore()
    try:
        with Reader(path) as reader:
            candidates = sorted({c.topic for c in reader.connections if c.msgtype == ACTION_CHUNK_TYPE})
            if topic is not None and topic not in candidates:
                raise RecordingError(f"bag {path} has no {ACTION_CHUNK_TYPE} topic {topic!r}; it has {candidates}")
            if topic is None:
                if len(candidates) != 1:
                    raise RecordingError(f"bag {path} has {len(candidates)} {ACTION_CHUNK_TYPE} topics {candidates}; "
                                         "choose one")
                topic = candidates[0]
            chunks, skipped = [], []
            connections = [c for c in reader.connections if c.topic == topic]
            for connection, _, raw in reader.messages(connections=connections):
                try:
                    chunks.append(chunk_from_message(store.deserialize_cdr(raw, connection.msgtype)))
                except Exception as error:  # a corrupt or malformed message is skipped, the rest replays
                    skipped.append(f"{type(error).__name__}: {error}")
    except RecordingError:
        raise
    except Exception as error:  # rosbags raises several unrelated types for missing / corrupt storage
        raise RecordingError(f"cannot read bag {path}: {type(error).__name__}: {error}") from error
    return Recording(chunks, source=f"{path} [{topic}]", skipped=skipped)


def _arrays(recording: Recording) -> dict[str, np.ndarray]:
    shapes = {chunk.actions.shape for chunk in recording.chunks}
    if len(shapes) != 1:
        raise RecordingError(f"a chunk file needs chunks of one shape; got {sorted(shapes)}")
    return {
        "stamps": recording.stamps,
        "actions": np.stack([chunk.actions for chunk in recording.chunks]),
        "dt": np.array([chunk.dt for chunk in recording.chunks]),
        "first_action_offset": np.array([chunk.first_action_offset for chunk in recording.chunks]),
    }


def save_recording(path: str | Path, recording: Recording) -> None:
    """Write a recording as .npz or .safetensors (chosen by suffix); chunks must share one shape."""
    path = Path(path)
    arrays = _arrays(recording)
    first = recording.chunks[0]
    instructions = [chunk.instruction for chunk in recording.chunks]
    if path.suffix == ".npz":
        np.savez(path, **arrays, action_names=np.array(first.action_names, dtype=str),
                 action_space=np.array(first.action_space), instructions=np.array(instructions, dtype=str))
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path), metadata={"action_space": first.action_space,
                                               "action_names": json.dumps(first.action_names),
                                               "instructions": json.dumps(instructions)})
    else:
        raise RecordingError(f"chunk files are .npz or .safetensors, not {path.name}")


def _recording_from_arrays(path: Path, arrays: dict, action_space: str, action_names: list[str],
                           instructions: list[str]) -> Recording:
    try:
        stamps, actions = np.asarray(arrays["stamps"], float), np.asarray(arrays["actions"], float)
        dts, offsets = np.asarray(arrays["dt"], float), np.asarray(arrays["first_action_offset"], float)
    except KeyError as error:
        raise RecordingError(f"chunk file {path} lacks array {error}") from error
    count = len(stamps)
    if actions.ndim != 3 or {len(actions), len(dts), len(offsets), len(instructions)} != {count}:
        raise RecordingError(f"chunk file {path}: {count} stamps but actions {actions.shape}, {len(dts)} time steps, "
                             f"{len(offsets)} offsets and {len(instructions)} instructions")
    if not (np.all(np.isfinite(actions)) and np.all(np.isfinite(stamps)) and np.all(np.isfinite(offsets))):
        raise RecordingError(f"chunk file {path} holds non-finite values")
    try:
        chunks = [Chunk(actions=actions[i], dt=float(dts[i]), action_space=action_space, action_names=action_names,
                        stamp=float(stamps[i]), instruction=instructions[i], first_action_offset=float(offsets[i]))
                  for i in range(count)]
    except ValueError as error:
        raise RecordingError(f"chunk file {path}: {error}") from error
    return Recording(chunks, source=str(path))


def load_chunk_file(path: str | Path) -> Recording:
    """Read a recording written by `save_recording`."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            return _recording_from_arrays(path, arrays, str(arrays.get("action_space", "")),
                                          [str(n) for n in arrays.get("action_names", [])],
                                          [str(i) for i in arrays.get("instructions", [])])
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as archive:
                arrays = {key: archive.get_tensor(key) for key in archive.keys()}
                metadata = archive.metadata() or {}
            return _recording_from_arrays(path, arrays, metadata.get("action_space", ""),
                                          json.loads(metadata.get("action_names", "[]")),
                                          json.loads(metadata.get("instructions", "[]")))
    except RecordingError:
        raise
    except Exception as error:  # zip / safetensors / JSON errors of a corrupt file
        raise RecordingError(f"cannot read chunk file {path}: {type(error).__name__}: {error}") from error
    raise RecordingError(f"chunk files are .npz or .safetensors, not {path.name}")


def load_recording(path: str | Path, topic: str | None = None) -> Recording:
    """A chunk file (.npz / .safetensors) or a bag (directory, .mcap or .db3)."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"replay source {path} does not exist")
    if path.suffix in (".npz", ".safetensors"):
        return load_chunk_file(path)
    return load_bag(path, topic)


class ReplayPolicy:
    """A `Policy` that answers each observation with the recorded chunk aligned to its time."""

    def __init__(self, recording: Recording, alignment: Alignment = "relative", loop: bool = False):
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if loop and alignment != "relative":
            raise ValueError("loop only makes sense with relative alignment")
        self.recording = recording
        self.alignment = alignment
        self.loop = loop
        self.action_space = recording.chunks[0].action_space
        self.action_names = list(recording.chunks[0].action_names)
        stamps = recording.stamps
        self._origin = float(stamps[0]) if alignment == "relative" else 0.0
        self._times = list(stamps - self._origin)
        # a loop lasts until the last chunk's start plus one typical gap between chunks
        count = len(stamps)
        gap = (stamps[-1] - stamps[0]) / (count - 1) if count > 1 else recording.chunks[0].dt * recording.chunks[0].horizon
        self._period = self._times[-1] + gap
        self._start: float | None = None  # first observation stamp (relative alignment)

    def _recording_time(self, stamp: float) -> float:
        if self.alignment == "absolute":
            return stamp
        if self._start is None:
            self._start = stamp
        elapsed = stamp - self._start
        if not self.loop:
            return elapsed
        # shift by the tolerance so that a whole number of (round-off inexact) periods lands on 0, not the end
        return max(0.0, (elapsed + _STAMP_TOLERANCE) % self._period - _STAMP_TOLERANCE)

    def predict(self, observation: Observation) -> Chunk:
        started = time.perf_counter()
        t = self._recording_time(observation.stamp)
        index = bisect_right(self._times, t + _STAMP_TOLERANCE) - 1
        if index < 0:
            raise PolicyError(f"observation at {observation.stamp:.6f} s ({self.alignment} time {t:.3f} s) is before "
                              f"the first recorded chunk ({self._times[0]:.3f} s) of {self.recording.source}")
        recorded = self.recording.chunks[index]
        since_start = max(0.0, t - self._times[index])
        covered_until = recorded.first_action_offset + recorded.dt * recorded.horizon
        if since_start >= covered_until:
            raise PolicyError(f"no recorded chunk reaches {self.alignment} time {t:.3f} s: the latest one starts "
                              f"{since_start:.3f} s earlier and covers {covered_until:.3f} s "
                              f"(end of {self.recording.source})")
        return Chunk(actions=recorded.actions.copy(), dt=recorded.dt, action_space=recorded.action_space,
                     action_names=list(recorded.action_names), stamp=observation.stamp,
                     instruction=observation.instruction,
                     first_action_offset=recorded.first_action_offset - since_start,
                     inference_latency=time.perf_counter() - started,
                     extras={"recorded_index": index, "recorded_stamp": recorded.stamp,
                             "recorded_instruction": recorded.instruction})


def replay_policy_from_path(path: str | Path, topic: str | None = None, alignment: Alignment = "relative",
                            loop: bool = False) -> ReplayPolicy:
    """Load a recording (see `load_recording`) and wrap it as a policy."""
    return ReplayPolicy(load_recording(path, topic), alignment=alignment, loop=loop)
