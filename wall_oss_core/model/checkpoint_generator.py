"""Writes complete, untrained Wall-OSS checkpoint directories (no hub, deterministic from a seed).

The directory has the same layout as a real checkpoint of the chosen generation: `config.json`,
`model.safetensors` (author key names: 0.5 with fused expert qkv / gate_up and a split vision MLP,
flow with separate q/k/v and a tied `lm_head`), tokenizer files built here with the `tokenizers`
library, `preprocessor_config.json`, and LeRobot normalizer pipelines (q01/q99 for 0.5,
mean/std for flow). The weights are random: the actions are meaningless, but every code path
(loading, preprocessing, sampling, unnormalization, the ROS graph) runs exactly as with a real one.

Robot schema: the Wall-OSS standard end-effector layout for a bimanual arm pair
(per arm xyz 3 + 6D rotation 6 + gripper 1, left then right; 0.5 adds 6 unused dims -> 26),
cameras `face_view`, `left_wrist_view`, `right_wrist_view`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .configuration import ActionHeadConfig, ExpertConfig, SamplerConfig, TextDecoderConfig, TokenIds, WallOssConfig
from .normalization import ACTION_KEY, MEAN_STD, QUANTILES, STATE_KEY
from .processing import (
    ACTION_TOKEN,
    CAMERA_LABELS,
    GENERATION_05,
    GENERATION_FLOW,
    GENERATIONS,
    PROPRIO_TOKEN,
    build_prompt,
)

CAMERAS = ("face_view", "left_wrist_view", "right_wrist_view")
CAMERA_SHAPE = (3, 480, 640)
CHUNK_SIZE = 32
ROBOT_NAME = "wall_oss_demo"

# Qwen2 special tokens, in the order (and so with the relative ids) of the real vocabulary.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# Qwen2's pre-tokenizer split pattern (as stored in its tokenizer.json).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Instructions the tokenizer is trained on, so typical tasks tokenize into few tokens.
_TRAINING_INSTRUCTIONS = (
    "pick up the red cube and place it in the bowl",
    "stack the green block on the blue block",
    "open the drawer and put the cup inside",
    "fold the towel",
    "hand the bottle to the left arm",
    "push the box to the right",
)

# Absolute end-effector position range [m] per arm (x forward, y left, z up) for the state stats.
_STATE_POSITION_RANGE = {"left": ((0.05, -0.25, 0.02), (0.80, 0.65, 0.75)),
                         "right": ((0.05, -0.65, 0.02), (0.80, 0.25, 0.75))}
_GRIPPER_RANGE = (0.0, 0.04)  # finger opening [m]
_RELATIVE_POSITION_RANGE = 0.02  # ± m per action step
_RELATIVE_ROTATION_RANGE = 0.02  # ± around the identity's 6D entries


@dataclass(frozen=True)
class ModelSize:
    """Architecture numbers for one generated size."""

    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    mrope_section: tuple[int, int, int]
    action_expert_width: int  # 0.5 action expert width (flow: always the full hidden size)
    action_expert_intermediate: int
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    vision_heads: int
    vision_full_attention_blocks: tuple[int, ...]
    tokenizer_vocab: int  # byte-level BPE size before special tokens


SIZES = {
    # Golden-sized: loads and samples a chunk in well under a second on one CPU core.
    "tiny": ModelSize(64, 128, 2, 4, 2, (2, 3, 3), 32, 64, 32, 64, 2, 2, (1,), 400),
    # Demo default: a few hundred ms per chunk on a laptop CPU with three cameras.
    "small": ModelSize(256, 512, 4, 8, 4, (4, 6, 6), 128, 256, 64, 128, 4, 2, (3,), 600),
}


def state_names(generation: str) -> list[str]:
    return _schema_names(generation, relative=False)


def action_names(generation: str) -> list[str]:
    return _schema_names(generation, relative=True)


def _schema_names(generation: str, relative: bool) -> list[str]:
    from wall_oss_core.policy.action_space import wall_oss_names

    names = wall_oss_names(relative)
    return names if generation == GENERATION_05 else names[:20]


def _arm_bounds(relative: bool) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the 20 arm dims of the Wall-OSS layout, used as q01/q99."""
    low, high = [], []
    identity_6d = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    for arm in ("left", "right"):
        if relative:
            low += [-_RELATIVE_POSITION_RANGE] * 3
            high += [_RELATIVE_POSITION_RANGE] * 3
            low += list(identity_6d - _RELATIVE_ROTATION_RANGE)
            high += list(identity_6d + _RELATIVE_ROTATION_RANGE)
        else:
            position_low, position_high = _STATE_POSITION_RANGE[arm]
            low += list(position_low) + [-1.0] * 6
            high += list(position_high) + [1.0] * 6
        low.append(_GRIPPER_RANGE[0])
        high.append(_GRIPPER_RANGE[1])
    return np.array(low, dtype=np.float32), np.array(high, dtype=np.float32)


def feature_stats(generation: str, relative: bool) -> dict[str, torch.Tensor]:
    """Statistics for the state (relative=False) or action: q01/q99 (0.5) or mean/std (flow)."""
    low, high = _arm_bounds(relative)
    if generation == GENERATION_05:
        low = np.concatenate([low, np.zeros(6, dtype=np.float32)])  # unused tail: constant 0
        high = np.concatenate([high, np.zeros(6, dtype=np.float32)])
        return {"q01": torch.from_numpy(low), "q99": torch.from_numpy(high)}
    return {"mean": torch.from_numpy((low + high) / 2), "std": torch.from_numpy((high - low) / 4)}


def _tokenizer_corpus() -> list[str]:
    corpus = [build_prompt(CAMERAS, task, " ".join(str(v) for v in range(0, 512, 7)), 0)
              for task in _TRAINING_INSTRUCTIONS]
    corpus += list(CAMERA_LABELS.values()) + ["You are a helpful assistant."]
    # The special tokens are added afterwards; keep their text out of the merges.
    for token in (*QWEN_SPECIAL_TOKENS, PROPRIO_TOKEN, ACTION_TOKEN):
        corpus = [text.replace(token, " ") for text in corpus]
    return corpus


def write_tokenizer(out_dir: Path, vocab_size: int, generation: str) -> None:
    """Byte-level BPE with Qwen2's pre-tokenizer; the flow layout stores `<|propri|>`/`<|action|>`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS])
    if generation == GENERATION_FLOW:
        tokenizer.add_tokens([AddedToken(token, special=False, normalized=True) for token in (PROPRIO_TOKEN, ACTION_TOKEN)])
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer.model.save(str(out_dir))  # vocab.json + merges.txt, as real checkpoints ship them
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 32768,
        "split_special_tokens": False,
    }, indent=2))


def write_preprocessor_config(out_dir: Path) -> None:
    (out_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "rescale_factor": 1 / 255, "resample": 3,
        "min_pixels": 3136, "max_pixels": 12845056,
        "size": {"shortest_edge": 3136, "longest_edge": 12845056},
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    }, indent=2))


def _token_ids(out_dir: Path, generation: str) -> tuple[TokenIds, int]:
    """Token ids of the written tokenizer and the embedding rows the model needs (multiple of 8)."""
    tokenizer = json.loads((out_dir / "tokenizer.json").read_text())
    ids = {token["content"]: int(token["id"]) for token in tokenizer["added_tokens"]}
    last = max(ids.values())
    if generation == GENERATION_05:  # appended at load time, as for the real 0.5 tokenizer
        ids[PROPRIO_TOKEN], ids[ACTION_TOKEN] = last + 1, last + 2
        last += 2
    rows = (last + 1 + 7) // 8 * 8
    token_ids = TokenIds(
        action=ids[ACTION_TOKEN], propri=ids[PROPRIO_TOKEN], image_pad=ids["<|image_pad|>"],
        video_pad=ids["<|video_pad|>"], vision_start=ids["<|vision_start|>"],
        vision_end=ids["<|vision_end|>"], pad=ids["<|endoftext|>"],
    )
    return token_ids, rows


def _vision_config(size: ModelSize, out_hidden: int) -> dict:
    return {
        "model_type": "qwen2_5_vl", "depth": size.vision_depth, "hidden_size": size.vision_hidden,
        "hidden_act": "silu", "intermediate_size": size.vision_intermediate, "num_heads": size.vision_heads,
        "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "tokens_per_second": 2, "window_size": 112, "out_hidden_size": out_hidden,
        "fullatt_block_indexes": list(size.vision_full_attention_blocks),
    }


def _lerobot_features(generation: str) -> tuple[dict, dict]:
    dim = 26 if generation == GENERATION_05 else 20
    inputs = {STATE_KEY: {"type": "STATE", "shape": [dim]}}
    inputs.update({f"observation.images.{camera}": {"type": "VISUAL", "shape": list(CAMERA_SHAPE)} for camera in CAMERAS})
    return inputs, {ACTION_KEY: {"type": "ACTION", "shape": [dim]}}


def build_config(size: ModelSize, generation: str, token_ids: TokenIds, vocab_rows: int) -> WallOssConfig:
    head_dim = size.hidden_size // size.heads
    if 2 * sum(size.mrope_section) != head_dim:
        raise ValueError(f"mrope_section {size.mrope_section} does not cover head_dim {head_dim}")
    text = TextDecoderConfig(
        vocab_size=vocab_rows, hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        rms_norm_eps=1e-6, rope_theta=1000000.0, mrope_section=size.mrope_section,
    )
    inputs, outputs = _lerobot_features(generation)
    norm_mode = QUANTILES if generation == GENERATION_05 else MEAN_STD
    policy_fields = {
        "input_features": inputs,
        "output_features": outputs,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": norm_mode, "ACTION": norm_mode},
        "tokenizer_max_length": 1000,
        "state_names": state_names(generation),
        "action_names": action_names(generation),
    }
    camera_map = {f"observation.images.{camera}": camera for camera in CAMERAS}
    if generation == GENERATION_05:
        action_width = size.action_expert_width
        experts = (ExpertConfig(size.hidden_size, size.intermediate_size),
                   ExpertConfig(action_width, size.action_expert_intermediate))
        action = ActionHeadConfig(action_dim=26, state_dim=26, chunk_size=CHUNK_SIZE, hidden_size=action_width)
        sampler = SamplerConfig(num_steps=10, time_scale=0.999)
        dof = agent = {}
    else:
        experts = (ExpertConfig(size.hidden_size, size.intermediate_size),
                   ExpertConfig(size.hidden_size, size.action_expert_intermediate))
        action = ActionHeadConfig(action_dim=20, state_dim=20, chunk_size=CHUNK_SIZE, hidden_size=size.hidden_size)
        sampler = SamplerConfig(num_steps=10, time_scale=1.0)
        dof = {f"{arm}_{part}": width for arm in ("left", "right")
               for part, width in (("ee_pos", 3), ("ee_rot6d", 6), ("gripper", 1))}
        agent = dict(dof)
        # The flat flow layout is also read by transformers (AutoTokenizer); give it in-vocabulary ids.
        policy_fields.update(bos_token_id=token_ids.pad, eos_token_id=token_ids.pad + QWEN_SPECIAL_TOKENS.index("<|im_end|>"))
    return WallOssConfig(
        generation=generation, text=text, vision=_vision_config(size, size.hidden_size), experts=experts,
        action=action, sampler=sampler, token_ids=token_ids, camera_key_mapping=camera_map,
        dof_config=dof, agent_pos_config=agent, policy_fields=policy_fields,
    )


class _TensorFactory:
    """Seeded random tensors: linear weights ~ N(0, 1/fan_in), small biases, unit norms."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def linear(self, out_features: int, in_features: int) -> torch.Tensor:
        return torch.randn(out_features, in_features, generator=self.generator) / in_features**0.5

    def bias(self, features: int) -> torch.Tensor:
        return 0.02 * torch.randn(features, generator=self.generator)

    def norm(self, features: int) -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(features, generator=self.generator)

    def embedding(self, rows: int, width: int) -> torch.Tensor:
        return 0.5 * torch.randn(rows, width, generator=self.generator)


def _vision_tensors(config: WallOssConfig, make: _TensorFactory) -> dict[str, torch.Tensor]:
    vision = config.vision
    width, inner = vision["hidden_size"], vision["intermediate_size"]
    merged = width * vision["spatial_merge_size"] ** 2
    patch = vision["patch_size"]
    tensors = {"visual.patch_embed.proj.weight": make.linear(width, 3 * 2 * patch * patch).reshape(width, 3, 2, patch, patch)}
    for block in range(vision["depth"]):
        prefix = f"visual.blocks.{block}."
        tensors[prefix + "norm1.weight"] = make.norm(width)
        tensors[prefix + "norm2.weight"] = make.norm(width)
        tensors[prefix + "attn.qkv.weight"] = make.linear(3 * width, width)
        tensors[prefix + "attn.qkv.bias"] = make.bias(3 * width)
        tensors[prefix + "attn.proj.weight"] = make.linear(width, width)
        tensors[prefix + "attn.proj.bias"] = make.bias(width)
        for name in ("gate_proj", "up_proj"):
            tensors[prefix + f"mlp.{name}.weight"] = make.linear(inner, width)
            tensors[prefix + f"mlp.{name}.bias"] = make.bias(inner)
        tensors[prefix + "mlp.down_proj.weight"] = make.linear(width, inner)
        tensors[prefix + "mlp.down_proj.bias"] = make.bias(width)
    tensors["visual.merger.ln_q.weight"] = make.norm(width)
    tensors["visual.merger.mlp.0.weight"] = make.linear(merged, merged)
    tensors["visual.merger.mlp.0.bias"] = make.bias(merged)
    tensors["visual.merger.mlp.2.weight"] = make.linear(vision["out_hidden_size"], merged)
    tensors["visual.merger.mlp.2.bias"] = make.bias(vision["out_hidden_size"])
    return tensors


def _decoder_tensors_05(config: WallOssConfig, make: _TensorFactory) -> dict[str, torch.Tensor]:
    text = config.text
    qkv_rows = (text.num_attention_heads + 2 * text.num_key_value_heads) * text.head_dim
    attention_width = text.num_attention_heads * text.head_dim
    tensors = {"model.embed_tokens.weight": make.embedding(text.vocab_size, text.hidden_size)}
    for layer in range(text.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        for index, expert in enumerate(config.experts):
            tensors[prefix + f"input_layernorms.{index}.weight"] = make.norm(expert.hidden_size)
            tensors[prefix + f"post_attention_layernorms.{index}.weight"] = make.norm(expert.hidden_size)
            tensors[prefix + f"self_attn.qkv_proj_experts.{index}.weight"] = make.linear(qkv_rows, expert.hidden_size)
            tensors[prefix + f"self_attn.qkv_proj_experts.{index}.bias"] = make.bias(qkv_rows)
            tensors[prefix + f"self_attn.o_proj_experts.{index}.weight"] = make.linear(expert.hidden_size, attention_width)
            tensors[prefix + f"moe.experts.{index}.gate_up_proj.weight"] = make.linear(
                2 * expert.intermediate_size, expert.hidden_size)
            tensors[prefix + f"moe.experts.{index}.down_proj.weight"] = make.linear(
                expert.hidden_size, expert.intermediate_size)
    for index, expert in enumerate(config.experts):
        tensors[f"model.norms.{index}.weight"] = make.norm(expert.hidden_size)
    width, dim = config.action.hidden_size, config.action.action_dim
    tensors.update({
        "action_preprocessor.w1.weight": make.linear(width, 2 * dim),
        "action_preprocessor.w2.weight": make.linear(width, 2 * width),
        "action_preprocessor.w3.weight": make.linear(width, width),
        "action_preprocessor.action_proj_back.weight": make.linear(dim, width),
    })
    # Author layout: normalizers stored next to the weights (min = q01, delta = q99 - q01).
    for feature, relative in (("propri", False), ("action", True)):
        stats = feature_stats(GENERATION_05, relative)
        tensors[f"action_preprocessor.normalizer_{feature}.min.{ROBOT_NAME}"] = stats["q01"].clone()
        tensors[f"action_preprocessor.normalizer_{feature}.delta.{ROBOT_NAME}"] = stats["q99"] - stats["q01"]
    return tensors


def _decoder_tensors_flow(config: WallOssConfig, make: _TensorFactory) -> dict[str, torch.Tensor]:
    text = config.text
    width, kv_rows = text.hidden_size, text.num_key_value_heads * text.head_dim
    tensors = {"lm_head.weight": make.embedding(text.vocab_size, width)}
    for layer in range(text.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        tensors[prefix + "input_layernorm.weight"] = make.norm(width)
        tensors[prefix + "post_attention_layernorm.weight"] = make.norm(width)
        for name, rows in (("q_proj", text.num_attention_heads * text.head_dim), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            tensors[prefix + f"self_attn.{name}.weight"] = make.linear(rows, width)
            tensors[prefix + f"self_attn.{name}.bias"] = make.bias(rows)
        tensors[prefix + "self_attn.o_proj.weight"] = make.linear(width, text.num_attention_heads * text.head_dim)
        for index, expert in enumerate(config.experts):
            tensors[prefix + f"moe.experts.{index}.gate_proj.weight"] = make.linear(expert.intermediate_size, width)
            tensors[prefix + f"moe.experts.{index}.up_proj.weight"] = make.linear(expert.intermediate_size, width)
            tensors[prefix + f"moe.experts.{index}.down_proj.weight"] = make.linear(width, expert.intermediate_size)
    tensors["model.norm.weight"] = make.norm(width)
    action_dim, state_dim = config.action.action_dim, config.action.state_dim
    tensors.update({
        "action_preprocessor.w1.weight": make.linear(width, 2 * action_dim),
        "action_preprocessor.w2.weight": make.linear(width, 2 * width),
        "action_preprocessor.w3.weight": make.linear(width, width),
        "action_preprocessor.action_proj_back.weight": make.linear(action_dim, width),
        "action_preprocessor.propri_proj.weight": make.linear(width, 2 * state_dim),
    })
    return tensors


def _write_lerobot_pipelines(out_dir: Path, generation: str) -> None:
    """LeRobot processor pipelines holding the generated state/action statistics."""
    inputs, outputs = _lerobot_features(generation)
    norm_mode = QUANTILES if generation == GENERATION_05 else MEAN_STD
    stats = {STATE_KEY: feature_stats(generation, False), ACTION_KEY: feature_stats(generation, True)}
    write_normalizer_pipelines(out_dir, inputs, outputs, norm_mode, stats)


def write_normalizer_pipelines(out_dir: Path, inputs: dict, outputs: dict, norm_mode: str,
                               feature_stats_by_key: dict[str, dict[str, torch.Tensor]]) -> None:
    """`policy_preprocessor*` / `policy_postprocessor*` files (what `load_normalization` reads) for these stats."""
    norm_map = {"VISUAL": "IDENTITY", "STATE": norm_mode, "ACTION": norm_mode}
    stats = {f"{key}.{name}": torch.as_tensor(value, dtype=torch.float32).contiguous()
             for key, values in feature_stats_by_key.items() for name, value in values.items()}
    pre_file = "policy_preprocessor_step_0_normalizer_processor.safetensors"
    post_file = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    save_file(stats, str(out_dir / pre_file))
    save_file(stats, str(out_dir / post_file))
    preprocessor = {"name": "policy_preprocessor", "steps": [{
        "registry_name": "normalizer_processor",
        "config": {"eps": 1e-8, "features": {**inputs, **outputs}, "norm_map": norm_map},
        "state_file": pre_file,
    }]}
    postprocessor = {"name": "policy_postprocessor", "steps": [{
        "registry_name": "unnormalizer_processor",
        "config": {"eps": 1e-8, "features": outputs, "norm_map": norm_map},
        "state_file": post_file,
    }]}
    (out_dir / "policy_preprocessor.json").write_text(json.dumps(preprocessor, indent=2))
    (out_dir / "policy_postprocessor.json").write_text(json.dumps(postprocessor, indent=2))


def generate_checkpoint(out_dir: str | Path, size: str = "small", generation: str = GENERATION_05, seed: int = 0) -> Path:
    """Write a complete untrained checkpoint to `out_dir` (created; existing files are overwritten)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    if generation not in GENERATIONS:
        raise ValueError(f"unknown generation {generation!r}; choose one of {GENERATIONS}")
    spec = SIZES[size]
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    write_tokenizer(directory, spec.tokenizer_vocab, generation)
    write_preprocessor_config(directory)
    token_ids, vocab_rows = _token_ids(directory, generation)
    config = build_config(spec, generation, token_ids, vocab_rows)
    (directory / "config.json").write_text(json.dumps(config.to_json_dict(), indent=2))

    make = _TensorFactory(seed)
    tensors = _vision_tensors(config, make)
    if generation == GENERATION_05:
        tensors.update(_decoder_tensors_05(config, make))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"),
                  metadata={"format": "pt"})
    else:
        tensors.update(_decoder_tensors_flow(config, make))
        # Tied embeddings are stored once, as `lm_head.weight`, the way the released flow checkpoints are.
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"),
                  metadata={"model.embed_tokens.weight": "lm_head.weight"})  # one entry: byte-stable header
    _write_lerobot_pipelines(directory, generation)
    return directory
