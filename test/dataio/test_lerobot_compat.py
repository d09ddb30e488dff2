"""An export loaded, batched, extended and reloaded by the real LeRobot 0.4.4 dataset classes.

LeRobot runs in its own environment, `.venv-lerobot` beside `.venv`, built once by `scripts/lerobot_env.sh`
(a stamp makes later runs a no-op). From scratch it takes about 1 min of CPU, 1.5–6 min of wall time on
this shared 2-core machine depending on load (mostly installing torch); the test itself then takes about 15 s.
Its smallest working set, with the reasons, is in that script: torch 2.13 CPU, lerobot 0.4.4 and
torchvision 0.25 installed with --no-deps, and LeRobot's pins of datasets, huggingface-hub, av, packaging
plus accelerate and pillow; no torchcodec (LeRobot decodes through pyav). The LeRobot side is
`lerobot_roundtrip.py`, run as a subprocess with the dataset path; it prints what LeRobot saw as JSON.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from synthetic_bags import INSTRUCTION, frame_pixels, write_synthetic_bag

from wall_oss_core.data.lerobot_export import ExportConfig, export_dataset

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
NEW_FRAMES = 5


@pytest.fixture(scope="module")
def lerobot_python():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "lerobot_env.sh")], capture_output=True, text=True,
                          timeout=800)
    assert done.returncode == 0, f"building .venv-lerobot failed:\n{done.stderr[-4000:]}"
    return os.environ.get("WALL_OSS_LEROBOT_VENV", str(ROOT / ".venv-lerobot")) + "/bin/python"


def run_lerobot(python: str, dataset: Path, tmp_path: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), SVT_LOG="1")
    done = subprocess.run([python, "-W", "ignore", str(Path(__file__).with_name("lerobot_roundtrip.py")),
                           str(dataset), str(NEW_FRAMES)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_lerobot_loads_appends_and_reloads_an_export(lerobot_python, tmp_path):
    bags = [write_synthetic_bag(tmp_path / f"bag{i}", duration=1.5 + 0.5 * i, image_size=(64, 48)) for i in range(2)]
    dataset = tmp_path / "dataset"
    info = export_dataset([b.path for b in bags], dataset, config=ExportConfig(state_space="joint_position"),
                          progress=False)
    data = pq.read_table(dataset / "data" / "chunk-000" / "file-000.parquet").to_pandas()
    seen = run_lerobot(lerobot_python, dataset, tmp_path)

    loaded, reloaded = seen["loaded"], seen["reloaded"]
    assert (loaded["num_frames"], loaded["num_episodes"], loaded["fps"]) == (info["total_frames"], 2, 10)
    assert loaded["tasks"] == [INSTRUCTION]
    width = len(bags[0].robot.command_joints)
    cameras = [f"observation.images.{c.name}" for c in bags[0].robot.cameras]
    assert seen["batch"]["observation.state"] == [4, width]
    assert all(seen["batch"][key] == [4, 3, 48, 64] for key in cameras)
    for episode in loaded["episodes"]:
        for frame in episode["frames"]:
            # LeRobot's rows are the exported rows, and its decoded video frame is the bag frame at that time
            np.testing.assert_allclose(frame["state"], data["observation.state"].iloc[frame["index"]], atol=1e-7)
            assert frame["timestamp"] == pytest.approx(frame["frame_index"] / 10, abs=1e-6)
            expected = frame_pixels(frame["frame_index"], 64, 48).mean() / 255
            for key in cameras:
                assert frame["images"][key]["shape"] == [3, 48, 64]
                assert frame["images"][key]["mean"] == pytest.approx(expected, abs=0.02)

    # after LeRobot appended an episode, the dataset reloads with the old episodes unchanged and the new one
    assert reloaded["num_episodes"] == 3 and reloaded["num_frames"] == info["total_frames"] + NEW_FRAMES
    assert reloaded["episodes"][:2] == loaded["episodes"]
    assert reloaded["tasks"] == [INSTRUCTION, "appended by lerobot"]
    new = reloaded["episodes"][2]
    assert (new["from"], new["to"]) == (info["total_frames"], info["total_frames"] + NEW_FRAMES)
    first, last = new["frames"]
    assert (first["frame_index"], last["frame_index"], last["episode_index"]) == (0, NEW_FRAMES - 1, 2)
    assert last["state"] == [NEW_FRAMES - 1.0] * width and last["timestamp"] == pytest.approx(0.4)
    assert all(abs(last["images"][key]["mean"] - 200 / 255) < 0.02 for key in cameras)


