"""`wall-oss ask` answers about an observation file through the real entry point, and rejects bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wall_oss_core.model.pipeline import WallOssPipeline
from wall_oss_core.model.text_generation import TextSampling
from wall_oss_ros.cli import main

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "wall_oss_05"
CHECKPOINT = GOLDEN / "checkpoint"
IMAGE_PREFIX = "raw_observation/observation.images."


@pytest.fixture(scope="module")
def observation(tmp_path_factory) -> Path:
    """The golden b1 cameras (and task) as an OBS file; no state needed for text."""
    case = load_file(str(GOLDEN / "b1.safetensors"))
    meta = json.loads((GOLDEN / "b1.json").read_text())
    path = tmp_path_factory.mktemp("ask") / "obs.safetensors"
    save_file({k.split("/", 1)[1]: v for k, v in case.items() if k.startswith(IMAGE_PREFIX)}, str(path),
              metadata={"task": json.dumps(meta["raw_observation"]["task"])})
    return path


def expected_answer(question: str, kind: str, max_new_tokens: int) -> str:
    pipeline = WallOssPipeline.from_pretrained(CHECKPOINT)
    case = load_file(str(GOLDEN / "b1.safetensors"))
    images = {k[len(IMAGE_PREFIX):]: v for k, v in case.items() if k.startswith(IMAGE_PREFIX)}
    return pipeline.ask(images, [question], kind=kind, sampling=TextSampling(max_new_tokens=max_new_tokens))[0]


def test_subprocess_prints_the_greedy_answer(observation):
    result = subprocess.run(
        [sys.executable, "-m", "wall_oss_ros.cli", "ask", "--checkpoint", str(CHECKPOINT),
         "--observation", str(observation), "--question", "What is on the table?", "--max-new-tokens", "6"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    answer = expected_answer("What is on the table?", "vqa", 6)
    assert answer and result.stdout == answer + "\n"


def test_subtask_defaults_to_the_file_task_and_sampling_is_seeded(observation, capsys):
    argv = ["ask", "--checkpoint", str(CHECKPOINT), "--observation", str(observation), "--kind", "subtask",
            "--max-new-tokens", "4"]
    assert main(argv) == 0
    task = json.loads((GOLDEN / "b1.json").read_text())["raw_observation"]["task"][0]
    assert capsys.readouterr().out == expected_answer(task, "subtask", 4) + "\n"
    sampled = argv + ["--temperature", "1.0", "--top-p", "0.9", "--seed", "4"]
    assert main(sampled) == 0
    first = capsys.readouterr().out
    assert main(sampled) == 0
    assert capsys.readouterr().out == first


def _expect_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_bad_inputs_are_one_line_errors(observation, tmp_path, capsys):
    base = ["ask", "--checkpoint", str(CHECKPOINT), "--observation", str(observation)]
    assert "--kind vqa needs --question" in _expect_error(capsys, base)
    assert "top_p must be in (0, 1]" in _expect_error(capsys, base + ["--question", "q", "--top-p", "0"])
    assert "max_new_tokens must be >= 1" in _expect_error(capsys, base + ["--question", "q", "--max-new-tokens", "0"])
    assert "non-empty" in _expect_error(capsys, base + ["--question", " "])
    tensors = load_file(str(observation))
    tensors.pop("observation.images.right_wrist_view")
    one_camera = tmp_path / "one.safetensors"
    save_file(tensors, str(one_camera))
    assert "missing camera(s) ['right_wrist_view']" in _expect_error(
        capsys, ["ask", "--checkpoint", str(CHECKPOINT), "--observation", str(one_camera), "--question", "q"])
    assert "observation file" in _expect_error(
        capsys, ["ask", "--checkpoint", str(CHECKPOINT), "--observation", str(tmp_path / "absent.safetensors"),
                 "--kind", "caption"])
    tensors = load_file(str(observation))
    save_file(tensors, str(tmp_path / "notask.safetensors"))
    assert "needs --question or a `task` metadata entry" in _expect_error(
        capsys, ["ask", "--checkpoint", str(CHECKPOINT), "--observation", str(tmp_path / "notask.safetensors"),
                 "--kind", "subtask"])
    tensors["observation.images.face_view"] = torch.zeros(1, 48, 64)
    save_file(tensors, str(tmp_path / "flat.safetensors"))
    assert "must be float B x 3 x H x W" in _expect_error(
        capsys, ["ask", "--checkpoint", str(CHECKPOINT), "--observation", str(tmp_path / "flat.safetensors"),
                 "--question", "q"])
    assert "does not exist" in _expect_error(
        capsys, ["ask", "--checkpoint", str(tmp_path / "nowhere"), "--observation", str(observation), "--question", "q"])
