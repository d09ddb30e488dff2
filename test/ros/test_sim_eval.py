"""`wall-oss sim-eval --scripted` end to end: one short ALOHA episode through the launched graph (sim with
MuJoCo physics and task scoring → policy node with the scripted backend → chunk executor → safety
supervisor → sim, real processes over DDS, on the sim's clock), scored by the sim's task progress, with
its outputs; every inference is delayed by 0.2 s and the task is still done."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import av


def test_scripted_episode_through_the_graph_reaches_the_task(tmp_path):
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "wall_oss_ros.cli", "sim-eval", "--scripted", "--tasks", "transfer_cube",
         "--episodes", "1", "--seed", "1", "--timeout", "20", "--inference-delay", "0.2", "--out", str(out)],
        capture_output=True, text=True, timeout=150, env=os.environ.copy(), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("task_progress="), output
    assert float(last.partition("=")[2]) >= 90, output

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["episodes"] == 1 and metrics["tasks"]["transfer_cube"]["success_rate"] == 1.0
    episode = metrics["episode_results"][0]
    assert episode["seed"] == 1 and episode["error"] is None
    assert list(episode["stages"]) == ["touched", "lifted", "attempted_transfer", "transferred"]
    assert 0 < episode["time_to_success_s"] < 20
    # every inference took the injected 0.2 s (of the sim's clock) on top; the expert copes with it
    assert episode["chunk_latency_s"] and min(episode["chunk_latency_s"]) >= 0.2
    # no chunk, joint state or image was refused on the way (a chunk superseded by a newer one is not an error)
    assert {key for key in episode["rejections"] if not key.endswith("rejected_superseded")} == set()
    report = (out / "report.html").read_text()
    assert "videos/000_transfer_cube_seed1.mp4" in report and (out / "plots" / "task_progress.png").is_file()
    with av.open(episode["video"]) as video:
        frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(video=0)]
    assert len(frames) > 20 and frames[0].shape == (224, 224, 3)
    assert (out / "logs" / "000_transfer_cube_seed1" / "policy.log").is_file()
