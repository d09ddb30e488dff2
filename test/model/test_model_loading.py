"""Checkpoint loading: config layouts, strict key/shape checks, name mapping, dtype/device, full-size manifests."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wall_oss_core.model.checkpoint_files import CheckpointError, read_safetensors_extras
from wall_oss_core.model.configuration import ConfigError, WallOssConfig, full_size_05_config
from wall_oss_core.model.loading import build_model_on_meta, expected_shapes, load_model
from wall_oss_core.model.modeling import ModelInputs

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
CKPT_05 = GOLDEN / "wall_oss_05" / "checkpoint"
CKPT_FLOW = GOLDEN / "wall_oss_flow" / "checkpoint"


def copy_checkpoint(src: Path, dst: Path, tensors: dict[str, torch.Tensor] | None = None,
                    config: dict | None = None) -> Path:
    """A writable copy of a golden checkpoint, optionally with other weights / config."""
    shutil.copytree(src, dst)
    for path in dst.iterdir():
        path.chmod(0o644)
    if tensors is not None:
        save_file(tensors, str(dst / "model.safetensors"))
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config))
    return dst


def flow_inputs() -> tuple[ModelInputs, torch.Tensor, torch.Tensor]:
    case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    inputs = ModelInputs(input_ids=case["input_ids"], attention_mask=case["attention_mask"],
                         position_ids=case["position_ids"], dof_mask=case["dof_mask"],
                         pixel_values=case["pixel_values"], image_grid_thw=case["image_grid_thw"],
                         proprioception=case["proprioception"], agent_pos_mask=case["agent_pos_mask"])
    return inputs, case["noise"], case["predict_action"]


# ==================================================================== configs

@pytest.mark.parametrize("checkpoint", [CKPT_05, CKPT_FLOW], ids=["wall_oss_05", "wall_oss_flow"])
def test_config_round_trips_through_its_json_layout(checkpoint):
    config = WallOssConfig.from_checkpoint_dir(checkpoint)
    assert WallOssConfig.from_json_dict(json.loads(json.dumps(config.to_json_dict()))) == config


def test_config_reads_the_reference_facts():
    c05 = WallOssConfig.from_checkpoint_dir(CKPT_05)
    assert (c05.generation, c05.action_expert_width, c05.sampler.time_scale) == ("wall_oss_05", 32, 0.999)
    assert (c05.token_ids.propri, c05.token_ids.action) == (400, 401)  # appended after the tokenizer
    flow = WallOssConfig.from_checkpoint_dir(CKPT_FLOW)
    assert (flow.generation, flow.action.action_dim, flow.sampler.time_scale) == ("wall_oss_flow", 20, 1.0)
    assert (flow.token_ids.propri, flow.token_ids.action) == (404, 405)  # defined by the tokenizer


def test_config_errors_name_the_missing_fields(tmp_path):
    raw = json.loads((CKPT_05 / "config.json").read_text())
    del raw["vlm_config"]["text_config"]["num_key_value_heads"]
    del raw["vlm_config"]["experts"]
    with pytest.raises(ConfigError, match="experts"):
        WallOssConfig.from_json_dict(raw, CKPT_05)
    raw = json.loads((CKPT_05 / "config.json").read_text())
    del raw["vlm_config"]["text_config"]["num_key_value_heads"]
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        WallOssConfig.from_json_dict(raw, CKPT_05)
    with pytest.raises(ConfigError, match="neither"):
        WallOssConfig.from_json_dict({"type": "act"})
    with pytest.raises(ConfigError, match="no config.json"):
        WallOssConfig.from_checkpoint_dir(tmp_path)


# ==================================================================== strict loading

def test_mismatched_checkpoint_lists_every_problem_in_one_error(tmp_path):
    tensors = load_file(CKPT_05 / "model.safetensors")
    del tensors["model.norms.1.weight"]
    del tensors["visual.merger.ln_q.weight"]
    tensors["model.layers.0.extra_gate.weight"] = torch.zeros(3)
    tensors["action_preprocessor.w3.weight"] = torch.zeros(32, 31)
    broken = copy_checkpoint(CKPT_05, tmp_path / "broken", tensors=tensors)
    with pytest.raises(CheckpointError) as err:
        load_model(broken)
    message = str(err.value)
    assert "2 missing" in message and "model.norms.1.weight" in message and "visual.merger.ln_q.weight" in message
    assert "1 unexpected" in message and "model.layers.0.extra_gate.weight" in message
    assert "1 misshaped" in message and "action_preprocessor.w3.weight: stored [32, 31], model [32, 32]" in message


def test_missing_weights_file_is_a_clear_error(tmp_path):
    directory = copy_checkpoint(CKPT_05, tmp_path / "no_weights")
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(directory)


def test_loaded_model_is_fully_materialized_and_holds_the_stored_weights():
    model, _ = load_model(CKPT_05)
    stored = load_file(CKPT_05 / "model.safetensors")
    state = model.state_dict()
    for key, value in state.items():
        assert value.device.type == "cpu"
        assert torch.equal(value, stored[key]), key
    assert all(b.device.type == "cpu" for b in model.buffers())


def test_author_normalizers_are_extras_not_weights():
    extras = read_safetensors_extras(CKPT_05)
    assert sorted(extras) == sorted(f"action_preprocessor.normalizer_{kind}.{stat}.tiny_robot"
                                    for kind in ("action", "propri") for stat in ("min", "delta"))
    assert all(t.shape == (26,) for t in extras.values())
    assert read_safetensors_extras(CKPT_FLOW) == {}


def test_lerobot_05_layout_loads_to_the_same_model(tmp_path):
    """PR #4200's policy save: everything under `model.`, vision MLP fused, the tied pair kept as lm_head."""
    reference, _ = load_model(CKPT_05)
    tensors = load_file(CKPT_05 / "model.safetensors")
    renamed = {}
    for key, value in tensors.items():
        split = re.match(r"(visual\.blocks\.\d+\.mlp\.)(gate|up)_proj\.(weight|bias)$", key)
        if key == "model.embed_tokens.weight":
            renamed["model.lm_head.weight"] = value
        elif split is None:
            renamed[f"model.{key}"] = value
        elif split[2] == "gate":
            up = tensors[f"{split[1]}up_proj.{split[3]}"]
            renamed[f"model.{split[1]}gate_up_proj.{split[3]}"] = torch.cat([value, up])
    directory = copy_checkpoint(CKPT_05, tmp_path / "lerobot", tensors=renamed)
    model, _ = load_model(directory)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_sharded_checkpoint_loads_to_the_same_model(tmp_path):
    reference, _ = load_model(CKPT_FLOW)
    tensors = load_file(CKPT_FLOW / "model.safetensors")
    directory = copy_checkpoint(CKPT_FLOW, tmp_path / "sharded")
    (directory / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, shard_keys in shards.items():
        save_file({k: tensors[k] for k in shard_keys}, str(directory / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model, _ = load_model(directory)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_lerobot_wall_x_directory_reproduces_the_flow_golden(tmp_path):
    """A LeRobot `wall_x` save: flat policy config, weights under `model.` (+ `model.model.` for the decoder)."""
    flow_raw = json.loads((CKPT_FLOW / "config.json").read_text())
    wall_x = {key: flow_raw[key] for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                             "num_attention_heads", "num_key_value_heads", "vocab_size",
                                             "vision_config", "dof_config", "agent_pos_config", "noise_scheduler")}
    wall_x.update({"type": "wall_x", "chunk_size": 32, "num_inference_timesteps": 10, "num_experts": 2,
                   "rope_scaling": flow_raw["rope_scaling"], "image_token_id": flow_raw["image_token_id"],
                   "video_token_id": flow_raw["video_token_id"],
                   "vision_start_token_id": flow_raw["vision_start_token_id"],
                   "vision_end_token_id": flow_raw["vision_end_token_id"]})
    tensors = {f"model.{k}": v for k, v in load_file(CKPT_FLOW / "model.safetensors").items()}
    directory = copy_checkpoint(CKPT_FLOW, tmp_path / "wall_x", tensors=tensors, config=wall_x)
    model, config = load_model(directory)
    assert config.experts == WallOssConfig.from_checkpoint_dir(CKPT_FLOW).experts
    inputs, noise, expected = flow_inputs()
    assert (model.sample_actions(inputs, noise=noise) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loading(dtype):
    model, _ = load_model(CKPT_FLOW, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    inputs, noise, expected = flow_inputs()
    out = model.sample_actions(inputs, noise=noise)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert (out - expected).abs().max().item() <= 0.1


def test_unsupported_dtype_is_rejected():
    with pytest.raises(ValueError, match="dtype"):
        load_model(CKPT_FLOW, dtype=torch.float64)


# ==================================================================== full-size manifests (meta device)

def reference_module_layout(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Our keys in PR #4200's module layout: vision MLP fused to `gate_up_proj`, tied `lm_head` alias."""
    out = {}
    for key, shape in shapes.items():
        split = re.match(r"(visual\.blocks\.\d+\.mlp\.)(gate|up)_proj\.(weight|bias)$", key)
        if split is None:
            out[key] = shape
        elif split[2] == "gate":
            out[f"{split[1]}gate_up_proj.{split[3]}"] = (2 * shape[0], *shape[1:])
    out["lm_head.weight"] = shapes["model.embed_tokens.weight"]
    return out


def test_full_size_05_matches_the_manifest_exactly():
    manifest = json.loads((GOLDEN / "state_dict_manifest_05.json").read_text())
    model = build_model_on_meta(full_size_05_config())
    assert all(p.device.type == "meta" for p in model.parameters())
    shapes = expected_shapes(model)
    assert shapes == {k: tuple(v) for k, v in manifest["checkpoint_layout_keys"].items()}
    assert reference_module_layout(shapes) == {k: tuple(v) for k, v in manifest["state_dict_keys"].items()}
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters_unique"]


def parse_shape_patterns(text: str) -> dict[str, list[tuple[tuple[int, ...], int]]]:
    """`key.{i}.pattern [shape] xN | [shape] xM` lines -> pattern: [(shape, count), ...]."""
    patterns = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, rest = line.split(" ", 1)
        patterns[key] = sorted((tuple(json.loads(shape)), int(count))
                               for shape, count in re.findall(r"(\[[\d, ]+\]) x(\d+)", rest))
    return patterns


def full_size_flow_config(patterns) -> WallOssConfig:
    action_dim = patterns["action_preprocessor.action_proj_back.weight"][0][0][0]
    state_dim = patterns["action_preprocessor.propri_proj.weight"][0][0][1] // 2
    return WallOssConfig.from_json_dict({
        "vocab_size": patterns["model.embed_tokens.weight"][0][0][0], "hidden_size": 2048,
        "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
        "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                          "out_hidden_size": 2048, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
        "experts": [{"hidden_size": 2048, "intermediate_size": 11008},
                    {"hidden_size": 2048, "intermediate_size": 2048}],
        "dof_config": {"arm": action_dim}, "agent_pos_config": {"arm": state_dim},
        "image_token_id": 151655, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "propri_token_id": 151665, "action_token_id": 151666,
    })


def test_full_size_flow_matches_the_published_shapes():
    patterns = parse_shape_patterns((GOLDEN / "wall_oss_flow_full_size_shapes.txt").read_text())
    model = build_model_on_meta(full_size_flow_config(patterns))
    shapes = expected_shapes(model)
    shapes["lm_head.weight"] = shapes["model.embed_tokens.weight"]  # tied alias listed by the reference
    ours: dict[str, list] = {}
    for key, shape in shapes.items():
        pattern = re.sub(r"^(model\.layers|visual\.blocks)\.\d+\.", r"\1.{i}.", key)
        pattern = re.sub(r"\.experts\.\d+\.", ".experts.{e}.", pattern)
        pattern = re.sub(r"^visual\.merger\.mlp\.\d+\.", "visual.merger.mlp.{i}.", pattern)
        ours.setdefault(pattern, []).append(shape)
    ours = {k: sorted((s, v.count(s)) for s in set(v)) for k, v in ours.items()}
    assert ours == patterns


def test_author_05_config_with_flat_text_fields_parses_like_the_lerobot_one():
    """The author's config.json is the vlm_config itself; older transformers kept the text fields flat."""
    lerobot = WallOssConfig.from_checkpoint_dir(CKPT_05)
    vlm = json.loads((CKPT_05 / "config.json").read_text())["vlm_config"]
    flat = {**{k: v for k, v in vlm.items() if k != "text_config"}, **vlm["text_config"]}
    author = WallOssConfig.from_json_dict(flat, CKPT_05)
    assert (author.text, author.experts, author.token_ids, author.sampler) == (
        lerobot.text, lerobot.experts, lerobot.token_ids, lerobot.sampler)
