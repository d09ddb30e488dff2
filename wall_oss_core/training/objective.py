"""The Wall-OSS-0.5 training objective (flow matching supervised in action space).

Convention (as the sampler): t = 0 is noise x0, t = 1 is the clean chunk x1, x_t = t·x1 + (1 − t)·x0, and the
network predicts the velocity v ≈ x1 − x0.  The reference (LeRobot `wall_oss_05` `forward`) takes the loss on the
recovered action x̂ = x_t + (1 − t)·v against x1, squared, multiplied by the dof mask and the per-step mask
(padded steps), and averaged over every element of the (B, H, A) chunk (masked elements count in the mean).
Flow time: t = (1 − u)·s with u ~ Beta(α=1.5, β=1), s = 0.999, optionally warped by the time shift k first:
t ↦ k·t / (1 + (k − 1)·t).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wall_oss_core.model.configuration import WallOssConfig
from wall_oss_core.model.flow_time import shift_times
from wall_oss_core.model.modeling import ModelInputs, WallOssModel


@dataclass(frozen=True)
class FlowTimeSampler:
    """(1 − Beta(alpha, beta)), time-shifted, times `scale`."""

    alpha: float = 1.5
    beta: float = 1.0
    scale: float = 0.999
    time_shift: float = 1.0

    @classmethod
    def for_config(cls, config: WallOssConfig) -> FlowTimeSampler:
        """The checkpoint's noise scheduler: Beta parameters, training time scale and time shift."""
        sampler = config.sampler
        return cls(alpha=sampler.beta_alpha, beta=sampler.beta_beta, scale=sampler.train_time_scale,
                   time_shift=sampler.time_shift)

    def __call__(self, batch: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(self.warp(1.0 - rng.beta(self.alpha, self.beta, size=batch))).float()

    def warp(self, t):
        return shift_times(t, self.time_shift) * self.scale


def noisy_actions(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t·x1 + (1 − t)·x0 with one t per row."""
    t = t[:, None, None]
    return t * actions + (1.0 - t) * noise


def predict_velocity(model: WallOssModel, inputs: ModelInputs, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The network's velocity [B, H, A] (fp32) at x_t, with gradients: the reference's full pass over prompt and
    action tokens (`decode_full`). The sampler's prefix cache writes action keys in place, which autograd refuses."""
    dtype = model.model.embed_tokens.weight.dtype
    layout = model.token_layout(inputs, dtype)
    embeds = model.embed_prompt(inputs)
    prompt = torch.gather(embeds.to(dtype), 1, layout.prompt_index[..., None].expand(-1, -1, embeds.shape[-1]))
    _, action_out = model.decode_full(prompt, model.action_preprocessor.embed(x_t, t, inputs.dof_mask), layout)
    return model.action_preprocessor.readout(action_out)


def action_space_loss(velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, actions: torch.Tensor,
                      loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, x̂): mean over all (B, H, A) of mask·(x_t + (1 − t)·v − x1)²."""
    x_hat = x_t + (1.0 - t)[:, None, None] * velocity
    return ((x_hat - actions.float()).square() * loss_mask.float()).mean(), x_hat


def flow_loss(model: WallOssModel, inputs: ModelInputs, actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
              step_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training loss for normalized chunks `actions` [B, H, A]; `step_mask` [B, H] is 0 on padded steps."""
    x_t = noisy_actions(actions.float(), noise.float(), t.float())
    velocity = predict_velocity(model, inputs, x_t, t.float())
    loss_mask = inputs.dof_mask.float() * step_mask.float()[..., None]
    return action_space_loss(velocity, x_t, t.float(), actions, loss_mask)
