"""Camera ablation (`wall-oss eval --ablate cameras`): a camera the policy reads moves the chunk when replaced, a
camera it ignores does not, and a flow policy's own sampling noise is measured as the floor."""
import json

import numpy as np
import pytest
from synthetic_bags import write_synthetic_bag

from wall_oss_core.backends.replay import ReplayPolicy, load_recording
from wall_oss_core.evaluation.ablation import CameraAblation, chunk_shift
from wall_oss_core.evaluation.open_loop import EvaluationConfig, evaluate_bag
from wall_oss_core.policy.interface import Chunk
from wall_oss_ros.cli import main as wall_oss

pytestmark = pytest.mark.timeout(180)


class FaceReadingPolicy:
    """The bag's own chunks, offset by the face camera's mean brightness (plus optional sampling noise): a policy
    that looks at exactly one camera."""

    def __init__(self, replay: ReplayPolicy, noise: float = 0.0, seed: int = 0):
        self.replay, self.noise, self.rng = replay, noise, np.random.default_rng(seed)
        self.action_space, self.action_names = replay.action_space, replay.action_names

    def predict(self, observation):
        chunk = self.replay.predict(observation)
        brightness = float(observation.images["face_view"].mean()) / 255.0
        actions = chunk.actions + 0.1 * brightness + self.noise * self.rng.standard_normal(chunk.actions.shape)
        return Chunk(actions=actions, dt=chunk.dt, action_space=chunk.action_space, action_names=chunk.action_names,
                     stamp=chunk.stamp, instruction=chunk.instruction, first_action_offset=chunk.first_action_offset)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return write_synthetic_bag(tmp_path_factory.mktemp("ablation") / "bag", action_space="joint_position")


def _ablation(bag, policy, tmp_path=None):
    config = EvaluationConfig(progress=False, ablate_cameras=True, max_instants=6)
    metrics = evaluate_bag(bag.path, policy, tmp_path, config=config).metrics
    assert metrics["camera_ablation"]["sampling_floor"]["count"] == metrics["coverage"]["evaluated"] > 0
    return metrics["camera_ablation"]


def test_a_camera_the_policy_reads_moves_the_chunk_an_ignored_one_does_not(bag):
    ablation = _ablation(bag, FaceReadingPolicy(ReplayPolicy(load_recording(bag.path), alignment="absolute")))
    assert ablation["sampling_floor"]["max"] == 0.0
    face = ablation["cameras"]["face_view"]
    # a constant grey frame changes the brightness term by 0.1·|mean − 128|/255 on every action
    assert face["constant"]["mean"] > 1e-3 and face["noise"]["mean"] > 1e-3
    for camera in ("left_wrist_view", "right_wrist_view"):
        for name in ("noise", "constant"):
            assert ablation["cameras"][camera][name]["max"] == 0.0


def test_the_shift_is_compared_with_the_sampling_floor(bag):
    policy = FaceReadingPolicy(ReplayPolicy(load_recording(bag.path), alignment="absolute"), noise=1e-3)
    ablation = _ablation(bag, policy)
    floor = ablation["sampling_floor"]["mean"]
    # two draws of N(0, σ²) differ by |N(0, 2σ²)|: mean 2σ/√π
    assert floor == pytest.approx(2e-3 / np.sqrt(np.pi), rel=0.1)
    assert ablation["cameras"]["left_wrist_view"]["noise"]["ratio_to_floor"] == pytest.approx(1.0, rel=0.15)
    assert ablation["cameras"]["face_view"]["constant"]["ratio_to_floor"] > 3.0


def test_chunk_shift_refuses_chunks_of_different_shapes():
    a = Chunk(actions=np.zeros((4, 2)), dt=0.1, action_space="joint_position", action_names=["a", "b"], stamp=0.0)
    b = Chunk(actions=np.ones((3, 2)), dt=0.1, action_space="joint_position", action_names=["a", "b"], stamp=0.0)
    assert chunk_shift(a, a) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        chunk_shift(a, b)
    ablation = CameraAblation(["face_view"])

    class Failing:
        def predict(self, observation):
            raise ValueError("no chunk")

    ablation.add(Failing(), None, a)
    assert ablation.metrics()["failed_instants"] == 1 and ablation.metrics()["sampling_floor"]["count"] == 0


def test_cli_reports_the_ablation_in_json_and_html(bag, tmp_path, capsys):
    out = tmp_path / "out"
    assert wall_oss(["eval", "--bag", str(bag.path), "--replay", str(bag.path), "--out", str(out),
                     "--max-instants", "3", "--ablate", "cameras", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[:printed.rindex("}") + 1])
    # the replay backend ignores its images: every ablation moves nothing
    assert summary["camera_ablation_ratio_to_floor"]["face_view"] == {"noise": 0.0, "constant": 0.0}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["camera_ablation"]["cameras"]) == {"face_view", "left_wrist_view", "right_wrist_view"}
    page = (out / "report.html").read_text()
    assert "Camera ablation" in page and "left_wrist_view" in page
