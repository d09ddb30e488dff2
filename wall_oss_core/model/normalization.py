"""State/action normalization statistics of a checkpoint and the transforms that use them.

Sources, in order of preference:
1. LeRobot processor pipelines: `policy_preprocessor*.json` (+ its `normalizer_processor` state
   file) for the state, `policy_postprocessor*.json` (`unnormalizer_processor`) for the action.
2. Author 0.5 layout: `*.normalizer_propri.{min,delta}.<robot>` and
   `*.normalizer_action.{min,delta}.<robot>` tensors inside `model.safetensors`
   (min = q01, delta = q99 - q01).
The formulas follow LeRobot's normalizer (eps replaces a zero range; MEAN_STD adds eps to std).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

IDENTITY = "IDENTITY"
MEAN_STD = "MEAN_STD"
MIN_MAX = "MIN_MAX"
QUANTILES = "QUANTILES"
QUANTILE10 = "QUANTILE10"

# Range modes map [low, high] to [-1, 1]; the stat names that hold low and high.
_RANGE_STATS = {MIN_MAX: ("min", "max"), QUANTILES: ("q01", "q99"), QUANTILE10: ("q10", "q90")}

STATE_KEY = "observation.state"
ACTION_KEY = "action"
DEFAULT_EPS = 1e-8

_AUTHOR_KEY = re.compile(r"(?:^|\.)normalizer_(?P<feature>action|propri)\.(?P<stat>min|delta)\.(?P<robot>.+)$")


class NormalizationError(ValueError):
    """A checkpoint's normalization statistics are missing, inconsistent or unusable."""


@dataclass(frozen=True)
class FeatureNormalizer:
    """Normalizes one feature (state or action) and maps model output back.

    Range modes keep `offset` = low and `scale` = high - low; MEAN_STD keeps mean and std.
    """

    mode: str
    offset: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    eps: float = DEFAULT_EPS

    def __post_init__(self) -> None:
        if self.mode == IDENTITY:
            return
        if self.mode not in (MEAN_STD, *_RANGE_STATS):
            raise NormalizationError(f"unsupported normalization mode {self.mode!r}")
        if self.offset is None or self.scale is None or self.offset.shape != self.scale.shape or self.offset.ndim != 1:
            raise NormalizationError(f"{self.mode} needs two statistics vectors of the same length")
        if not (torch.isfinite(self.offset).all() and torch.isfinite(self.scale).all()):
            raise NormalizationError("normalization statistics contain NaN or infinite values")

    @property
    def dim(self) -> int | None:
        return None if self.offset is None else int(self.offset.shape[0])

    def _range_denominator(self) -> torch.Tensor:
        return torch.where(self.scale == 0, torch.full_like(self.scale, self.eps), self.scale)

    def _check(self, values: torch.Tensor) -> torch.Tensor:
        values = torch.as_tensor(values, dtype=torch.float32)
        if self.dim is not None and values.shape[-1] != self.dim:
            raise NormalizationError(f"expected last dimension {self.dim}, got shape {tuple(values.shape)}")
        return values

    def normalize(self, values) -> torch.Tensor:
        values = self._check(values)
        if self.mode == IDENTITY:
            return values.clone()
        if self.mode == MEAN_STD:
            return (values - self.offset) / (self.scale + self.eps)
        return 2.0 * (values - self.offset) / self._range_denominator() - 1.0

    def unnormalize(self, values) -> torch.Tensor:
        values = self._check(values)
        if self.mode == IDENTITY:
            return values.clone()
        if self.mode == MEAN_STD:
            return values * self.scale + self.offset
        return (values + 1.0) * self._range_denominator() / 2.0 + self.offset

    @classmethod
    def from_stats(cls, mode: str, stats: dict[str, torch.Tensor], eps: float = DEFAULT_EPS) -> FeatureNormalizer:
        """Build from LeRobot-style stats (`mean`/`std`, `min`/`max`, `q01`/`q99`, `q10`/`q90`)."""
        mode = mode.upper()
        if mode == IDENTITY:
            return cls(IDENTITY)
        names = ("mean", "std") if mode == MEAN_STD else _RANGE_STATS.get(mode)
        if names is None:
            raise NormalizationError(f"unsupported normalization mode {mode!r}")
        missing = [name for name in names if name not in stats]
        if missing:
            raise NormalizationError(f"{mode} normalization needs stats {list(names)}, missing {missing}")
        first, second = (stats[name].to(torch.float32).reshape(-1) for name in names)
        if mode == MEAN_STD:
            return cls(MEAN_STD, offset=first, scale=second, eps=eps)
        return cls(mode, offset=first, scale=second - first, eps=eps)


@dataclass(frozen=True)
class CheckpointNormalization:
    """State normalizer (applied before the model) and action normalizer (inverted after)."""

    state: FeatureNormalizer
    action: FeatureNormalizer
    source: str  # where the statistics came from, for logs and errors


def _read_stats_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise NormalizationError(f"normalization state file {path} is missing")
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def _pipeline_normalizer(
    checkpoint_dir: Path, pattern: str, registry_name: str, feature_key: str
) -> FeatureNormalizer | None:
    """The normalizer for `feature_key` from the first LeRobot pipeline matching `pattern`."""
    for config_path in sorted(checkpoint_dir.glob(pattern)):
        try:
            pipeline = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise NormalizationError(f"{config_path} is not valid JSON: {error}") from error
        for step in pipeline.get("steps", []):
            if step.get("registry_name") != registry_name:
                continue
            config = step.get("config", {})
            feature = config.get("features", {}).get(feature_key)
            if feature is None:
                continue
            mode = config.get("norm_map", {}).get(feature.get("type"), IDENTITY)
            if mode == IDENTITY:
                return FeatureNormalizer(IDENTITY)
            state_file = step.get("state_file")
            if not state_file:
                raise NormalizationError(f"{config_path}: step {registry_name} has no state_file")
            stats = _read_stats_file(checkpoint_dir / state_file)
            prefix = feature_key + "."
            feature_stats = {key[len(prefix):]: value for key, value in stats.items() if key.startswith(prefix)}
            try:
                return FeatureNormalizer.from_stats(mode, feature_stats, eps=float(config.get("eps", DEFAULT_EPS)))
            except NormalizationError as error:
                raise NormalizationError(f"{checkpoint_dir / state_file} ({feature_key}): {error}") from error
    return None


def _author_normalization(checkpoint_dir: Path, robot: str | None) -> CheckpointNormalization | None:
    weights = checkpoint_dir / "model.safetensors"
    if not weights.is_file():
        return None
    found: dict[str, dict[tuple[str, str], str]] = {}
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            match = _AUTHOR_KEY.search(key)
            if match:
                found.setdefault(match["robot"], {})[(match["feature"], match["stat"])] = key
        if not found:
            return None
        if robot is None:
            if len(found) > 1:
                raise NormalizationError(
                    f"{weights} holds statistics for several robots {sorted(found)}; choose one"
                )
            robot = next(iter(found))
        if robot not in found:
            raise NormalizationError(f"{weights} has no statistics for robot {robot!r}; available: {sorted(found)}")
        keys = found[robot]
        normalizers = {}
        for feature in ("propri", "action"):
            needed = [(feature, "min"), (feature, "delta")]
            if any(item not in keys for item in needed):
                raise NormalizationError(f"{weights}: robot {robot!r} lacks normalizer_{feature}.min/delta")
            low, span = (handle.get_tensor(keys[item]).to(torch.float32).reshape(-1) for item in needed)
            normalizers[feature] = FeatureNormalizer(QUANTILES, offset=low, scale=span)
    return CheckpointNormalization(
        state=normalizers["propri"], action=normalizers["action"], source=f"{weights} (robot {robot})"
    )


def load_normalization(
    checkpoint_dir: str | Path, robot: str | None = None, allow_identity: bool = False
) -> CheckpointNormalization:
    """Find the checkpoint's statistics (LeRobot pipelines first, then author tensors).

    Without any statistics this is an error unless `allow_identity`, which passes values through.
    """
    directory = Path(checkpoint_dir)
    state = _pipeline_normalizer(directory, "policy_preprocessor*.json", "normalizer_processor", STATE_KEY)
    action = _pipeline_normalizer(directory, "policy_postprocessor*.json", "unnormalizer_processor", ACTION_KEY)
    if action is None:
        action = _pipeline_normalizer(directory, "policy_preprocessor*.json", "normalizer_processor", ACTION_KEY)
    if state is not None and action is not None:
        return CheckpointNormalization(state=state, action=action, source=f"{directory} (LeRobot pipelines)")
    if state is not None or action is not None:
        which = "action" if action is None else "state"
        raise NormalizationError(f"{directory}: LeRobot pipeline files give no {which} normalization")
    author = _author_normalization(directory, robot)
    if author is not None:
        return author
    if allow_identity:
        return CheckpointNormalization(
            state=FeatureNormalizer(IDENTITY), action=FeatureNormalizer(IDENTITY), source="identity (no statistics)"
        )
    raise NormalizationError(
        f"{directory} has no normalization statistics (no policy_preprocessor*/policy_postprocessor* "
        "files and no normalizer tensors in model.safetensors)"
    )


def state_to_bins(normalized_state: np.ndarray, bin_count: int = 512) -> np.ndarray:
    """0.5 state text: normalized values in [-1, 1] to integers 0..bin_count-1 (left-closed bins)."""
    edges = np.linspace(-1.0, 1.0, bin_count + 1)[:-1]
    values = np.asarray(normalized_state, dtype=np.float64)
    return (np.digitize(values, bins=edges) - 1).clip(0, bin_count - 1)


def bins_to_text(bins: np.ndarray) -> str:
    return " ".join(str(int(value)) for value in np.asarray(bins).reshape(-1))
