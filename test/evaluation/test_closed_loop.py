"""Closed-loop results: per-task progress with a 95% interval, success rates, videos a browser can play, a report."""
import json

import av
import numpy as np
import pytest

from wall_oss_core.evaluation.closed_loop import (
    EpisodeMonitor,
    EpisodeResult,
    frame_rate,
    interval95,
    summarize,
    write_report,
    write_run_plot,
    write_video,
)


def _episode(task, progress, seed=0, success=None, **extra):
    return EpisodeResult(task=task, seed=seed, instruction=f"do {task}", progress=progress,
                         success=progress >= 100 if success is None else success, duration_s=10.0, **extra)


def test_interval_matches_the_t_distribution_by_hand():
    # n = 4, mean 50, sample sd = sqrt(((−30)² + (−10)² + 10² + 30²)/3) = sqrt(2000/3); t(0.975, 3) = 3.182446
    low, high = interval95([20, 40, 60, 80])
    half = 3.182446 * np.sqrt(2000 / 3) / 2
    assert low == pytest.approx(50 - half, rel=1e-5) and high == pytest.approx(50 + half, rel=1e-5)
    assert interval95([70.0]) == (70.0, 70.0)


def test_summary_per_task_and_overall():
    episodes = [_episode("transfer_cube", 100, time_to_success_s=6.0, chunk_latency_s=[0.1, 0.3],
                         safety_events={"LIMITING": 2}),
                _episode("transfer_cube", 50, seed=1, safety_events={"LIMITING": 1, "HOLD": 1}),
                _episode("insertion", 25, error="policy died", rejections={"joint_state:nan": 3})]
    metrics = summarize(episodes)
    assert metrics["task_progress"] == pytest.approx(175 / 3)
    assert metrics["success_rate"] == pytest.approx(1 / 3)
    cube = metrics["tasks"]["transfer_cube"]
    assert cube["progress_mean"] == 75 and cube["success_rate"] == 0.5 and cube["time_to_success_s_mean"] == 6.0
    assert cube["safety_events"] == {"LIMITING": 3, "HOLD": 1}
    assert cube["chunk_latency_s"]["count"] == 2 and cube["chunk_latency_s"]["max"] == 0.3
    insertion = metrics["tasks"]["insertion"]
    assert insertion["failed_episodes"] == 1 and insertion["rejections"] == {"joint_state:nan": 3}
    assert insertion["time_to_success_s_mean"] is None
    json.dumps(metrics)  # metrics.json must serialize
    with pytest.raises(ValueError, match="no episodes"):
        summarize([])


@pytest.mark.parametrize("progress", [-1.0, 100.5, float("nan")])
def test_progress_outside_0_100_is_refused(progress):
    with pytest.raises(ValueError, match="0–100"):
        _episode("transfer_cube", progress)


def test_video_decodes_back_to_the_frames_and_the_report_links_it(tmp_path):
    frames = [np.full((48, 63, 3), 10 * i, dtype=np.uint8) for i in range(12)]  # odd width is cropped to even
    video = write_video(frames, tmp_path / "videos" / "episode_0.mp4", fps=10)
    with av.open(str(video)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 12 and decoded[0].shape == (48, 62, 3)
    assert abs(float(decoded[7].mean()) - 70) < 3  # lossy, but the right frame in the right place
    with open(video, "rb") as handle:  # faststart: the moov atom comes before the media data
        head = handle.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    metrics = summarize([_episode("transfer_cube", 100, video=str(video), time_to_success_s=3.0)])
    page = write_report(metrics, tmp_path).read_text()
    assert "videos/episode_0.mp4" in page and "task progress 100.0" in page
    assert (tmp_path / "plots" / "task_progress.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "empty.mp4", fps=10)


STAGES = {"touched": 25.0, "lifted": 50.0, "attempted_transfer": 75.0, "transferred": 100.0}


def _monitor(**kwargs):
    return EpisodeMonitor("transfer_cube", 3, "hand the cube over from right to left", STAGES, "transferred",
                          timeout=kwargs.pop("timeout", 10.0), **kwargs)


def test_monitor_scores_stages_of_its_task_and_ends_after_success():
    monitor = _monitor(linger=1.0)
    monitor.on_safety("HOLD", quiet=False)  # before the first chunk: the supervisor waits for commands
    monitor.on_stage("transfer_cube/started", 0.5)
    assert not monitor.finished(1000.0)  # no chunk yet: the episode has not started
    monitor.on_chunk(0.02, 2.0)
    monitor.on_chunk(0.04, 2.1)
    monitor.on_safety("OK", quiet=True)
    monitor.on_safety("LIMITING", quiet=True)
    monitor.on_safety("FAULT", quiet=False)
    monitor.on_safety("FAULT", quiet=False)  # the same state again is not a new event
    monitor.on_stage("transfer_cube/touched", 3.0)
    monitor.on_stage("hand_over_red_cube/transferred", 3.5)  # another task's report
    monitor.on_stage("transfer_cube/lifted", 4.0)
    assert monitor.progress == 50 and not monitor.finished(4.0)
    monitor.on_stage("transfer_cube/transferred", 8.0)
    monitor.on_rejections("chunk_executor", {"rejected_stale": 2, "rejected_nan": 0})
    assert not monitor.finished(8.5) and monitor.finished(9.0)
    result = monitor.result(9.0, video="v.mp4")
    assert (result.progress, result.success, result.duration_s, result.time_to_success_s) == (100.0, True, 7.0, 6.0)
    assert result.stages == {"touched": 25.0, "lifted": 50.0, "transferred": 100.0}
    assert result.chunk_latency_s == [0.02, 0.04] and result.safety_events == {"FAULT": 1}
    assert result.rejections == {"chunk_executor:rejected_stale": 2} and result.video == "v.mp4"


def test_monitor_times_out_from_the_first_chunk_and_keeps_partial_credit():
    monitor = _monitor(timeout=5.0)
    monitor.on_chunk(0.1, 10.0)
    monitor.on_stage("transfer_cube/touched", 11.0)
    assert not monitor.finished(14.9) and monitor.finished(15.0)
    result = monitor.result(15.0, error=None)
    assert (result.progress, result.success, result.time_to_success_s) == (25.0, False, None)
    with pytest.raises(ValueError, match="success stage"):
        EpisodeMonitor("t", 0, "i", STAGES, "done", timeout=1.0)


def test_video_rate_is_the_received_frame_rate():
    assert frame_rate([10.0, 10.2, 10.4, 10.6], fallback=10.0) == pytest.approx(5.0)
    assert frame_rate([3.0], fallback=10.0) == 10.0


def test_run_plot_is_written(tmp_path):
    from PIL import Image

    times = np.linspace(0.0, 5.0, 50)
    path = write_run_plot(times, np.column_stack([np.sin(times), np.cos(times)]), ["a", "b"],
                          [(1.0, "touched", 25.0), (3.0, "transferred", 100.0)], tmp_path / "plots" / "run.png", "t")
    with Image.open(path) as image:
        assert image.size == (900, 600)
