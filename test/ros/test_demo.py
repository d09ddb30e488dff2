"""`wall-oss demo` end to end in its own process: it launches the graph on ALOHA, does the task, records a
bag, a video and plots, summarizes, and fails loudly (exit 1, naming the node) when a node dies."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import av
from conftest import wait_for
from rosbags.rosbag2 import Reader

from wall_oss_core.data.bag_types import wall_oss_typestore

SMALL_CAMERAS = ["image_width:=160", "image_height:=120", "camera_rate_hz:=10.0"]


def _demo(tmp_path, *arguments: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wall_oss_ros.cli", "demo", "--output", str(tmp_path / "runs"),
                           *arguments], capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), check=False)


def test_demo_does_a_task_on_aloha_records_a_bag_a_video_and_plots(tmp_path):
    # half real time: the test's margin on a loaded CI machine (the graph runs on the sim's clock)
    result = _demo(tmp_path, "--duration", "25", "--real-time-factor", "0.5")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.splitlines()[0].startswith("[demo] policy: scripted expert"), output
    assert "result                 : ok" in output
    progress = re.search(r"task progress          : (\d+) / 100 on transfer_cube \(succeeded", output)
    assert progress and float(progress.group(1)) >= 90, output
    chunks = int(re.search(r"action chunks received : (\d+)", output).group(1))
    commands = int(re.search(r"controller commands    : (\d+) on /left_arm_controller/commands", output).group(1))
    assert chunks > 0 and commands > 0

    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    bag = run / "bag"
    assert str(bag) in output and (run / "logs" / "policy.log").is_file()
    assert f"video                  : {run / 'video.mp4'}" in output and (run / "plots" / "run.png").is_file()
    with av.open(str(run / "video.mp4")) as video:
        frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(video=0)]
    assert len(frames) > 30 and frames[0].shape == (224, 224, 3)
    store = wall_oss_typestore()
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts["/wall_oss/action_chunk"] == chunks
        assert counts["/left_arm_controller/commands"] == commands
        assert counts["/wall_oss/instruction"] == 1
        for topic in ("/joint_states", "/wall_oss/safety_status", "/wall_oss/candidate_command",
                      "/cameras/face/image_raw/compressed", "/right_gripper_controller/commands",
                      "/wall_oss/sim/task_stage", "/wall_oss/sim/object_poses"):
            assert counts.get(topic, 0) > 0, topic
        connection = next(c for c in reader.connections if c.topic == "/wall_oss/action_chunk")
        first = store.deserialize_cdr(next(raw for _, _, raw in reader.messages(connections=[connection])),
                                      connection.msgtype)
        assert first.action_space == "joint_position" and first.horizon > 0


def test_untrained_demo_runs_the_builtin_checkpoint_through_the_graph(tmp_path):
    result = _demo(tmp_path, "--untrained", "--duration", "8", *SMALL_CAMERAS, timeout=200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "built-in UNTRAINED Wall-OSS-0.5 checkpoint" in output
    run = next((tmp_path / "runs").iterdir())
    assert (run / "builtin_checkpoint" / "model.safetensors").is_file()
    chunks = int(re.search(r"action chunks received : (\d+)", output).group(1))
    assert chunks > 0
    store = wall_oss_typestore()
    with Reader(run / "bag") as reader:
        connection = next(c for c in reader.connections if c.topic == "/wall_oss/action_chunk")
        first = store.deserialize_cdr(next(raw for _, _, raw in reader.messages(connections=[connection])),
                                      connection.msgtype)
    assert first.action_space == "wall_oss_ee_relative" and (first.horizon, first.action_dim) == (32, 26)
    assert first.action_names[0] == "follow_left_ee_cartesian_pos_relative_x"


def test_demo_fails_naming_the_node_that_died(tmp_path):
    result = _demo(tmp_path, "--scripted", "--duration", "30", "image_width:=5", "camera_rate_hz:=10.0")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert re.search(r"node 'sim_arm' died \(exit code 2\)", output), output
    assert "FAILED" in output


def test_ctrl_c_stops_the_demo_with_a_summary_and_a_finished_bag(tmp_path):
    import signal
    import threading

    process = subprocess.Popen([sys.executable, "-m", "wall_oss_ros.cli", "demo", "--scripted", "--duration", "120", "--output",
                                str(tmp_path / "runs"), *SMALL_CAMERAS], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("graph up after" in line for line in lines), 90, message="the demo graph up")
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    output = "".join(lines)
    assert "result                 : FAILED: interrupted (Ctrl-C)" in output
    bag = next((tmp_path / "runs").iterdir()) / "bag"
    with Reader(bag) as reader_:
        assert any(c.topic == "/joint_states" and c.msgcount > 0 for c in reader_.connections)
    logs = bag.parent / "logs"
    for name in ("sim_arm", "policy", "chunk_executor", "safety_supervisor"):
        assert (logs / f"{name}.log").is_file()
