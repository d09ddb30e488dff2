"""Reading checkpoint files: the safetensors file(s) of a directory, their keys and shapes, stored statistics.

Header-only where possible (shapes come from file headers, no tensor is read). Used by configuration (expert widths
of `wall_x` checkpoints) and loading; imports neither.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

NORMALIZER_KEY = re.compile(r"(^|\.)normalizer_[A-Za-z0-9_]+\.(min|delta|mean|std|q01|q99)\.")


class CheckpointError(RuntimeError):
    """A checkpoint that does not match the model its config describes."""


def safetensors_files(checkpoint_dir: str | Path) -> list[Path]:
    directory = Path(checkpoint_dir)
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CheckpointError(f"{directory}: shard file(s) listed in the index are missing: {missing}")
        return [directory / s for s in shards]
    raise CheckpointError(f"{directory}: no model.safetensors (or model.safetensors.index.json)")


def stored_tensor_index(checkpoint_dir: str | Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Every stored key with its file and shape, from the file headers only."""
    index = {}
    for path in safetensors_files(checkpoint_dir):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                index[key] = (path, tuple(f.get_slice(key).get_shape()))
    return index


def read_tensor_shapes(checkpoint_dir: str | Path) -> dict[str, tuple[int, ...]]:
    return {key: shape for key, (_, shape) in stored_tensor_index(checkpoint_dir).items()}


def read_safetensors_extras(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """Non-weight tensors stored next to the weights (author normalizers), keyed as stored."""
    extras = {}
    for path in safetensors_files(checkpoint_dir):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                if NORMALIZER_KEY.search(key):
                    extras[key] = f.get_tensor(key)
    return extras
