"""Offline evaluation: a bag's own chunks replayed give zero error; known perturbations give the
errors they must; outputs (JSON, HTML, plots, predicted bag) are written; bad bags fail clearly."""
import json

import numpy as np
import pytest
from synthetic_bags import PerturbedPolicy, storage_file, write_synthetic_bag

from wall_oss_core.backends.replay import ReplayPolicy, load_recording
from wall_oss_core.data.bag_reader import BagError, BagReader
from wall_oss_core.evaluation.open_loop import EvaluationConfig, evaluate_bag, gripper_events, match_events

pytestmark = pytest.mark.timeout(120)
QUIET = dict(progress=False)


@pytest.fixture(scope="module")
def joint_bag(tmp_path_factory):
    return write_synthetic_bag(tmp_path_factory.mktemp("joint") / "bag", action_space="joint_position")


@pytest.fixture(scope="module")
def ee_bag(tmp_path_factory):
    return write_synthetic_bag(tmp_path_factory.mktemp("ee") / "bag", action_space="wall_oss_ee_relative")


def _replay(bag):
    return ReplayPolicy(load_recording(bag.path), alignment="absolute")


@pytest.mark.parametrize("truth", ["chunks", "joint_states"])
@pytest.mark.parametrize("space", ["joint_position", "wall_oss_ee_relative"])
def test_replaying_a_bags_own_chunks_gives_zero_error(joint_bag, ee_bag, space, truth, tmp_path):
    bag = joint_bag if space == "joint_position" else ee_bag
    result = evaluate_bag(bag.path, _replay(bag), tmp_path / "out",
                          config=EvaluationConfig(ground_truth=truth, **QUIET))
    metrics = result.metrics
    assert metrics["ground_truth"] == truth
    assert metrics["coverage"]["evaluated"] == len(bag.chunks) and metrics["coverage"]["skipped"] == 0
    assert metrics["overall"]["compared_actions"] == sum(c.horizon for c in bag.chunks)
    assert metrics["overall"]["mae"] < 1e-9
    for arm in ("left", "right"):
        assert metrics["end_effector"][arm]["position_error_mm"]["max"] < 1e-6
        assert metrics["end_effector"][arm]["rotation_error_deg"]["max"] < 1e-3
        timing = metrics["gripper_timing"][arm]
        assert timing["recorded_events"] == timing["matched"] == 2  # one close, one open
        assert timing["timing_error_s"]["max"] < 1e-9
    # the observations were the ones the live node saw: each predicted chunk has its recorded stamp
    assert [c.stamp for c in result.predicted_chunks] == [c.stamp for c in bag.chunks]


def test_joint_offset_gives_exactly_that_error_on_that_dimension(joint_bag, tmp_path):
    joint = joint_bag.robot.command_joints[2]
    policy = PerturbedPolicy(_replay(joint_bag), offsets={joint: 0.05})
    metrics = evaluate_bag(joint_bag.path, policy, config=EvaluationConfig(**QUIET)).metrics
    for name, values in metrics["per_dimension"].items():
        expected = 0.05 if name == joint else 0.0
        assert values["mae"] == pytest.approx(expected, abs=1e-9)
        assert values["rmse"] == pytest.approx(expected, abs=1e-9)
    assert metrics["end_effector"]["left"]["position_error_mm"]["mean"] > 1.0  # the left elbow moved the tool
    assert metrics["end_effector"]["right"]["position_error_mm"]["max"] < 1e-6


def test_step_varying_error_separates_rmse_from_mae(joint_bag):
    """Error k·1 cm on step k of every chunk: MAE = mean|e| and RMSE = sqrt(mean e²) differ, both known."""
    joint = joint_bag.robot.command_joints[9]
    horizon = joint_bag.chunks[0].horizon
    error = 0.01 * np.arange(1, horizon + 1)
    policy = PerturbedPolicy(_replay(joint_bag), offsets={joint: error})
    metrics = evaluate_bag(joint_bag.path, policy, config=EvaluationConfig(**QUIET)).metrics
    mae, rmse = error.mean(), np.sqrt((error ** 2).mean())
    assert rmse - mae > 0.005  # 0.0505 vs 0.045: a metric computed as the other would fail
    assert metrics["per_dimension"][joint]["mae"] == pytest.approx(mae, abs=1e-9)
    assert metrics["per_dimension"][joint]["rmse"] == pytest.approx(rmse, abs=1e-9)
    width = len(joint_bag.robot.command_joints)
    assert metrics["overall"]["mae"] == pytest.approx(mae / width, abs=1e-9)
    assert metrics["overall"]["rmse"] == pytest.approx(rmse / np.sqrt(width), abs=1e-9)


def test_known_rotation_error_per_step(ee_bag):
    """The right arm's predicted orientation yawed by 2° more on each step: the rotation error is exactly
    that angle (0°, 2°, …, 14°), the position error stays zero and the left arm is untouched."""
    horizon = ee_bag.chunks[0].horizon
    yaw = 2.0 * np.arange(horizon)
    policy = PerturbedPolicy(_replay(ee_bag), yaw_deg={"right": yaw})
    metrics = evaluate_bag(ee_bag.path, policy, config=EvaluationConfig(**QUIET)).metrics
    right = metrics["end_effector"]["right"]
    assert right["rotation_error_deg"]["mean"] == pytest.approx(yaw.mean(), abs=1e-6)
    assert right["rotation_error_deg"]["max"] == pytest.approx(yaw.max(), abs=1e-6)
    assert right["rotation_error_deg"]["median"] == pytest.approx(np.median(yaw), abs=1e-6)
    assert right["position_error_mm"]["max"] < 1e-6
    assert metrics["end_effector"]["left"]["rotation_error_deg"]["max"] < 1e-4


def test_ee_offset_is_reported_in_millimetres_on_its_arm_only(ee_bag):
    policy = PerturbedPolicy(_replay(ee_bag), offsets={"follow_right_ee_cartesian_pos_relative_z": 0.012})
    metrics = evaluate_bag(ee_bag.path, policy, config=EvaluationConfig(ground_truth="joint_states", **QUIET)).metrics
    right = metrics["end_effector"]["right"]["position_error_mm"]
    assert right["mean"] == pytest.approx(12.0, abs=1e-6) and right["max"] == pytest.approx(12.0, abs=1e-6)
    assert metrics["end_effector"]["left"]["position_error_mm"]["max"] < 1e-6
    assert metrics["end_effector"]["right"]["rotation_error_deg"]["max"] < 1e-3


def test_late_policy_shows_up_as_gripper_timing_error(joint_bag):
    policy = PerturbedPolicy(_replay(joint_bag), delay=0.1)
    metrics = evaluate_bag(joint_bag.path, policy, config=EvaluationConfig(instants="frames", ground_truth="joint_states",
                                                                           **QUIET)).metrics
    for arm in ("left", "right"):
        timing = metrics["gripper_timing"][arm]
        assert timing["matched"] >= 2
        assert timing["mean_signed_error_s"] == pytest.approx(0.1, abs=0.02)
    assert metrics["overall"]["mae"] > 0


def test_outputs_report_plots_and_predicted_bag(joint_bag, tmp_path):
    out = tmp_path / "out"
    result = evaluate_bag(joint_bag.path, _replay(joint_bag), out, config=EvaluationConfig(**QUIET))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["coverage"]["evaluated"] == len(joint_bag.chunks)
    page = (out / "report.html").read_text()
    for plot in ("left_ee_xyz.png", "left_ee_topdown.png", "right_ee_xyz.png", "right_ee_topdown.png"):
        assert (out / "plots" / plot).stat().st_size > 1000 and f"plots/{plot}" in page
    with BagReader(result.outputs["predicted_bag"]) as reader:
        messages = [m.message for m in reader.messages(["/wall_oss/action_chunk"])]
    assert len(messages) == len(joint_bag.chunks)
    np.testing.assert_allclose(np.asarray(messages[0].data).reshape(messages[0].horizon, -1), joint_bag.chunks[0].actions)


def test_coverage_counts_instants_without_observation_or_chunk(joint_bag):
    config = EvaluationConfig(instants="frames", **QUIET)  # frames start before the first recorded chunk
    metrics = evaluate_bag(joint_bag.path, _replay(joint_bag), config=config).metrics
    coverage = metrics["coverage"]
    assert coverage["evaluated"] > 0 and coverage["skipped"] > 0
    assert coverage["evaluated"] + coverage["skipped"] == coverage["instants"]
    assert any(reason.startswith("policy error") for reason in coverage["skipped_by_reason"])
    assert metrics["overall"]["mae"] < 1e-9


def test_missing_inputs_and_truncated_bags(tmp_path, joint_bag):
    no_chunks = write_synthetic_bag(tmp_path / "no_chunks", with_chunks=False, duration=1.0)
    with pytest.raises(Exception, match="action chunks"):
        evaluate_bag(no_chunks.path, _replay(joint_bag), config=EvaluationConfig(**QUIET))
    # the robot's joint states alone (no chunks) still serve as ground truth at frame instants
    metrics = evaluate_bag(no_chunks.path, _replay(joint_bag),
                           config=EvaluationConfig(instants="frames", **QUIET)).metrics
    assert metrics["ground_truth"] == "joint_states" and metrics["coverage"]["instants"] > 0

    large = write_synthetic_bag(tmp_path / "large", image_size=(160, 120))  # several MCAP chunks
    data = storage_file(large.path).read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[:int(len(data) * 0.7)])
    metrics = evaluate_bag(cut, _replay(large), config=EvaluationConfig(**QUIET)).metrics
    assert 0 < metrics["coverage"]["evaluated"] < len(large.chunks)
    assert any("truncated" in w for w in metrics["bag_warnings"])

    cameras_missing = tmp_path / "only_joints"
    from rosbags.rosbag2 import StoragePlugin, Writer

    from wall_oss_core.data.bag_types import wall_oss_typestore
    with Writer(cameras_missing, version=9, storage_plugin=StoragePlugin.MCAP) as writer, \
            BagReader(joint_bag.path) as source:
        connection = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=wall_oss_typestore())
        for item in source.messages(["/joint_states"]):
            writer.write(connection, item.log_time_ns, item.raw)
    with pytest.raises(BagError, match="no frames for cameras"):
        evaluate_bag(cameras_missing, _replay(joint_bag), config=EvaluationConfig(**QUIET))


def test_gripper_event_matching():
    times = np.linspace(0, 1, 11)
    openings = np.array([0.03] * 3 + [0.0] * 5 + [0.03] * 3)
    events = gripper_events(times, openings, 0.015)
    assert [kind for _, kind in events] == ["close", "open"]
    assert events[0][0] == pytest.approx(0.25) and events[1][0] == pytest.approx(0.75)
    errors, missed, extra = match_events([(0.3, "close")], events, max_gap=1.0)
    assert errors == [pytest.approx(0.05)] and missed == 1 and extra == 0


def test_tiny_wall_oss_checkpoint_runs_end_to_end(ee_bag, tmp_path):
    from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig
    from wall_oss_core.model.checkpoint_generator import generate_checkpoint

    policy = WallOssPolicy(WallOssPolicyConfig(checkpoint_dir=str(generate_checkpoint(tmp_path / "ckpt", size="tiny")),
                                               seed=0))
    result = evaluate_bag(ee_bag.path, policy, tmp_path / "out", config=EvaluationConfig(max_instants=2, **QUIET))
    metrics = result.metrics
    assert metrics["coverage"]["evaluated"] == 2 and metrics["ground_truth"] == "chunks"
    assert np.isfinite(metrics["overall"]["mae"]) and metrics["overall"]["mae"] > 0
    assert (tmp_path / "out" / "report.html").exists()


def test_eval_command_line(joint_bag, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    command = [sys.executable, "-m", "wall_oss_ros.cli", "eval", "--bag", str(joint_bag.path), "--replay",
               str(joint_bag.path), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["overall"]["mae"] < 1e-9
    missing = subprocess.run(command[:4] + ["--bag", str(tmp_path / "nope"), "--replay", str(joint_bag.path),
                                            "--out", str(tmp_path / "x"), "--no-progress"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
