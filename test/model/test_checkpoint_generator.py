"""Generated checkpoints are complete, deterministic, and run through loader, processor and pipeline."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wall_oss_core.model.checkpoint_generator import CAMERAS, generate_checkpoint
from wall_oss_core.model.configuration import WallOssConfig
from wall_oss_core.model.normalization import load_normalization
from wall_oss_core.model.pipeline import WallOssPipeline
from wall_oss_core.model.processing import load_tokenizer
from wall_oss_core.policy.action_space import wall_oss_names
from wall_oss_ros.cli import main as make_checkpoint_main

GENERATIONS = ["wall_oss_05", "wall_oss_flow"]
EXPECTED_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                  "merges.txt", "preprocessor_config.json", "policy_preprocessor.json", "policy_postprocessor.json"}


@pytest.fixture(scope="module", params=GENERATIONS)
def tiny(request, tmp_path_factory):
    return request.param, generate_checkpoint(tmp_path_factory.mktemp(request.param), "tiny", request.param, seed=3)


def test_directory_is_complete_and_deterministic(tiny, tmp_path):
    generation, directory = tiny
    assert {path.name for path in directory.iterdir()} >= EXPECTED_FILES
    again = generate_checkpoint(tmp_path / "again", "tiny", generation, seed=3)
    for path in directory.iterdir():
        assert path.read_bytes() == (again / path.name).read_bytes(), path.name
    other = load_file(str(generate_checkpoint(tmp_path / "other", "tiny", generation, seed=4) / "model.safetensors"))
    weights = load_file(str(directory / "model.safetensors"))
    assert not torch.equal(weights["action_preprocessor.w1.weight"], other["action_preprocessor.w1.weight"])


def test_config_tokenizer_and_statistics_agree(tiny):
    generation, directory = tiny
    config = WallOssConfig.from_checkpoint_dir(directory)
    assert config.generation == generation
    assert tuple(config.camera_key_mapping.values()) == CAMERAS
    tokenizer = load_tokenizer(directory)
    assert tokenizer.convert_tokens_to_ids("<|action|>") == config.token_ids.action
    assert tokenizer.convert_tokens_to_ids("<|propri|>") == config.token_ids.propri
    assert len(tokenizer) <= config.text.vocab_size
    width = 26 if generation == "wall_oss_05" else 20
    assert (config.action.action_dim, config.action.state_dim) == (width, width)
    normalization = load_normalization(directory)
    assert normalization.state.dim == normalization.action.dim == width
    assert normalization.state.mode == ("QUANTILES" if generation == "wall_oss_05" else "MEAN_STD")
    names = json.loads((directory / "config.json").read_text())["action_names"]
    assert names == wall_oss_names(relative=True)[:width]


def test_author_statistics_match_lerobot_files(tmp_path):
    directory = generate_checkpoint(tmp_path / "ck", "tiny", "wall_oss_05", seed=0)
    lerobot = load_normalization(directory)
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        (directory / name).unlink()
    author = load_normalization(directory)
    assert "wall_oss_demo" in author.source
    for feature in ("state", "action"):
        assert torch.equal(getattr(lerobot, feature).offset, getattr(author, feature).offset)
        assert torch.allclose(getattr(lerobot, feature).scale, getattr(author, feature).scale)


def test_pipeline_runs_on_generated_checkpoint(tiny):
    generation, directory = tiny
    pipeline = WallOssPipeline.from_pretrained(directory)
    rng = np.random.default_rng(0)
    images = {camera: rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8) for camera in CAMERAS}
    width = 26 if generation == "wall_oss_05" else 20
    state = rng.uniform(-0.5, 0.5, (2, width)).astype(np.float32)
    noise = torch.from_numpy(rng.standard_normal((2, 32, width)).astype(np.float32))
    actions, normalized = pipeline(images, state, ["pick up the red cube", "fold the towel"], noise=noise)
    assert actions.shape == normalized.shape == (2, 32, width)
    assert torch.isfinite(actions).all()
    assert torch.allclose(pipeline.normalization.action.normalize(actions), normalized, atol=1e-4)
    recomputed, _ = pipeline(images, state, ["pick up the red cube", "fold the towel"], noise=noise,
                             use_prefix_cache=False)
    assert (recomputed - actions).abs().max() <= 1e-5


def test_make_checkpoint_command(tmp_path, capsys):
    assert make_checkpoint_main(["make-checkpoint", str(tmp_path / "ck"), "--size", "tiny",
                                 "--generation", "wall_oss_flow", "--seed", "1"]) == 0
    assert "untrained" in capsys.readouterr().out
    assert WallOssConfig.from_checkpoint_dir(tmp_path / "ck").generation == "wall_oss_flow"
    (tmp_path / "file").write_text("x")
    assert make_checkpoint_main(["make-checkpoint", str(tmp_path / "file"), "--size", "tiny"]) == 2
