"""Preprocessing reproduces the reference prompt, tokens, pixels, grids, positions and state bins."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wall_oss_core.model.normalization import load_normalization
from wall_oss_core.model.processing import (
    GENERATION_05,
    ObservationError,
    ProcessorSettings,
    WallOssProcessor,
    build_prompt,
    expand_image_tokens,
    load_tokenizer,
    mrope_position_ids,
    resize_longest_side,
    to_uint8_hwc,
)

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
CHECKPOINT_05 = GOLDEN / "wall_oss_05" / "checkpoint"
CAMERAS_05 = ("face_view", "right_wrist_view")


def _case(name):
    return load_file(str(GOLDEN / "wall_oss_05" / f"{name}.safetensors")), json.loads(
        (GOLDEN / "wall_oss_05" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def processor_05():
    settings = ProcessorSettings(GENERATION_05, CAMERAS_05, chunk_size=32, action_dim=26, state_dim=26,
                                 active_action_dims=26, active_state_dims=26, image_longest_side=448)
    return WallOssProcessor.from_checkpoint_dir(CHECKPOINT_05, settings)


def _raw_images(tensors):
    return {camera: tensors[f"raw_observation/observation.images.{camera}"] for camera in CAMERAS_05}


@pytest.mark.parametrize("case", ["b1", "b2_leftpad"])
def test_05_golden_inputs_from_raw_observation(processor_05, case):
    tensors, meta = _case(case)
    state = load_normalization(CHECKPOINT_05).state.normalize(tensors["raw_observation/observation.state"]).clamp(-1, 1)
    batch = processor_05(_raw_images(tensors), state, meta["raw_observation"]["task"])
    assert batch.prompts == meta["prompt_text"]
    assert torch.equal(batch.state_bins, tensors["state_bins_0_511"])
    assert torch.equal(batch.input_ids, tensors["input_ids"])
    assert torch.equal(batch.attention_mask, tensors["attention_mask"])
    assert torch.equal(batch.image_grid_thw, tensors["image_grid_thw"])
    assert torch.equal(batch.position_ids, tensors["position_ids"])
    assert torch.equal(batch.dof_mask.bool(), tensors["dof_mask"])
    assert torch.equal(batch.input_ids == processor_05.action_token_id, tensors["moe_token_types"])
    if "pixel_values" in tensors:
        assert (batch.pixel_values - tensors["pixel_values"]).abs().max() <= 1e-5


def test_left_padding_positions_are_one(processor_05):
    tensors, meta = _case("b2_leftpad")
    state = tensors["state_normalized_clamped"]
    batch = processor_05(_raw_images(tensors), state, meta["raw_observation"]["task"])
    pads = batch.attention_mask[1] == 0
    assert pads.sum() == 2
    assert bool((batch.position_ids[:, 1, pads] == 1).all())
    assert bool((batch.input_ids[1, pads] == processor_05.pad_token_id).all())


def test_uint8_hwc_images_match_float_chw(processor_05):
    tensors, meta = _case("b1")
    floats = _raw_images(tensors)
    uint8 = {camera: np.stack([to_uint8_hwc(frame) for frame in frames]) for camera, frames in floats.items()}
    task = meta["raw_observation"]["task"]
    state = tensors["state_normalized_clamped"]
    from_float, from_uint8 = processor_05(floats, state, task), processor_05(uint8, state, task)
    assert torch.equal(from_float.pixel_values, from_uint8.pixel_values)
    assert torch.equal(from_float.input_ids, from_uint8.input_ids)


def test_flow_golden_tokens_and_positions_from_prompt():
    tensors = load_file(str(GOLDEN / "wall_oss_flow" / "b1.safetensors"))
    prompt = json.loads((GOLDEN / "wall_oss_flow" / "b1.json").read_text())["prompt"]
    rebuilt = build_prompt(("face_view",), "Pick up the object.", "<|propri|>", 32)
    tokens_per_image = int(tensors["image_grid_thw"].prod()) // 4
    assert expand_image_tokens(rebuilt, [tokens_per_image]) == prompt
    tokenizer = load_tokenizer(GOLDEN / "wall_oss_flow" / "checkpoint")
    encoded = tokenizer([prompt], return_tensors="pt", padding=True)
    assert torch.equal(encoded["input_ids"], tensors["input_ids"])
    assert torch.equal(encoded["attention_mask"], tensors["attention_mask"])
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    positions = mrope_position_ids(encoded["input_ids"], encoded["attention_mask"], tensors["image_grid_thw"], image_token, 2)
    assert torch.equal(positions, tensors["position_ids"])


def test_resize_keeps_aspect_and_truncates():
    assert resize_longest_side(np.zeros((480, 640, 3), np.uint8), 448).size == (448, 336)
    assert resize_longest_side(np.zeros((100, 30, 3), np.uint8), 256).size == (76, 256)  # 76.8 -> 76
    assert resize_longest_side(np.zeros((64, 64, 3), np.uint8), 448).size == (448, 448)


def test_bad_observations_raise_clear_errors(processor_05):
    tensors, meta = _case("b1")
    images, state, task = _raw_images(tensors), tensors["state_normalized_clamped"], meta["raw_observation"]["task"]
    with pytest.raises(ObservationError, match="missing cameras"):
        processor_05({"face_view": images["face_view"]}, state, task)
    with pytest.raises(ObservationError, match="frames for a batch"):
        processor_05(images, state.repeat(2, 1), task * 2)
    with pytest.raises(ObservationError, match="NaN"):
        processor_05(images, torch.full_like(state, float("nan")), task)
    with pytest.raises(ObservationError, match="one instruction per batch row"):
        processor_05(images, state, task * 2)
    with pytest.raises(ObservationError, match="non-empty"):
        processor_05(images, state, ["  "])
    with pytest.raises(ObservationError, match="3xHxW"):
        processor_05({camera: frames.permute(0, 2, 3, 1) for camera, frames in images.items()}, state, task)
    with pytest.raises(ObservationError, match="action tokens"):
        processor_05(images, state, ["do it <|action|>"])
