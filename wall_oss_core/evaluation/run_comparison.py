"""Comparison of a live run of the graph with the bag that was replayed into it, with the offline metrics.

The run's action chunks are the predictions; the source bag is the recording they are judged against,
exactly as in offline evaluation (`wall_oss_core.evaluation.open_loop.Evaluator`): each run chunk is evaluated
at its own stamp (the observation time the live policy node assigned it), the observation is rebuilt
from the source bag by the same assembler (it supplies the end-effector reference for relative
action spaces), and the ground truth is the source's recorded chunk current at that instant (or its
joint states, when the source holds no chunks in the run's action space). Metrics, report, plots and
coverage are therefore those of `wall-oss eval`; only the instants and the predictions differ.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from wall_oss_core.backends.replay import ACTION_CHUNK_TYPE, Recording, ReplayPolicy
from wall_oss_core.data.bag_reader import BagReader
from wall_oss_core.data.playback import NS, Timeline
from wall_oss_core.evaluation.open_loop import EvaluationConfig, EvaluationResult, Evaluator
from wall_oss_core.policy.interface import Chunk, chunk_from_message
from wall_oss_core.robot.config import RobotConfig


class RunComparisonError(RuntimeError):
    """The run cannot be compared (the message says what is missing)."""


def run_chunks(run_bag: str | Path, topic: str) -> tuple[list[Chunk], int]:
    """Valid ActionChunks of `topic` in a recorded run, and how many were invalid."""
    chunks, invalid = [], 0
    with BagReader(run_bag) as reader:
        if topic not in reader.topics or reader.topics[topic].msgtype != ACTION_CHUNK_TYPE:
            return [], 0
        for item in reader.messages([topic]):
            try:
                chunks.append(chunk_from_message(item.message))
            except ValueError:
                invalid += 1
    return chunks, invalid


def chunks_by_pass(chunks: list[Chunk], timeline: Timeline) -> dict[int, list[Chunk]]:
    """A looped run's chunks grouped by the pass their stamp falls in, each restamped into the source
    bag's time (the pass's shift undone), passes in order."""
    passes: dict[int, list[Chunk]] = {}
    for chunk in chunks:
        pass_index, source_ns = timeline.source_time_ns(round(chunk.stamp * NS))
        passes.setdefault(pass_index, []).append(replace(chunk, stamp=source_ns / NS))
    return dict(sorted(passes.items()))


class _RunEvaluator(Evaluator):
    """An Evaluator whose instants are the run's chunk stamps and whose policy answers each instant
    with the run's chunk of that stamp (absolute replay of the run)."""

    def __init__(self, chunks: list[Chunk], robot_config: RobotConfig | str | Path | None, config: EvaluationConfig):
        super().__init__(ReplayPolicy(Recording(chunks, source="the live run"), alignment="absolute"),
                         robot_config, config)
        self._run_stamps = sorted({chunk.stamp for chunk in chunks})

    def _instants(self, reader, recorded, cameras, trajectory) -> list[float]:
        stamps = self._run_stamps
        return stamps[:self.config.max_instants] if self.config.max_instants else stamps


def compare_run(source_bag: str | Path, chunks: list[Chunk], out_dir: str | Path | None = None,
                robot_config: RobotConfig | str | Path | None = None,
                config: EvaluationConfig = EvaluationConfig(progress=False), extra_metrics: dict | None = None
                ) -> EvaluationResult:
    """Metrics of a run's chunks (stamped in the source bag's time base) against the source bag, with
    `extra_metrics` added; with `out_dir`, also metrics.json, report.html, plots and a bag of the
    compared chunks there."""
    if not chunks:
        raise RunComparisonError(f"the run published no action chunks on {config.topic('action_chunk')}; "
                                 "nothing to compare with the source bag")
    result = _RunEvaluator(chunks, robot_config, config).evaluate(source_bag, out_dir)
    result.metrics["instant_mode"] = "run_chunks"
    result.metrics["run_chunks"] = len(chunks)
    result.metrics.update(extra_metrics or {})
    if out_dir is not None:
        Path(result.outputs["metrics"]).write_text(json.dumps(result.metrics, indent=2))
    return result


def topic_rates(bag: str | Path, topics: list[str]) -> dict[str, dict]:
    """Message count and mean rate [Hz] (by receive time) of each of `topics` present in a bag."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    counts: dict[str, int] = {}
    with BagReader(bag) as reader:
        present = [topic for topic in topics if topic in reader.topics]
        for item in reader.messages(present, deserialize=False):
            first.setdefault(item.topic, item.log_time_ns)
            last[item.topic] = item.log_time_ns
            counts[item.topic] = counts.get(item.topic, 0) + 1
    summary = {}
    for topic in counts:
        span = (last[topic] - first[topic]) * 1e-9
        summary[topic] = {"messages": counts[topic],
                          "rate_hz": (counts[topic] - 1) / span if counts[topic] > 1 and span > 0 else None}
    return summary
