"""Bag → LeRobot v3.0 dataset → reload with pyarrow/pandas and PyAV: frames, states, actions, tasks, stats."""
import json

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from synthetic_bags import INSTRUCTION, START, frame_pixels, trajectory, write_synthetic_bag

from wall_oss_core.data.lerobot_export import (
    ExportConfig,
    ExportError,
    FrameSampler,
    aggregate_stats,
    downsample,
    export_dataset,
    feature_stats,
    stats_from_bags,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return [write_synthetic_bag(root / f"bag{i}", duration=1.5 + 0.5 * i, image_size=(64, 48)) for i in range(2)]


def _exported_frames(bag):
    """Frame times that can be exported: the next-state action needs a joint state one frame later."""
    return bag.frame_times[bag.frame_times + 0.1 <= bag.joint_times[-1] + 1e-9]


def _top_level_atoms(path):
    data, atoms, position = path.read_bytes(), [], 0
    while position + 8 <= len(data):
        size = int.from_bytes(data[position:position + 4], "big")
        atoms.append(data[position + 4:position + 8].decode())
        position += size
    return atoms


def _decode(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_video_dataset_round_trip(bags, tmp_path):
    out = tmp_path / "dataset"
    info = export_dataset([b.path for b in bags], out, config=ExportConfig(state_space="joint_position"),
                          progress=False)
    assert json.loads((out / "meta" / "info.json").read_text()) == info
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_episodes"] == 2
    # LeRobot reads fps as an int (Fraction arithmetic when it appends videos fails on a float)
    assert type(info["fps"]) is int and type(info["features"]["observation.images.face_view"]["info"]["video.fps"]) is int
    robot = bags[0].robot

    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pandas()
    episodes = pd.read_parquet(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    tasks = pd.read_parquet(out / "meta" / "tasks.parquet")
    assert list(tasks.index) == [INSTRUCTION] and tasks.loc[INSTRUCTION, "task_index"] == 0
    assert tasks.index.name is None  # as LeRobot writes it
    hf_features = json.loads(pq.read_schema(out / "data" / "chunk-000" / "file-000.parquet")
                             .metadata[b"huggingface"])["info"]["features"]
    assert hf_features["observation.state"] == {"feature": {"dtype": "float32", "_type": "Value"},
                                                "length": len(bags[0].robot.command_joints), "_type": "List"}
    assert set(hf_features) == {"observation.state", "action", "timestamp", "frame_index", "episode_index",
                                "index", "task_index"}
    schema = pq.read_schema(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    for column in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        integer = column != "timestamp"
        assert str(schema.field(f"stats/{column}/min").type) == f"list<element: {'int64' if integer else 'double'}>"
        assert str(schema.field(f"stats/{column}/q50").type) == "list<element: double>"
        assert str(schema.field(f"stats/{column}/count").type) == "list<element: int64>"
    assert schema.names[:3] == ["episode_index", "tasks", "length"]
    assert schema.names[-2:] == ["meta/episodes/chunk_index", "meta/episodes/file_index"]
    assert info["total_frames"] == len(data) == episodes["length"].sum()
    assert list(data["index"]) == list(range(len(data)))
    for episode, bag in zip(episodes.itertuples(index=False), bags):
        frames = data[data["episode_index"] == episode.episode_index]
        times = _exported_frames(bag)
        assert len(frames) == episode.length == len(times) == len(bag.frame_times) - 1
        np.testing.assert_allclose(frames["timestamp"], np.arange(episode.length) / 10, atol=1e-6)
        # state = joint positions at each frame time; action = the joint state one frame later
        t = times - bag.frame_times[0]
        np.testing.assert_allclose(np.stack(frames["observation.state"]), trajectory(robot, t), atol=1e-6)
        np.testing.assert_allclose(np.stack(frames["action"]), trajectory(robot, t + 0.1), atol=1e-5)
        assert list(episode.tasks) == [INSTRUCTION]

    key = "observation.images.face_view"
    video = out / "videos" / key / "chunk-000" / "file-000.mp4"
    decoded = _decode(video)
    atoms = _top_level_atoms(video)
    assert atoms.index("moov") < atoms.index("mdat")  # faststart
    assert len(decoded) == info["total_frames"]
    assert info["features"][key]["shape"] == [48, 64, 3] and info["features"][key]["dtype"] == "video"
    second = episodes.iloc[1]
    first_of_second = int(round(second[f"videos/{key}/from_timestamp"] * info["fps"]))
    assert first_of_second == episodes.iloc[0]["length"]
    for index, frame in [(0, decoded[0]), (5, decoded[5]), (0, decoded[first_of_second])]:
        assert np.abs(frame.astype(int) - frame_pixels(index, 64, 48).astype(int)).mean() < 4  # lossy AV1

    stats = json.loads((out / "meta" / "stats.json").read_text())
    states = np.stack(data["observation.state"]).astype(np.float64)
    for stat in ("min", "max", "mean", "std", "q01", "q99"):
        assert len(stats["observation.state"][stat]) == len(robot.command_joints)
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["observation.state"]["q99"], np.quantile(states, 0.99, axis=0), atol=1e-7)
    np.testing.assert_allclose(stats["action"]["min"], np.stack(data["action"]).min(axis=0), atol=1e-7)
    assert np.array(stats[key]["mean"]).shape == (3, 1, 1)
    assert episodes.iloc[0]["stats/observation.state/count"][0] == episodes.iloc[0]["length"]
    second_index = data["index"][data["episode_index"] == 1]
    assert list(episodes.iloc[1]["stats/index/min"]) == [second_index.min()]
    assert list(episodes.iloc[1]["stats/frame_index/max"]) == [episodes.iloc[1]["length"] - 1]
    assert stats["index"]["max"] == [len(data) - 1] and stats["episode_index"]["mean"] == [data["episode_index"].mean()]


def test_image_layout_and_ee_state(bags, tmp_path):
    import cv2

    out = tmp_path / "images"
    info = export_dataset([bags[0].path], out, config=ExportConfig(video=False, state_space="wall_oss_ee"),
                          progress=False)
    assert info["video_path"] is None and info["features"]["observation.images.left_wrist_view"]["dtype"] == "image"
    assert info["features"]["observation.state"]["shape"] == [26]
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pandas()
    cell = data["observation.images.left_wrist_view"].iloc[3]
    frame = cv2.imdecode(np.frombuffer(cell["bytes"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(frame, frame_pixels(3, 64, 48))  # PNG is lossless
    from wall_oss_core.policy.action_space import ee_state_vector
    from wall_oss_core.robot.kinematics import BimanualKinematics
    kinematics = BimanualKinematics(bags[0].robot)
    q = trajectory(bags[0].robot, 0.0)[0]
    expected = ee_state_vector(kinematics.ee_poses(q), {"left": q[6], "right": q[13]})
    np.testing.assert_allclose(data["observation.state"].iloc[0], expected, atol=1e-6)


def test_stats_command_and_bad_bags(bags, tmp_path):
    stats = stats_from_bags([b.path for b in bags], config=ExportConfig(state_space="joint_position"))
    assert stats["observation.state"]["count"] == [sum(len(_exported_frames(b)) for b in bags)]
    assert all(lo <= hi for lo, hi in zip(stats["action"]["q01"], stats["action"]["q99"]))
    (tmp_path / "junk.mcap").write_bytes(b"not a bag")
    out = tmp_path / "partial"
    info = export_dataset([tmp_path / "junk.mcap", bags[0].path], out, progress=False)
    assert info["total_episodes"] == 1
    assert "junk.mcap" in (out / "meta" / "wall_oss_export.json").read_text()
    with pytest.raises(ValueError, match="positive integer"):
        ExportConfig(fps=12.5)
    with pytest.raises(ExportError, match="no bag could be exported"):
        export_dataset([tmp_path / "junk.mcap"], tmp_path / "none", progress=False)


def test_export_and_stats_command_lines(bags, tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "wall_oss_ros.cli"]
    done = subprocess.run(base + ["export-dataset", str(bags[0].path), "--out", str(tmp_path / "ds"),
                                  "--state-space", "joint_position"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())["total_episodes"] == 1
    gap = write_synthetic_bag(tmp_path / "gap", duration=3.0, camera_gap=(1.0, 2.0), with_chunks=False)
    done = subprocess.run(base + ["export-dataset", str(gap.path), "--out", str(tmp_path / "gap_ds")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 episodes" in done.stdout and "split at 1 gaps" in done.stdout and "stale_camera" in done.stdout
    done = subprocess.run(base + ["stats", str(bags[0].path), "--out", str(tmp_path / "stats.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(json.loads((tmp_path / "stats.json").read_text())["action"]) >= {"mean", "std", "q01", "q99"}


def test_gap_in_a_bag_splits_the_episode_and_is_reported(tmp_path):
    """A camera silent from 1.0 s to 2.0 s: the frames without a fresh image are skipped and counted, the
    episode ends at the gap and a new one starts after it, so every row keeps the time it was recorded at."""
    bag = write_synthetic_bag(tmp_path / "gap", duration=3.0, image_size=(32, 24), camera_gap=(1.0, 2.0))
    out = tmp_path / "dataset"
    info = export_dataset([bag.path], out, config=ExportConfig(video=False, state_space="joint_position"),
                          progress=False)
    report = json.loads((out / "meta" / "wall_oss_export.json").read_text())["bags"][str(bag.path)]
    assert info["total_episodes"] == report["episodes"] == 2 and report["frames"] == info["total_frames"]
    [(last_before, first_after)] = report["gaps"]
    assert 1.0 <= last_before - START < 1.5 and first_after - START == pytest.approx(2.0)
    missing = int(round((first_after - last_before) * 10)) - 1
    assert missing > 0 and sum(n for reason, n in report["skipped"].items() if reason.startswith("frame:")) == missing
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pandas()
    for episode, start in ((0, 0.0), (1, first_after - START)):
        rows = data[data["episode_index"] == episode]
        recorded_at = start + rows["timestamp"].to_numpy(np.float64)
        np.testing.assert_allclose(np.stack(rows["observation.state"]), trajectory(bag.robot, recorded_at), atol=1e-5)
    assert len(data[data["episode_index"] == 0]) == int(round((last_before - START) * 10)) + 1


def test_frame_sampler_keeps_a_bounded_evenly_spaced_sample():
    sampler = FrameSampler(capacity=16)
    for index in range(1000):
        sampler.add(np.full((480, 640, 3), index % 256, np.uint8))
    assert sampler.seen == 1000 and 8 < len(sampler.samples) <= 16
    assert sampler.samples[0].shape == (120, 160, 3)  # downsampled as LeRobot does before image statistics
    assert [int(s[0, 0, 0]) for s in sampler.samples] == [i % 256 for i in range(0, 1000, sampler.stride)]
    assert downsample(np.zeros((48, 64, 3))).shape == (48, 64, 3)
    assert sampler.stats()["count"] == [1000] and np.array(sampler.stats()["mean"]).shape == (3, 1, 1)


def test_aggregated_statistics_match_the_pooled_data():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 1.0, (50, 4)), rng.normal(-1.0, 2.0, (150, 4))]
    pooled = np.concatenate(parts)
    combined = aggregate_stats([feature_stats(p) for p in parts])
    np.testing.assert_allclose(combined["mean"], pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(combined["std"], pooled.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(combined["min"], pooled.min(axis=0))
    np.testing.assert_allclose(combined["max"], pooled.max(axis=0))
    assert combined["count"] == [200]
