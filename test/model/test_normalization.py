"""Normalization statistics from LeRobot pipelines and author tensors, against the golden numbers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wall_oss_core.model.normalization import FeatureNormalizer, NormalizationError, load_normalization, state_to_bins

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "wall_oss_05"
CASES = ["b1", "b2_leftpad"]


def _case(name):
    return load_file(str(GOLDEN / f"{name}.safetensors"))


@pytest.fixture
def author_only_checkpoint(tmp_path):
    """The golden 0.5 weights without the LeRobot pipeline files: statistics only as author tensors."""
    shutil.copy(GOLDEN / "checkpoint" / "model.safetensors", tmp_path / "model.safetensors")
    return tmp_path


@pytest.mark.parametrize("case", CASES)
def test_lerobot_pipelines_reproduce_golden(case):
    tensors = _case(case)
    normalization = load_normalization(GOLDEN / "checkpoint")
    assert "LeRobot" in normalization.source
    unnormalized = normalization.action.unnormalize(tensors["action_normalized"])
    assert (unnormalized - tensors["action_unnormalized"]).abs().max() <= 1e-5
    state = normalization.state.normalize(tensors["raw_observation/observation.state"]).clamp(-1, 1)
    assert (state - tensors["state_normalized_clamped"]).abs().max() <= 1e-6
    assert np.array_equal(state_to_bins(state.numpy()), tensors["state_bins_0_511"].numpy())


@pytest.mark.parametrize("case", CASES)
def test_author_tensors_reproduce_golden(author_only_checkpoint, case):
    tensors = _case(case)
    normalization = load_normalization(author_only_checkpoint)
    assert "tiny_robot" in normalization.source
    unnormalized = normalization.action.unnormalize(tensors["action_normalized"])
    assert (unnormalized - tensors["action_unnormalized"]).abs().max() <= 1e-5
    state = normalization.state.normalize(tensors["raw_observation/observation.state"]).clamp(-1, 1)
    assert (state - tensors["state_normalized_clamped"]).abs().max() <= 1e-5


def test_state_bins_edges():
    assert state_to_bins(np.array([-1.0, -0.999, 0.0, 0.999, 1.0])).tolist() == [0, 0, 256, 511, 511]
    assert state_to_bins(np.array([-1.0 + 2 / 512])).tolist() == [1]


def test_mean_std_and_min_max_round_trip():
    values = torch.tensor([[0.5, -2.0, 3.0], [1.5, 0.0, -1.0]])
    for mode, stats in (("MEAN_STD", {"mean": torch.tensor([1.0, -1.0, 0.5]), "std": torch.tensor([0.5, 2.0, 4.0])}),
                        ("MIN_MAX", {"min": torch.tensor([0.0, -3.0, -2.0]), "max": torch.tensor([2.0, 1.0, 4.0])}),
                        ("QUANTILES", {"q01": torch.tensor([0.0, -3.0, -2.0]), "q99": torch.tensor([2.0, 1.0, 4.0])})):
        normalizer = FeatureNormalizer.from_stats(mode, stats)
        assert torch.allclose(normalizer.unnormalize(normalizer.normalize(values)), values, atol=1e-6)
    # worked by hand: MEAN_STD (x - mean) / std; MIN_MAX and QUANTILES map [low, high] to [-1, 1]
    by_hand = {"MEAN_STD": [[-1.0, -0.5, 0.625], [1.0, 0.5, -0.375]],
               "MIN_MAX": [[-0.5, -0.5, 2 / 3], [0.5, 0.5, -2 / 3]],
               "QUANTILES": [[-0.5, -0.5, 2 / 3], [0.5, 0.5, -2 / 3]]}
    for mode, stats in (("MEAN_STD", {"mean": torch.tensor([1.0, -1.0, 0.5]), "std": torch.tensor([0.5, 2.0, 4.0])}),
                        ("MIN_MAX", {"min": torch.tensor([0.0, -3.0, -2.0]), "max": torch.tensor([2.0, 1.0, 4.0])}),
                        ("QUANTILES", {"q01": torch.tensor([0.0, -3.0, -2.0]), "q99": torch.tensor([2.0, 1.0, 4.0])})):
        normalized = FeatureNormalizer.from_stats(mode, stats).normalize(values)
        assert torch.allclose(normalized, torch.tensor(by_hand[mode]), atol=1e-6), mode


def test_zero_range_uses_eps_instead_of_dividing_by_zero():
    normalizer = FeatureNormalizer.from_stats("QUANTILES", {"q01": torch.zeros(2), "q99": torch.tensor([0.0, 2.0])})
    normalized = normalizer.normalize(torch.zeros(1, 2))
    assert torch.isfinite(normalized).all() and normalized[0, 0] == -1.0
    assert torch.allclose(normalizer.unnormalize(normalized), torch.zeros(1, 2))


def test_missing_or_inconsistent_statistics_are_errors(tmp_path_factory, author_only_checkpoint):
    tmp_path = tmp_path_factory.mktemp("stats")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NormalizationError, match="no normalization statistics"):
        load_normalization(empty)
    assert load_normalization(empty, allow_identity=True).action.mode == "IDENTITY"
    with pytest.raises(NormalizationError, match="needs stats"):
        FeatureNormalizer.from_stats("QUANTILES", {"q01": torch.zeros(3)})
    with pytest.raises(NormalizationError, match="last dimension"):
        FeatureNormalizer.from_stats("MEAN_STD", {"mean": torch.zeros(3), "std": torch.ones(3)}).normalize(torch.zeros(1, 4))
    with pytest.raises(NormalizationError, match="NaN"):
        FeatureNormalizer.from_stats("MEAN_STD", {"mean": torch.full((2,), float("nan")), "std": torch.ones(2)})

    weights = load_file(str(author_only_checkpoint / "model.safetensors"))
    for key in [k for k in weights if "normalizer_" in k]:
        weights[key.replace("tiny_robot", "other_robot")] = weights[key].clone()
    save_file(weights, str(author_only_checkpoint / "model.safetensors"))
    with pytest.raises(NormalizationError, match="several robots"):
        load_normalization(author_only_checkpoint)
    assert "other_robot" in load_normalization(author_only_checkpoint, robot="other_robot").source
    with pytest.raises(NormalizationError, match="no statistics for robot"):
        load_normalization(author_only_checkpoint, robot="missing")


def test_pipeline_without_action_statistics_is_an_error(tmp_path):
    for name in ("policy_preprocessor.json", "policy_preprocessor_step_6_normalizer_processor.safetensors"):
        shutil.copy(GOLDEN / "checkpoint" / name, tmp_path / name)
    pipeline = json.loads((tmp_path / "policy_preprocessor.json").read_text())
    for step in pipeline["steps"]:
        step.get("config", {}).get("features", {}).pop("action", None)
    (tmp_path / "policy_preprocessor.json").write_text(json.dumps(pipeline))
    with pytest.raises(NormalizationError, match="no action normalization"):
        load_normalization(tmp_path)
