"""Flow-matching times of both Wall-OSS generations (t = 0 noise, t = 1 data).

Inference: Euler times t_i = i / N, warped by the time shift k (t -> k t / (1 + (k - 1) t), the
LeRobot `wall_oss_05` `noise_scheduler.time_shift`; k > 1 spends more steps near the data end), then
multiplied by the inference scale s (0.999 for 0.5, 1 for flow).  Training: t = 1 - Beta(alpha, beta),
warped by the same k, times s.  k = 1 leaves the times untouched (bit for bit).
"""
from __future__ import annotations

import torch

from .configuration import SamplerConfig


def shift_times(t: torch.Tensor, time_shift: float) -> torch.Tensor:
    """k t / (1 + (k - 1) t); the identity (same tensor) for k = 1."""
    if time_shift == 1.0:
        return t
    return time_shift * t / (1 + (time_shift - 1) * t)


def inference_times(sampler: SamplerConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """The N + 1 Euler times [N + 1] (fp32) the sampler integrates over."""
    times = torch.linspace(0.0, 1.0, sampler.num_steps + 1, device=device, dtype=torch.float32)
    return shift_times(times, sampler.time_shift) * sampler.time_scale
