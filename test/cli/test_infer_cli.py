"""`wall-oss infer` reproduces the golden 0.5 cases from raw observation files, and rejects bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wall_oss_ros.cli import main

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "wall_oss_05"
CHECKPOINT = GOLDEN / "checkpoint"


def _write_case_files(case: str, directory: Path) -> tuple[Path, Path, dict]:
    """OBS and NOISE files built from a golden case's raw observation and initial noise."""
    tensors = load_file(str(GOLDEN / f"{case}.safetensors"))
    meta = json.loads((GOLDEN / f"{case}.json").read_text())
    observation = {key.split("/", 1)[1]: value for key, value in tensors.items() if key.startswith("raw_observation/")}
    obs_path, noise_path = directory / f"{case}_obs.safetensors", directory / f"{case}_noise.safetensors"
    save_file(observation, str(obs_path), metadata={"task": json.dumps(meta["raw_observation"]["task"])})
    save_file({"noise": tensors["initial_noise"]}, str(noise_path))
    return obs_path, noise_path, tensors


def _assert_matches_golden(out_path: Path, tensors: dict):
    out = load_file(str(out_path))
    assert (out["action"] - tensors["action_unnormalized"]).abs().max() <= 1e-5
    assert (out["action_normalized"] - tensors["action_normalized"]).abs().max() <= 1e-5


def test_cli_subprocess_reproduces_left_padded_batch(tmp_path):
    obs, noise, tensors = _write_case_files("b2_leftpad", tmp_path)
    out = tmp_path / "out.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "wall_oss_ros.cli", "infer", "--checkpoint", str(CHECKPOINT),
         "--observation", str(obs), "--noise", str(noise), "--out", str(out), "--dtype", "float32", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    _assert_matches_golden(out, tensors)


def test_cli_reproduces_single_sample_with_uint8_images(tmp_path):
    obs, noise, tensors = _write_case_files("b1", tmp_path)
    observation = load_file(str(obs))
    for key in [k for k in observation if k.startswith("observation.images.")]:
        observation[key] = (observation[key].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    save_file(observation, str(obs), metadata={"task": json.dumps(["pick up the red cube and place it in the bowl"])})
    out = tmp_path / "out.safetensors"
    assert main(["infer", "--checkpoint", str(CHECKPOINT), "--observation", str(obs), "--noise", str(noise),
                 "--out", str(out)]) == 0
    _assert_matches_golden(out, tensors)


@pytest.fixture(scope="module")
def valid_observation(tmp_path_factory):
    return _write_case_files("b1", tmp_path_factory.mktemp("obs"))


def _rewrite(path: Path, drop=(), metadata=None, **replace) -> Path:
    tensors = load_file(str(path))
    for key in drop:
        tensors.pop(key)
    tensors.update(replace)
    target = path.parent / f"bad_{len(list(path.parent.iterdir()))}.safetensors"
    save_file(tensors, str(target), metadata=metadata)
    return target


def _run_expect_error(capsys, tmp_path, obs, noise=None, checkpoint=CHECKPOINT) -> str:
    argv = ["infer", "--checkpoint", str(checkpoint), "--observation", str(obs), "--out", str(tmp_path / "o.safetensors")]
    if noise is not None:
        argv += ["--noise", str(noise)]
    assert main(argv) == 2
    assert not (tmp_path / "o.safetensors").exists()
    return capsys.readouterr().err


def test_cli_rejects_bad_inputs_with_clear_messages(valid_observation, tmp_path, capsys):
    obs, noise, tensors = valid_observation
    task = {"task": json.dumps(["pick up the red cube and place it in the bowl"])}
    assert "missing `observation.state`" in _run_expect_error(
        capsys, tmp_path, _rewrite(obs, drop=["observation.state"], metadata=task))
    assert "missing camera(s) ['right_wrist_view']" in _run_expect_error(
        capsys, tmp_path, _rewrite(obs, drop=["observation.images.right_wrist_view"], metadata=task))
    assert "missing metadata entry `task`" in _run_expect_error(capsys, tmp_path, _rewrite(obs))
    assert "list of 1 strings" in _run_expect_error(
        capsys, tmp_path, _rewrite(obs, metadata={"task": json.dumps(["a", "b"])}))
    assert "state must be [B, 26]" in _run_expect_error(
        capsys, tmp_path, _rewrite(obs, metadata=task, **{"observation.state": torch.zeros(1, 7)}))
    assert "must be float B x 3 x H x W" in _run_expect_error(
        capsys, tmp_path, _rewrite(obs, metadata=task, **{"observation.images.face_view": torch.zeros(1, 48, 64)}))
    assert "noise must be [1, 32, 26]" in _run_expect_error(
        capsys, tmp_path, obs, noise=_rewrite(noise, noise=torch.zeros(1, 32, 20)))
    assert "missing `noise`" in _run_expect_error(capsys, tmp_path, obs, noise=_rewrite(noise, drop=["noise"], extra=torch.zeros(1)))
    assert "does not exist" in _run_expect_error(capsys, tmp_path, tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert "not a readable safetensors file" in _run_expect_error(capsys, tmp_path, tmp_path / "junk.safetensors")


def test_cli_rejects_bad_checkpoints(valid_observation, tmp_path, capsys):
    obs, _, _ = valid_observation
    assert "does not exist" in _run_expect_error(capsys, tmp_path, obs, checkpoint=tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in CHECKPOINT.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weights = load_file(str(broken / "model.safetensors"))
    weights.pop("model.norms.1.weight")
    save_file(weights, str(broken / "model.safetensors"))
    assert "model.norms.1.weight" in _run_expect_error(capsys, tmp_path, obs, checkpoint=broken)
