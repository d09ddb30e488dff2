"""Live replay over real DDS: `wall-oss replay` (its own process) plays a synthetic bag into a real policy
node (replay backend, use_sim_time) and into this test's subscribers, publishes /clock, records the
policy's chunks and compares the run with the bag using the offline evaluation metrics."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import ROBOT_CONFIG, wait_for
from rclpy.qos import QoSProfile, ReliabilityPolicy
from synthetic_bags import START, storage_file, write_synthetic_bag

from wall_oss_core.backends.replay import Recording, load_recording, save_recording

RELIABLE = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
REPLAY = "wall_oss_ros.cli_replay"


def _start_policy(node_processes, replay_source):
    """A policy node in /wall_oss following the bag's clock, serving recorded chunks at their own stamps."""
    return node_processes("wall_oss_ros.policy_node", "--ros-args", "-r", "__ns:=/wall_oss",
                          params={"robot_config": str(ROBOT_CONFIG), "use_sim_time": True, "backend": "replay",
                                  "replay_source": str(replay_source), "replay_alignment": "absolute",
                                  "replay_loop": False})


def _wait_for_policy_node(ros_node):
    wait_for(lambda: ros_node.count_publishers("/wall_oss/action_chunk") > 0
             and ros_node.count_subscribers("/cameras/face/image_raw") > 0
             and ros_node.count_subscribers("/wall_oss/instruction") > 0,
             30, poll=ros_node.spin_briefly, message="the policy node in the graph")


def _start_replay(node_processes, ros_node, *args, subscriptions=()):
    """Start `wall-oss replay` paused; resume it once this test's `subscriptions` are connected to it."""
    from std_srvs.srv import Trigger

    player = node_processes(REPLAY, *args, "--record", "/wall_oss/action_chunk", "--drain", "0.5", "--start-paused")
    resume = ros_node.create_client(Trigger, "/wall_oss_replay/resume")
    wait_for(lambda: resume.service_is_ready() and all(s.get_publisher_count() > 0 for s in subscriptions), 30,
             poll=ros_node.spin_briefly, message="the paused player, connected to the test's subscriptions")
    future = resume.call_async(Trigger.Request())
    wait_for(future.done, 10, poll=ros_node.spin_briefly, message="the resume call")
    assert future.result().success
    return player


def _run_replay(node_processes, ros_node, *args, subscriptions=(), timeout=60):
    player = _start_replay(node_processes, ros_node, *args, subscriptions=subscriptions)
    wait_for(lambda: not player.alive(), timeout, poll=ros_node.spin_briefly, message="the replay to finish")
    return player.process.returncode


@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_replay_keeps_the_bag_timing_publishes_clock_and_a_self_replay_compares_with_zero_error(
        rate, ros_node, node_processes, tmp_path):
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState

    source = write_synthetic_bag(tmp_path / "source")
    policy = _start_policy(node_processes, source.path)  # answers with the bag's own chunks
    arrivals, clocks = [], []
    subscriptions = (
        ros_node.create_subscription(JointState, "/joint_states", lambda msg: arrivals.append(
            (time.monotonic(), msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)), RELIABLE),
        ros_node.create_subscription(Clock, "/clock", lambda msg: clocks.append(
            msg.clock.sec + msg.clock.nanosec * 1e-9), RELIABLE))
    _wait_for_policy_node(ros_node)

    out = tmp_path / "out"
    code = _run_replay(node_processes, ros_node, "--bag", str(source.path), "--out", str(out), "--clock",
                       "--rate", str(rate), subscriptions=subscriptions)
    assert code == 0
    assert policy.alive()

    # joint states (50 Hz in the bag): every one, in order, and paced by the bag, never played faster than
    # `rate` (a loaded machine can only make it slower; how close it keeps to the bag's timing is measured
    # by bench/bench_live_replay.py, not asserted here)
    times = np.array([a for a, _ in arrivals])
    stamps = np.array([s for _, s in arrivals])
    assert np.allclose(stamps, source.joint_times)
    expected = (stamps - stamps[0]) / rate
    assert times[-1] - times[0] >= 0.9 * expected[-1]

    # /clock: the bag's own time, strictly increasing, from its first message to its last
    clock = np.array(clocks)
    assert np.all(np.diff(clock) > 0)
    assert clock[0] <= START + 0.01 and clock[-1] >= source.joint_times[-1]
    assert np.all(clock <= source.joint_times[-1] + 0.01)

    summary = json.loads((out / "replay.json").read_text())
    playback = summary["playback"]
    assert playback["passes_started"] == 1 and not playback["interrupted"]
    assert playback["sent"]["/joint_states"] == len(source.joint_times)
    assert playback["sent"]["/wall_oss/instruction"] == 1
    assert playback["clock_messages"] == len(clocks)
    assert (out / "run_bag" / "metadata.yaml").is_file()
    assert summary["recorded"]["/wall_oss/action_chunk"] > 0

    (metrics,) = summary["comparison"]
    assert summary["comparison_error"] is None
    assert metrics == json.loads((out / "comparison" / "metrics.json").read_text())
    assert metrics["ground_truth"] == "chunks"
    assert metrics["run_chunks"] == summary["recorded"]["/wall_oss/action_chunk"]
    assert metrics["coverage"]["evaluated"] >= 3
    assert metrics["overall"]["compared_actions"] > 0
    assert metrics["overall"]["mae"] < 1e-9
    for arm in ("left", "right"):
        assert metrics["end_effector"][arm]["position_error_mm"]["max"] < 1e-6
        assert metrics["gripper_timing"][arm]["matched"] == metrics["gripper_timing"][arm]["recorded_events"] > 0


def test_looped_replay_of_perturbed_chunks_gives_the_perturbation_as_error_in_every_pass(
        ros_node, node_processes, tmp_path):
    """The policy serves the bag's chunks + 0.01 (for two passes: a copy shifted by the loop period), so
    each pass must measure exactly 0.01 per action dimension; the second pass only produces chunks
    because the loop moves the header stamps forward."""
    period, offset = 3.0, 0.01
    source = write_synthetic_bag(tmp_path / "source", action_space="wall_oss_ee_relative")
    recorded = load_recording(source.path).chunks
    perturbed = [replace(chunk, actions=chunk.actions + offset, stamp=chunk.stamp + k * period)
                 for k in range(2) for chunk in recorded]
    save_recording(tmp_path / "perturbed.npz", Recording(perturbed))
    policy = _start_policy(node_processes, tmp_path / "perturbed.npz")
    _wait_for_policy_node(ros_node)

    out = tmp_path / "out"
    code = _run_replay(node_processes, ros_node, "--bag", str(source.path), "--out", str(out), "--clock",
                       "--loop", "--loops", "2", "--duration", str(period), "--rate", "1.5")
    assert code == 0
    assert policy.alive()

    summary = json.loads((out / "replay.json").read_text())
    assert summary["playback"]["passes_started"] == 2
    assert summary["playback"]["sent"]["/joint_states"] == 2 * len(source.joint_times)
    passes = summary["comparison"]
    assert [m["pass"] for m in passes] == [0, 1]
    for metrics in passes:
        assert metrics["ground_truth"] == "chunks" and metrics["coverage"]["evaluated"] >= 2
        mae = [d["mae"] for d in metrics["per_dimension"].values()]
        assert len(mae) == 26 and np.allclose(mae, offset, rtol=0, atol=1e-9)
        for arm in ("left", "right"):
            assert metrics["end_effector"][arm]["position_error_mm"]["mean"] > 1.0
    assert (out / "comparison" / "pass_001" / "report.html").is_file()


def test_truncated_bag_plays_what_was_salvaged_and_a_run_without_chunks_reports_why(
        ros_node, node_processes, tmp_path):
    source = write_synthetic_bag(tmp_path / "source", duration=2.0, image_size=(160, 120))  # several MCAP chunks
    cut = tmp_path / "cut.mcap"  # a recording whose writer died on the way: no summary, no footer
    data = storage_file(source.path).read_bytes()
    cut.write_bytes(data[:int(len(data) * 0.6)])

    out = tmp_path / "out"
    player = node_processes(REPLAY, "--bag", str(cut), "--out", str(out), "--rate", "2", "--wait", "0",
                            "--drain", "0", "--topics", "/joint_states", "/cameras/face/image_raw")
    wait_for(lambda: not player.alive(), 60, poll=ros_node.spin_briefly, message="the replay to finish")
    assert player.process.returncode == 1  # played, but there is nothing to compare

    summary = json.loads((out / "replay.json").read_text())
    assert any("truncated or damaged" in warning for warning in summary["bag_warnings"])
    sent = summary["playback"]["sent"]
    assert 0 < sent["/joint_states"] < len(source.joint_times) and sent["/cameras/face/image_raw"] > 0
    assert summary["comparison"] is None
    assert "no valid action chunks" in summary["comparison_error"]
    assert (out / "run_bag" / "metadata.yaml").is_file()


def test_endless_loop_stops_on_ctrl_c_and_still_finishes_its_recording(ros_node, node_processes, tmp_path):
    from sensor_msgs.msg import JointState

    source = write_synthetic_bag(tmp_path / "source", duration=0.5)
    stamps = []
    subscription = ros_node.create_subscription(JointState, "/joint_states", lambda msg: stamps.append(
        msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9), RELIABLE)
    out = tmp_path / "out"
    player = _start_replay(node_processes, ros_node, "--bag", str(source.path), "--out", str(out), "--loop",
                           "--rate", "4", "--no-compare", "--wait", "0", subscriptions=(subscription,))
    wait_for(lambda: len(stamps) > 3 * len(source.joint_times), 30, poll=ros_node.spin_briefly,
             message="three passes of the loop")
    assert player.stop() == 0  # SIGINT

    assert np.all(np.diff(stamps) > 0)  # each pass is shifted forward: stamps keep increasing
    summary = json.loads((out / "replay.json").read_text())
    assert summary["playback"]["interrupted"] and summary["playback"]["passes_started"] >= 3
    assert summary["comparison"] is None and summary["comparison_error"] is None
    assert (out / "run_bag" / "metadata.yaml").is_file()
