"""`wall-oss train` on a tiny dataset exported from synthetic bags: samples, learning, strict save/load, LoRA, resume."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic_bags import INSTRUCTION, write_synthetic_bag

from wall_oss_core.data.lerobot_export import ExportConfig, export_dataset
from wall_oss_core.model.loading import load_model
from wall_oss_core.model.pipeline import WallOssPipeline
from wall_oss_core.training.dataset import TrainingDataset, relative_chunk
from wall_oss_core.training.trainer import TrainConfig, Trainer, TrainingError, load_adapter, lr_factor

pytestmark = pytest.mark.timeout(300)
FAST = dict(size="tiny", batch_size=2, lr=1e-3, image_size=28, progress=False)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    bags = [write_synthetic_bag(root / f"bag{i}", duration=2.0 + 0.5 * i, image_size=(64, 48)) for i in range(2)]
    export_dataset([b.path for b in bags], root / "ds", config=ExportConfig(state_space="wall_oss_ee"), progress=False)
    return root / "ds"


def _chunk_for(pipeline: WallOssPipeline, dataset: TrainingDataset, indices, seed=3):
    sample = dataset.batch(indices)
    inputs = pipeline.model_inputs(pipeline.prepare(sample["images"], sample["state"], sample["tasks"]))
    noise = torch.randn(len(indices), 32, 26, generator=torch.Generator().manual_seed(seed))
    return pipeline.model.sample_actions(inputs, noise=noise)


def test_dataset_samples_are_relative_chunks_with_padding(dataset_dir):
    data = TrainingDataset(dataset_dir, chunk_size=32)
    assert data.ee_layout and data.cameras == ("face_view", "left_wrist_view", "right_wrist_view")
    assert data.images["face_view"].shape[1:] == (48, 64, 3) and data.tasks[0] == INSTRUCTION
    first_end = int(np.flatnonzero(data.episode_index == 0)[-1]) + 1
    assert data.action_valid[0].sum() == min(32, first_end)  # the chunk stops at its episode's end
    assert not data.action_valid[first_end - 1, 1:].any() and data.action_valid[first_end - 1, 0]
    # relative: position offsets from the chunk's first state, rotation R_target R_stateᵀ
    np.testing.assert_allclose(relative_chunk(data.states[:1], data.states[0])[0, :9],
                               [0, 0, 0, 1, 0, 0, 0, 1, 0], atol=1e-6)
    import pandas as pd

    targets = np.stack(pd.read_parquet(dataset_dir / "data" / "chunk-000" / "file-000.parquet")["action"])
    np.testing.assert_allclose(data.actions[0, 3, :3], targets[3, :3] - data.states[0, :3], atol=1e-6)
    np.testing.assert_allclose(data.actions[0, 3, 9], targets[3, 9], atol=1e-6)  # gripper stays absolute
    stats = data.action_statistics()
    assert (stats["q99"] - stats["q01"] >= 1e-3 - 1e-7).all()  # the unused tail is widened, never zero-range


def test_training_lowers_the_loss_and_the_checkpoint_loads_strictly(dataset_dir, tmp_path):
    trainer = Trainer(TrainConfig(dataset=str(dataset_dir), out=str(tmp_path / "run"), steps=32,
                                  **{**FAST, "batch_size": 4}))
    frames = np.arange(0, len(trainer.dataset), 2)
    before = trainer.evaluate(frames)
    losses = trainer.run()
    after = trainer.evaluate(frames)
    assert len(losses) == 32 and after < 0.6 * before, (before, after, losses)
    assert lr_factor(0, trainer.config) == pytest.approx(1 / trainer.config.warmup)
    assert lr_factor(31, trainer.config) < lr_factor(10, trainer.config) < 1

    trainer.model.eval()
    expected = _chunk_for(trainer.pipeline, trainer.dataset, [0, 7])
    loaded = WallOssPipeline.from_pretrained(tmp_path / "run" / "checkpoint")  # strict key/shape check
    assert loaded.processor.settings.image_longest_side == 28
    assert loaded.spec.action_names == trainer.dataset.action_names
    assert torch.equal(_chunk_for(loaded, trainer.dataset, [0, 7]), expected)
    stats = load_file(tmp_path / "run" / "checkpoint" / "policy_postprocessor_step_0_unnormalizer_processor.safetensors")
    np.testing.assert_allclose(stats["action.q01"].numpy(), trainer.dataset.action_statistics()["q01"])

    from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig

    policy = WallOssPolicy(WallOssPolicyConfig(checkpoint_dir=str(tmp_path / "run" / "checkpoint")))
    assert policy.camera_names == trainer.dataset.cameras  # the policy node accepts it (EE schema)


def test_resume_continues_exactly(dataset_dir, tmp_path):
    whole = Trainer(TrainConfig(dataset=str(dataset_dir), out=str(tmp_path / "whole"), steps=4, **FAST))
    whole.run()
    Trainer(TrainConfig(dataset=str(dataset_dir), out=str(tmp_path / "split"), steps=4, stop_at=2, **FAST)).run()
    resumed = Trainer(TrainConfig(dataset=str(dataset_dir), out=str(tmp_path / "resumed"), steps=4,
                                  resume=str(tmp_path / "split"), **FAST))
    assert resumed.step == 2
    resumed.run()
    a = load_file(tmp_path / "whole" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TrainingError, match="no resumable state"):
        Trainer(TrainConfig(dataset=str(dataset_dir), out=str(tmp_path / "x"), resume=str(tmp_path / "none"), **FAST))


def test_lora_adapters_save_load_and_merge(dataset_dir, tmp_path):
    out = tmp_path / "lora"
    trainer = Trainer(TrainConfig(dataset=str(dataset_dir), out=str(out), steps=3, lora_rank=4,
                                  **{**FAST, "lr": 1e-2}))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    trainer.run()
    trainer.model.eval()
    adapted = _chunk_for(trainer.pipeline, trainer.dataset, [1, 9])

    base = WallOssPipeline.from_pretrained(out / "base")
    untouched = _chunk_for(base, trainer.dataset, [1, 9])
    assert (untouched - adapted).abs().max() > 1e-4  # the adapters changed the policy
    load_adapter(base.model, out / "adapter")
    assert (_chunk_for(base, trainer.dataset, [1, 9]) - adapted).abs().max() <= 1e-6  # adapters reload
    merged = WallOssPipeline.from_pretrained(out / "checkpoint")  # strict: plain weights, no adapter keys
    assert (_chunk_for(merged, trainer.dataset, [1, 9]) - adapted).abs().max() <= 1e-5  # merged == adapters
    assert not any("lora" in k for k in load_file(out / "checkpoint" / "model.safetensors"))


def test_cli_end_to_end(dataset_dir, tmp_path):
    wall_oss = Path(sys.executable).parent / "wall-oss"
    first = tmp_path / "first"
    done = subprocess.run([str(wall_oss), "train", "--dataset", str(dataset_dir), "--config", "tiny", "--out",
                           str(first), "--steps", "2", "--batch-size", "1", "--image-size", "28", "--threads", "1"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "steps=2" in done.stdout and "step/s, loss=" in done.stderr  # tqdm bar: rate, loss, lr
    done = subprocess.run([str(wall_oss), "train", "--dataset", str(dataset_dir), "--init", str(first / "checkpoint"),
                           "--out", str(tmp_path / "second"), "--steps", "1", "--batch-size", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    load_model(tmp_path / "second" / "checkpoint")
    done = subprocess.run([str(wall_oss), "train", "--dataset", str(tmp_path), "--config", "tiny", "--out",
                           str(tmp_path / "bad")], capture_output=True, text=True, timeout=240)
    assert done.returncode == 2 and "not a LeRobot dataset" in done.stderr
