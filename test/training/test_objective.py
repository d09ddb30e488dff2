"""The training objective against the reference formula on the golden tiny Wall-OSS-0.5 checkpoint.

Derivation.  The golden case records, for the sampler started at noise x0 = `initial_noise`, every Euler state
x_t[i] at time times[i], the reference network's velocity v[i] there and the reference's x̂[i] = x_t[i] + (1 − t)·v[i].
The reference training forward (LeRobot `wall_oss_05`) builds x_t = t·x1 + (1 − t)·x0 from the clean chunk x1,
runs the same network on it and takes mean((x̂ − x1)² · dof_mask · step_mask) over all B·H·A elements.  Choosing
x1 = (x_t[i] − (1 − t)·x0) / t with t = times[i] makes the training input equal the recorded x_t[i], so the network
must return the recorded v[i], x̂ must equal the recorded x̂[i], and the loss must equal the formula evaluated on
the recorded x̂[i] and x1 — everything in fp32, to 1e-5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wall_oss_core.model.loading import load_model
from wall_oss_core.model.modeling import ModelInputs
from wall_oss_core.training.objective import FlowTimeSampler, flow_loss, noisy_actions, predict_velocity

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "wall_oss_05"
TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    model, _ = load_model(GOLDEN / "checkpoint")
    return model, load_file(GOLDEN / "b1.safetensors")


def _inputs(case) -> ModelInputs:
    return ModelInputs(input_ids=case["input_ids"], attention_mask=case["attention_mask"],
                       position_ids=case["position_ids"], dof_mask=case["dof_mask"].float(),
                       pixel_values=case["pixel_values"], image_grid_thw=case["image_grid_thw"])


@pytest.mark.parametrize("step", [3, 7])
def test_loss_equals_reference_formula_on_golden_stages(golden, step):
    model, case = golden
    x0 = case["initial_noise"]
    t = case["times"][step].reshape(1)
    x1 = (case["x_t_all_steps"][step] - (1 - t) * x0) / t
    step_mask = torch.ones(1, 32)
    step_mask[:, 27:] = 0  # the last 5 steps are padding
    assert (noisy_actions(x1, x0, t) - case["x_t_all_steps"][step]).abs().max() <= TOL

    model.train()
    loss, x_hat = flow_loss(model, _inputs(case), x1, x0, t, step_mask)
    assert (x_hat - case["x_hat_all_steps"][step]).abs().max() <= TOL
    velocity = predict_velocity(model, _inputs(case), case["x_t_all_steps"][step], t)
    assert (velocity - case["velocities_all_steps"][step]).abs().max() <= TOL

    mask = case["dof_mask"].float() * step_mask[..., None]
    reference = ((case["x_hat_all_steps"][step] - x1).square() * mask).sum() / x1.numel()
    assert abs(loss.item() - reference.item()) <= TOL * max(1.0, reference.item())
    # padded steps do not contribute: moving their targets leaves the loss unchanged
    moved = x1.clone()
    moved[:, 27:] += 5.0
    loss_moved, _ = flow_loss(model, _inputs(case), moved, x0, t, step_mask)
    x_t_moved = noisy_actions(moved, x0, t)
    assert (x_t_moved[:, :27] - case["x_t_all_steps"][step][:, :27]).abs().max() <= TOL
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.action_preprocessor.w1.weight.grad.abs().sum() > 0
    assert model.visual.patch_embed.proj.weight.grad.abs().sum() > 0  # the vision tower is trained too
    model.zero_grad(set_to_none=True)
    assert abs(loss_moved.item() - loss.item()) <= TOL  # action tokens are causal: earlier steps never see them


def test_flow_time_distribution_and_time_shift():
    rng = np.random.default_rng(0)
    t = FlowTimeSampler()(200_000, rng)
    assert t.dtype == torch.float32 and float(t.min()) >= 0 and float(t.max()) <= 0.999
    # 1 − Beta(1.5, 1): mean 1 − 1.5/2.5 = 0.4, P(1 − u <= x) = 1 − (1 − x)^1.5
    assert abs(t.mean().item() - 0.4 * 0.999) < 3e-3
    assert abs((t <= 0.5 * 0.999).float().mean().item() - (1 - 0.5**1.5)) < 3e-3
    shifted = FlowTimeSampler(time_shift=3.0)
    raw = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(shifted.warp(raw), 3 * raw / (1 + 2 * raw) * 0.999)
    # the same seed gives the same times (the trainer's resume relies on it)
    assert torch.equal(FlowTimeSampler()(8, np.random.default_rng(5)), FlowTimeSampler()(8, np.random.default_rng(5)))
