"""Offline evaluation throughput and bag read throughput, as ratios against plain iteration of the bag.

One synthetic 8 s recording (three 160x120 cameras at 10 Hz, joint states at 100 Hz, action chunks at
2 Hz) is built once; then, side by side in this process:
  plain      rosbags' Reader iterating every raw message (the floor)
  reader     wall_oss BagReader iterating and deserializing every message (MB/s of payload)
  replay     `evaluate_bag` with the replay backend at every camera frame (observations per second)
  tiny       `evaluate_bag` with a tiny generated Wall-OSS checkpoint at every recorded chunk
Last line: eval_replay_obs_per_s=<value>.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from rosbags.rosbag2 import Reader  # noqa: E402
from synthetic_bags import write_synthetic_bag  # noqa: E402

from wall_oss_core.backends.replay import ReplayPolicy, load_recording  # noqa: E402
from wall_oss_core.data.bag_reader import BagReader  # noqa: E402
from wall_oss_core.evaluation.open_loop import EvaluationConfig, evaluate_bag  # noqa: E402


def timed(function, repeats: int = 3):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bag = write_synthetic_bag(root / "bag", duration=8.0, joint_rate=100.0, image_size=(160, 120),
                                  action_space="wall_oss_ee_relative")

        def plain():
            with Reader(bag.path) as reader:
                return sum(len(raw) for _, _, raw in reader.messages())

        def wall_oss_reader():
            with BagReader(bag.path) as reader:
                for _ in reader.messages():
                    pass
                return reader.bytes_read

        plain_s, payload = timed(plain)
        reader_s, read_bytes = timed(wall_oss_reader)
        assert read_bytes == payload
        replay = ReplayPolicy(load_recording(bag.path), alignment="absolute")
        config = EvaluationConfig(instants="frames", progress=False)
        replay_s, result = timed(lambda: evaluate_bag(bag.path, replay, config=config), repeats=1)
        replay_obs = result.metrics["coverage"]["instants"]

        from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig
        from wall_oss_core.model.checkpoint_generator import generate_checkpoint
        tiny = WallOssPolicy(WallOssPolicyConfig(checkpoint_dir=str(generate_checkpoint(root / "ckpt", size="tiny")),
                                                 seed=0, num_threads=1))
        tiny_s, tiny_result = timed(lambda: evaluate_bag(bag.path, tiny, config=EvaluationConfig(progress=False)),
                                    repeats=1)
        tiny_obs = tiny_result.metrics["coverage"]["instants"]

    megabytes = payload / 1e6
    print(f"bag: {megabytes:.1f} MB payload, {replay_obs} frame instants, {tiny_obs} chunk instants")
    print(f"plain rosbags iteration      {megabytes / plain_s:8.1f} MB/s")
    print(f"BagReader (deserialize)      {megabytes / reader_s:8.1f} MB/s   ratio to plain {plain_s / reader_s:.3f}")
    print(f"evaluation, replay backend   {replay_obs / replay_s:8.1f} obs/s  time ratio to plain {replay_s / plain_s:.1f}x")
    print(f"evaluation, tiny checkpoint  {tiny_obs / tiny_s:8.1f} obs/s  time ratio to plain {tiny_s / plain_s:.1f}x")
    print(f"bag_read_ratio_to_plain={plain_s / reader_s:.3f}")
    print(f"eval_replay_obs_per_s={replay_obs / replay_s:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
