"""Does the policy look? Camera ablation: re-predict each observation with one camera's frame replaced, and
measure how far the chunk moves.

Fine-tuned VLA checkpoints are known to end up ignoring some (or all) of their images; open-loop errors do not
show it. At each evaluated instant the policy predicts once more on the unchanged observation (the *sampling
floor*: a flow policy draws fresh noise per chunk, so two chunks differ even for the same input), then once per
camera and ablation: `noise` (uniform random pixels) and `constant` (mid-grey). A camera whose ablation moves
the chunk no more than the sampling floor is not being used.

The shift of two chunks is the mean absolute difference of their actions over the horizon, per action dimension
averaged: one number per instant, summarized over the instants (mean / median / p95 / max). The ratio of the mean
shift to the mean floor is the headline per camera and ablation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from wall_oss_core.evaluation.statistics import summary_statistics
from wall_oss_core.policy.interface import Chunk, Observation, Policy

ABLATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": lambda image, rng: rng.integers(0, 256, size=image.shape, dtype=np.uint8),
    "constant": lambda image, rng: np.full_like(image, 128),
}


def chunk_shift(a: Chunk, b: Chunk) -> float:
    """Mean absolute action difference of two chunks of the same shape."""
    if a.actions.shape != b.actions.shape:
        raise ValueError(f"chunks of different shapes {a.actions.shape} and {b.actions.shape} cannot be compared")
    return float(np.mean(np.abs(a.actions - b.actions)))


@dataclass
class CameraAblation:
    """Accumulates ablation shifts over the evaluated instants (one `add` per instant)."""

    cameras: list[str]
    seed: int = 0
    floor: list[float] = field(default_factory=list)
    shifts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    failures: int = 0

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)
        self.shifts = {camera: {name: [] for name in ABLATIONS} for camera in self.cameras}

    def add(self, policy: Policy, observation: Observation, baseline: Chunk) -> None:
        """Predict the floor and every ablation for this observation; a failing prediction is counted."""
        try:
            floor = chunk_shift(baseline, policy.predict(observation))
            shifts = {}
            for camera in self.cameras:
                for name, ablate in ABLATIONS.items():
                    images = dict(observation.images)
                    images[camera] = ablate(observation.images[camera], self._rng)
                    shifts[camera, name] = chunk_shift(baseline, policy.predict(replace(observation, images=images)))
        except (ValueError, RuntimeError):  # PolicyError is a RuntimeError
            self.failures += 1
            return
        self.floor.append(floor)
        for (camera, name), value in shifts.items():
            self.shifts[camera][name].append(value)

    def metrics(self) -> dict:
        floor = summary_statistics(self.floor)
        result = {"sampling_floor": floor, "failed_instants": self.failures, "cameras": {}}
        for camera, by_ablation in self.shifts.items():
            result["cameras"][camera] = {}
            for name, values in by_ablation.items():
                summary = summary_statistics(values)
                if values and floor.get("mean", 0.0) > 0:
                    summary["ratio_to_floor"] = summary["mean"] / floor["mean"]
                result["cameras"][camera][name] = summary
        return result
