"""Load a Wall-OSS checkpoint directory into `WallOssModel`, strictly.

The model is built on the meta device (no memory), every stored tensor is read once from the
memory-mapped safetensors file(s), converted to the requested dtype on the requested device, and
assigned to its parameter; so a 4B model never exists twice.  Before any tensor is read, the stored
keys and shapes are compared with the model's: any missing, unexpected or misshaped tensor raises one
`CheckpointError` that lists all of them.

Name mapping from stored keys to module keys (documented so manifests can be compared):
* a leading wrapper prefix is removed: `policy.model.`, `policy.`, or `model.` when the checkpoint is a
  LeRobot `wall_x` policy (whose `model.model.layers...` / `model.visual...` wrap the author layout);
* a vision MLP stored fused (`visual.blocks.N.mlp.gate_up_proj.*`, as transformers <= 5.5 saved it) is
  split into the `gate_proj` / `up_proj` halves that transformers' vision tower uses now;
* `lm_head.weight` is tied to `model.embed_tokens.weight` and not needed for actions: it is accepted and
  skipped, or used as the embedding when the file kept only that alias of the tied pair (the flow
  checkpoints do, with safetensors metadata `{"model.embed_tokens.weight": "lm_head.weight"}`);
* author normalizers `*.normalizer_{action,propri}.{min,delta}.<robot>` are statistics, not weights:
  they are skipped here and returned by `read_safetensors_extras`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open

from .checkpoint_files import NORMALIZER_KEY, CheckpointError, stored_tensor_index
from .configuration import WallOssConfig
from .modeling import WallOssModel

TIED_HEAD, TIED_EMBEDDING = "lm_head.weight", "model.embed_tokens.weight"
WRAPPER_PREFIXES = ("", "model.", "policy.", "policy.model.")
ANCHOR_KEY = "action_preprocessor.w1.weight"
FUSED_VISION_MLP = re.compile(r"^(visual\.blocks\.\d+\.mlp\.)gate_up_proj\.(weight|bias)$")


# ==================================================================== name mapping

def detect_wrapper_prefix(stored_keys) -> str:
    keys = set(stored_keys)
    for prefix in WRAPPER_PREFIXES:
        if prefix + ANCHOR_KEY in keys:
            return prefix
    raise CheckpointError(f"no '{ANCHOR_KEY}' under any of the prefixes {list(WRAPPER_PREFIXES)}: this is not a "
                          "Wall-OSS checkpoint")


def map_stored_keys(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, slice | None, tuple[int, ...]]]:
    """Module key -> (stored key, row slice of the stored tensor or None, module shape)."""
    prefix = detect_wrapper_prefix(shapes)
    mapped = {}
    for stored, shape in shapes.items():
        if not stored.startswith(prefix) or NORMALIZER_KEY.search(stored):
            continue
        key = stored[len(prefix):]
        if key == TIED_HEAD:
            if prefix + TIED_EMBEDDING not in shapes:
                mapped[TIED_EMBEDDING] = (stored, None, tuple(shape))
            continue
        fused = FUSED_VISION_MLP.match(key)
        if fused:
            half = shape[0] // 2
            rest = tuple(shape[1:])
            mapped[f"{fused[1]}gate_proj.{fused[2]}"] = (stored, slice(0, half), (half, *rest))
            mapped[f"{fused[1]}up_proj.{fused[2]}"] = (stored, slice(half, 2 * half), (half, *rest))
        else:
            mapped[key] = (stored, None, tuple(shape))
    stray = sorted(k for k in shapes if not k.startswith(prefix))
    for key in stray:
        mapped[key] = (key, None, tuple(shapes[key]))  # reported as unexpected by the strict check
    return mapped


# ==================================================================== building and checking

def build_model_on_meta(config: WallOssConfig) -> WallOssModel:
    """The full module tree with no storage behind it (shapes only)."""
    with torch.device("meta"):
        return WallOssModel(config)


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_against_model(mapped: dict[str, tuple[str, slice | None, tuple[int, ...]]],
                        expected: dict[str, tuple[int, ...]], where: str) -> None:
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    misshaped = sorted(f"{k}: stored {list(mapped[k][2])}, model {list(expected[k])}"
                       for k in set(expected) & set(mapped) if mapped[k][2] != expected[k])
    if missing or unexpected or misshaped:
        lines = [f"{where} does not match the model described by its config.json:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
            if items:
                lines.append(f"  {len(items)} {title}:")
                lines.extend(f"    {item}" for item in items)
        raise CheckpointError("\n".join(lines))


def _materialize_vision_rotary(model: WallOssModel, device: torch.device) -> None:
    """The vision tower's rotary table is a non-persistent buffer: rebuild it on the real device."""
    rotary = model.visual.rotary_pos_emb
    with torch.device(device):
        model.visual.rotary_pos_emb = type(rotary)(rotary.config)


def load_model(checkpoint_dir: str | Path, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> tuple[WallOssModel, WallOssConfig]:
    """Model in eval mode with the checkpoint's weights, in `dtype` on `device`, plus its config."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    device = torch.device(device)
    config = WallOssConfig.from_checkpoint_dir(checkpoint_dir)
    model = build_model_on_meta(config)
    index = stored_tensor_index(checkpoint_dir)
    mapped = map_stored_keys({key: shape for key, (_, shape) in index.items()})
    check_against_model(mapped, expected_shapes(model), f"checkpoint {checkpoint_dir}")

    by_file: dict[Path, list[tuple[str, str, slice | None]]] = {}
    for module_key, (stored, rows, _) in mapped.items():
        by_file.setdefault(index[stored][0], []).append((module_key, stored, rows))
    state = {}
    for path, entries in by_file.items():
        with safe_open(str(path), "pt", device="cpu") as f:
            for module_key, stored, rows in entries:
                tensor = f.get_slice(stored)[rows] if rows is not None else f.get_tensor(stored)
                state[module_key] = tensor.to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    _materialize_vision_rotary(model, device)
    return model.eval(), config
