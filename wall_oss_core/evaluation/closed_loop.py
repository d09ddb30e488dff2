"""Closed-loop evaluation results: episodes scored by task progress, summarized per task, with videos and a report.

The yardstick is the Wall-OSS report's task progress (0–100 per episode, stage credit). An episode's outcome
comes from whoever ran it (the simulation through the real graph); this module only aggregates and presents:
per task the mean progress with a 95% t-interval over episodes, the success rate, the time to success, chunk
latency, safety events and rejected inputs; the headline is the mean progress over all episodes.
"""
from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wall_oss_core.evaluation.statistics import summary_statistics


@dataclass
class EpisodeResult:
    """One episode: the task, how far it got (0–100) and what happened on the way."""

    task: str
    seed: int
    instruction: str
    progress: float
    success: bool
    duration_s: float  # episode length in simulated seconds
    time_to_success_s: float | None = None
    stages: dict[str, float] = field(default_factory=dict)  # stage name → credit reached (0–100 scale)
    chunk_latency_s: list[float] = field(default_factory=list)
    safety_events: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    video: str | None = None
    error: str | None = None  # the episode could not run to its end (the graph failed): scored as it stood

    def __post_init__(self):
        if not (math.isfinite(self.progress) and 0.0 <= self.progress <= 100.0):
            raise ValueError(f"task progress must be within 0–100, got {self.progress}")


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """Two-sided 95% Student-t interval of the mean; a single episode gives the point itself."""
    from scipy import stats

    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, mean
    half = float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return mean - half, mean + half


def summarize(episodes: Sequence[EpisodeResult]) -> dict:
    """metrics.json content: per task and overall."""
    if not episodes:
        raise ValueError("no episodes to summarize")
    tasks: dict[str, list[EpisodeResult]] = {}
    for episode in episodes:
        tasks.setdefault(episode.task, []).append(episode)
    per_task = {}
    for task, runs in tasks.items():
        progress = [r.progress for r in runs]
        low, high = interval95(progress)
        successes = [r.time_to_success_s for r in runs if r.success and r.time_to_success_s is not None]
        safety, rejections = Counter(), Counter()
        for r in runs:
            safety.update(r.safety_events)
            rejections.update(r.rejections)
        per_task[task] = {
            "episodes": len(runs), "progress_mean": float(np.mean(progress)), "progress_ci95": [low, high],
            "success_rate": sum(r.success for r in runs) / len(runs),
            "time_to_success_s_mean": float(np.mean(successes)) if successes else None,
            "chunk_latency_s": summary_statistics([v for r in runs for v in r.chunk_latency_s]),
            "safety_events": dict(safety), "rejections": dict(rejections),
            "failed_episodes": sum(r.error is not None for r in runs),
        }
    all_progress = [e.progress for e in episodes]
    low, high = interval95(all_progress)
    return {"task_progress": float(np.mean(all_progress)), "task_progress_ci95": [low, high],
            "success_rate": sum(e.success for e in episodes) / len(episodes), "episodes": len(episodes),
            "tasks": per_task, "episode_results": [asdict(e) for e in episodes]}


def frame_rate(times: Sequence[float], fallback: float) -> float:
    """Frames per second that were actually received (a loaded machine renders below the camera rate),
    so that a video plays in real time; `fallback` for fewer than two frames."""
    if len(times) < 2 or times[-1] <= times[0]:
        return fallback
    return (len(times) - 1) / (times[-1] - times[0])


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: float) -> Path:
    """H.264 MP4 (yuv420p, faststart) of uint8 RGB frames, playable in a browser's <video>."""
    import av

    if not frames:
        raise ValueError("no frames for a video")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            image = np.ascontiguousarray(frame[:stream.height, :stream.width, :3])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_progress_plot(metrics: dict, path: Path) -> Path:
    """Mean task progress per task with its 95% interval, and every episode as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(metrics["tasks"])
    figure, axis = plt.subplots(figsize=(max(4.0, 1.6 * len(tasks) + 1), 3.6))
    for index, task in enumerate(tasks):
        values = metrics["tasks"][task]
        low, high = values["progress_ci95"]
        axis.bar(index, values["progress_mean"], color="#7aa6d8", width=0.6)
        axis.errorbar(index, values["progress_mean"], yerr=[[values["progress_mean"] - low],
                                                              [high - values["progress_mean"]]], color="k", capsize=4)
        episodes = [e["progress"] for e in metrics["episode_results"] if e["task"] == task]
        axis.scatter(index + np.linspace(-0.15, 0.15, len(episodes)), episodes, color="#d9534f", s=12, zorder=3)
    axis.set_xticks(range(len(tasks)), tasks, rotation=15)
    axis.set_ylim(0, 105)
    axis.set_ylabel("task progress (0–100)")
    axis.set_title(f"mean {metrics['task_progress']:.1f} over {metrics['episodes']} episodes")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(metrics: dict, out_dir: Path, title: str = "Closed-loop evaluation") -> Path:
    """report.html beside metrics.json: the headline, per-task table, the progress plot, one video per episode."""
    out_dir = Path(out_dir)
    plot = write_progress_plot(metrics, out_dir / "plots" / "task_progress.png")
    rows = ["<table><tr><th>task</th><th>episodes</th><th>progress mean [95% CI]</th><th>success rate</th>"
            "<th>time to success [s]</th><th>chunk latency median / p95 [s]</th><th>safety events</th></tr>"]
    for task, values in metrics["tasks"].items():
        low, high = values["progress_ci95"]
        latency = values["chunk_latency_s"]
        tts = values["time_to_success_s_mean"]
        rows.append(f"<tr><td>{html.escape(task)}</td><td>{values['episodes']}</td>"
                    f"<td>{values['progress_mean']:.1f} [{low:.1f}, {high:.1f}]</td>"
                    f"<td>{100 * values['success_rate']:.0f}%</td><td>{'–' if tts is None else f'{tts:.1f}'}</td>"
                    f"<td>{latency.get('median', float('nan')):.3f} / {latency.get('p95', float('nan')):.3f}</td>"
                    f"<td>{html.escape(json.dumps(values['safety_events']))}</td></tr>")
    rows.append("</table><h2>Episodes</h2>")
    for episode in metrics["episode_results"]:
        rows.append(f"<div class='episode'><p><b>{html.escape(episode['task'])}</b> seed {episode['seed']}: "
                    f"“{html.escape(episode['instruction'])}” → progress {episode['progress']:.0f}"
                    f"{' (success)' if episode['success'] else ''}"
                    f"{' — error: ' + html.escape(episode['error']) if episode['error'] else ''}</p>")
        if episode["video"]:
            video = Path(episode["video"])
            source = video.relative_to(out_dir).as_posix() if video.is_relative_to(out_dir) else video.as_posix()
            rows.append(f"<video src='{html.escape(source)}' controls muted loop width='320'></video>")
        rows.append("</div>")
    low, high = metrics["task_progress_ci95"]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>wall_oss closed-loop evaluation</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}.episode{display:inline-block;"
            "margin:0 1em 1em 0;vertical-align:top;width:330px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p><b>task progress {metrics['task_progress']:.1f}</b> "
            f"[95% CI {low:.1f}, {high:.1f}] over {metrics['episodes']} episodes, success rate "
            f"{100 * metrics['success_rate']:.0f}%</p>" + "\n".join(rows)
            + f"<h2>Plot</h2><img src='{plot.relative_to(out_dir).as_posix()}'></body></html>")
    path = out_dir / "report.html"
    path.write_text(page)
    return path


class EpisodeMonitor:
    """Follows one closed-loop episode from what the running graph reports and decides when it ends.

    The clock starts at the first action chunk (a model may take long to load; the scene waits at rest
    until then). The episode ends `linger` seconds after the success stage first held (so its video
    shows the result), or `timeout` seconds after the start. Stage reports come from the simulator's
    scoring (`<task>/<stage>`); progress is the highest credit of a stage reached (stage credit)."""

    def __init__(self, task: str, seed: int, instruction: str, stage_progress: dict[str, float], success_stage: str,
                 *, timeout: float, linger: float = 1.0):
        if success_stage not in stage_progress:
            raise ValueError(f"success stage {success_stage!r} is not one of {sorted(stage_progress)}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"episode timeout must be a positive number of seconds, got {timeout}")
        self.task, self.seed, self.instruction = task, seed, instruction
        self.stage_progress, self.success_stage = stage_progress, success_stage
        self.timeout, self.linger = timeout, linger
        self.started: float | None = None
        self.success_time: float | None = None
        self.reached: dict[str, float] = {}
        self.stage_log: list[tuple[float, str, float]] = []  # (time, stage, credit) in the order reached
        self.latencies: list[float] = []
        self.safety_events: Counter[str] = Counter()
        self.rejections: dict[str, int] = {}
        self._safety_state = "OK"

    def on_chunk(self, inference_latency: float, now: float) -> None:
        if self.started is None:
            self.started = now
        self.latencies.append(float(inference_latency))

    def on_stage(self, report: str, now: float) -> None:
        """A `<task>/<stage>` report; other tasks' stages and unknown stages are ignored."""
        task, _, stage = report.rpartition("/")
        if task != self.task or stage not in self.stage_progress or stage in self.reached:
            return
        self.reached[stage] = self.stage_progress[stage]
        self.stage_log.append((now, stage, self.stage_progress[stage]))
        if stage == self.success_stage and self.success_time is None:
            self.success_time = now

    def on_safety(self, state: str, quiet: bool) -> None:
        """Counts entries into each non-quiet supervisor state (HOLD, ESTOP, FAULT…) once the episode runs
        (the supervisor holds until the first commands arrive)."""
        if state != self._safety_state and not quiet and self.started is not None:
            self.safety_events[state] += 1
        self._safety_state = state

    def on_rejections(self, source: str, counts: dict[str, int]) -> None:
        """Cumulative rejection counters of one node (its latest report wins)."""
        for key, count in counts.items():
            if count:
                self.rejections[f"{source}:{key}"] = int(count)

    def finished(self, now: float) -> bool:
        if self.success_time is not None:
            return now - self.success_time >= self.linger
        return self.started is not None and now - self.started >= self.timeout

    @property
    def progress(self) -> float:
        return max(self.reached.values(), default=0.0)

    def result(self, now: float, *, video: str | None = None, error: str | None = None) -> EpisodeResult:
        started = self.started if self.started is not None else now
        return EpisodeResult(
            task=self.task, seed=self.seed, instruction=self.instruction, progress=self.progress,
            success=self.success_time is not None, duration_s=max(0.0, now - started),
            time_to_success_s=None if self.success_time is None else self.success_time - started,
            stages=dict(self.reached), chunk_latency_s=list(self.latencies), safety_events=dict(self.safety_events),
            rejections=dict(self.rejections), video=video, error=error)


def write_run_plot(times: Sequence[float], positions: np.ndarray, joint_names: Sequence[str],
                   stages: Sequence[tuple[float, str, float]], path: str | Path, title: str) -> Path:
    """One run at a glance: every joint's position over time, and the task progress as a step curve
    with each stage marked where it first held (stages: (time, name, progress))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = np.asarray(positions, dtype=float).reshape(len(times), len(joint_names))
    figure, (joints_axis, progress_axis) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                                        gridspec_kw={"height_ratios": [2, 1]})
    for index, name in enumerate(joint_names):
        joints_axis.plot(times, positions[:, index], label=name, linewidth=1)
    joints_axis.set_ylabel("joint position [rad | m]")
    joints_axis.legend(fontsize=6, ncol=4, loc="upper right")
    joints_axis.set_title(title)
    end = max([*times, *(t for t, _, _ in stages), 0.0])
    step_times = [0.0] + [t for t, _, _ in stages] + [end]
    step_values = [0.0] + [p for _, _, p in stages] + [stages[-1][2] if stages else 0.0]
    progress_axis.step(step_times, step_values, where="post", color="#d9534f")
    for t, name, progress in stages:
        progress_axis.annotate(name, (t, progress), textcoords="offset points", xytext=(3, -10), fontsize=7)
    progress_axis.set_ylim(-5, 105)
    progress_axis.set_ylabel("task progress")
    progress_axis.set_xlabel("time since the first chunk [s]")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
