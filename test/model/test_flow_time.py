"""`noise_scheduler.time_shift` (LeRobot wall_oss_05): inference schedule, training times, config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wall_oss_core.model.configuration import ConfigError, SamplerConfig, WallOssConfig
from wall_oss_core.model.flow_time import inference_times, shift_times
from wall_oss_core.model.loading import load_model
from wall_oss_core.model.modeling import ModelInputs, SamplingTrace

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "wall_oss_05"


def checkpoint_with_scheduler(tmp_path: Path, **fields) -> Path:
    """A copy of the golden 0.5 checkpoint whose config.json noise_scheduler has `fields` set."""
    directory = tmp_path / "ckpt"
    shutil.copytree(GOLDEN / "checkpoint", directory)
    for path in directory.iterdir():
        path.chmod(0o644)
    raw = json.loads((directory / "config.json").read_text())
    raw["vlm_config"]["noise_scheduler"].update(fields)
    (directory / "config.json").write_text(json.dumps(raw))
    return directory


def golden_b1() -> tuple[ModelInputs, torch.Tensor]:
    case = load_file(GOLDEN / "b1.safetensors")
    inputs = ModelInputs(input_ids=case["input_ids"], attention_mask=case["attention_mask"],
                         position_ids=case["position_ids"], dof_mask=case["dof_mask"],
                         pixel_values=case["pixel_values"], image_grid_thw=case["image_grid_thw"])
    return inputs, case["initial_noise"]


def test_config_reads_and_writes_time_shift(tmp_path):
    config = WallOssConfig.from_checkpoint_dir(checkpoint_with_scheduler(tmp_path, time_shift=3.0))
    assert config.sampler.time_shift == 3.0
    assert (config.sampler.beta_alpha, config.sampler.beta_beta, config.sampler.train_time_scale) == (1.5, 1.0, 0.999)
    written = config.to_json_dict()
    assert written["vlm_config"]["noise_scheduler"]["time_shift"] == 3.0
    assert WallOssConfig.from_json_dict(json.loads(json.dumps(written)), tmp_path / "ckpt") == config
    assert WallOssConfig.from_checkpoint_dir(GOLDEN / "checkpoint").sampler.time_shift == 1.0


@pytest.mark.parametrize("value", [0.0, -2.0, "fast"])
def test_bad_time_shift_is_a_config_error(tmp_path, value):
    with pytest.raises(ConfigError, match="time_shift|noise_scheduler"):
        WallOssConfig.from_checkpoint_dir(checkpoint_with_scheduler(tmp_path, time_shift=value))


def test_sampler_integrates_over_the_shifted_schedule(tmp_path):
    k, s = 3.0, 0.999
    model, config = load_model(checkpoint_with_scheduler(tmp_path, time_shift=k))
    inputs, noise = golden_b1()
    trace = SamplingTrace()
    out = model.sample_actions(inputs, noise=noise, trace=trace)
    t = torch.arange(11, dtype=torch.float64) / 10
    expected = k * t / (1 + (k - 1) * t) * s
    assert (trace.times.double() - expected).abs().max().item() <= 4e-7  # fp32 rounding
    assert trace.times[-1].item() == pytest.approx(s)
    # each Euler step advances by the shifted time difference
    for i, velocity in enumerate(trace.velocities):
        step = trace.x_t[i] + (trace.times[i + 1] - trace.times[i]) * velocity
        assert torch.equal(step, trace.x_t[i + 1])
    assert torch.equal(out, trace.x_t[-1])
    unshifted = load_model(GOLDEN / "checkpoint")[0].sample_actions(inputs, noise=noise)
    assert (out - unshifted).abs().max().item() > 1e-3  # the schedule reaches the actions


def test_time_shift_one_reproduces_the_unshifted_sampler_bit_for_bit(tmp_path):
    inputs, noise = golden_b1()
    model_k1, config = load_model(checkpoint_with_scheduler(tmp_path, time_shift=1.0))
    assert config.sampler.time_shift == 1.0
    trace = SamplingTrace()
    out_k1 = model_k1.sample_actions(inputs, noise=noise, trace=trace)
    assert torch.equal(trace.times, torch.linspace(0.0, 1.0, 11, dtype=torch.float32) * 0.999)
    out_default = load_model(GOLDEN / "checkpoint")[0].sample_actions(inputs, noise=noise)
    assert torch.equal(out_k1, out_default)
    golden = load_file(GOLDEN / "b1.safetensors")
    assert (out_k1 - golden["action_normalized"]).abs().max().item() <= 1e-5


def test_shift_formula_endpoints_and_monotonicity():
    t = torch.linspace(0, 1, 101)
    for k in (0.5, 2.0, 5.0):
        shifted = shift_times(t, k)
        assert shifted[0].item() == 0.0 and shifted[-1].item() == pytest.approx(1.0)
        assert bool((shifted[1:] > shifted[:-1]).all())
    assert shift_times(t, 1.0) is t
    assert torch.allclose(inference_times(SamplerConfig(num_steps=4, time_scale=1.0, time_shift=2.0)),
                          torch.tensor([0.0, 0.4, 2 / 3, 6 / 7, 1.0]), atol=1e-7)
