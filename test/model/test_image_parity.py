"""Pixels equal the references' torchvision-backed Qwen2-VL image processor (fixtures: test/data/image_processor)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from wall_oss_core.model.loading import load_model
from wall_oss_core.model.processing import (
    GENERATION_05,
    ProcessorSettings,
    WallOssProcessor,
    processor_resize,
    resize_longest_side,
    to_uint8_hwc,
)

DATA = Path(__file__).parents[1] / "data"
FIXTURES = DATA / "image_processor" / "qwen2vl_fast_processor.safetensors"
CHECKPOINT_05 = DATA / "golden" / "wall_oss_05" / "checkpoint"
TOL = 1e-5


def load_cases() -> dict[str, dict]:
    with safe_open(str(FIXTURES), framework="pt") as handle:
        meta = json.loads(handle.metadata()["cases"])
        return {name: {**info, **{key: handle.get_tensor(f"{name}/{key}")
                                  for key in ("image", "pixel_values", "image_grid_thw")}}
                for name, info in meta.items()}


CASES = load_cases()


def processor_for(longest_side: int) -> WallOssProcessor:
    settings = ProcessorSettings(GENERATION_05, ("face_view",), chunk_size=32, action_dim=26, state_dim=26,
                                 active_action_dims=26, active_state_dims=26, image_longest_side=longest_side)
    return WallOssProcessor.from_checkpoint_dir(CHECKPOINT_05, settings)


def test_fixtures_cover_both_input_kinds_and_resampled_shapes():
    kinds = {case["kind"] for case in CASES.values()}
    assert kinds == {"uint8_hwc", "float_chw"}
    resampled = [name for name, case in CASES.items()
                 if [d * 14 for d in case["grid_thw"][1:]] != case["pil_size_wh"][::-1]]
    assert {"landscape_848x480", "portrait_360x640", "odd_53x37", "odd_67x101", "upscaled_30x20"} <= set(resampled)


@pytest.mark.parametrize("name", sorted(CASES))
def test_processed_pixels_match_the_fast_processor(name):
    case = CASES[name]
    processor = processor_for(case["longest_side"])
    pixel_values, grid = processor.process_images({"face_view": [case["image"]]}, 1)
    assert torch.equal(grid, case["image_grid_thw"])
    assert (pixel_values - case["pixel_values"]).abs().max().item() <= TOL


def test_pil_processor_alone_misses_the_resampled_cases():
    """Without `processor_resize` the PIL backend's resampling is off by at least one uint8 level."""
    processor = processor_for(100)
    case = CASES["landscape_848x480"]
    resized = resize_longest_side(to_uint8_hwc(case["image"]), case["longest_side"])
    pil_only = processor.image_processor(images=[resized], return_tensors="pt")["pixel_values"]
    assert (pil_only - case["pixel_values"]).abs().max().item() > 1e-2
    assert processor_resize(resized, processor.image_processor).size == (112, 56)


def test_frames_at_the_smart_resize_size_pass_through():
    processor = processor_for(112)
    case = CASES["multiple_of_28_112x84"]
    resized = resize_longest_side(to_uint8_hwc(case["image"]), 112)
    assert processor_resize(resized, processor.image_processor) is resized


def test_mixed_sizes_in_one_batch_match_each_fixture():
    processor = processor_for(100)
    names = ["landscape_848x480", "portrait_360x640"]
    images = {"face_view": [CASES[name]["image"] for name in names]}
    pixel_values, grid = processor.process_images(images, 2)
    expected = torch.cat([CASES[name]["pixel_values"] for name in names])
    assert torch.equal(grid, torch.cat([CASES[name]["image_grid_thw"] for name in names]))
    assert (pixel_values - expected).abs().max().item() <= TOL


@torch.no_grad()
def test_vision_embeddings_of_the_processed_pixels_match_the_fixtures():
    model, _ = load_model(CHECKPOINT_05)
    for name in ("odd_67x101", "portrait_360x640"):
        case = CASES[name]
        pixel_values, grid = processor_for(case["longest_side"]).process_images({"face_view": [case["image"]]}, 1)
        ours = model.vision_embeddings(pixel_values, grid)
        reference = model.vision_embeddings(case["pixel_values"], case["image_grid_thw"])
        assert (ours - reference).abs().max().item() <= TOL


def test_unsupported_resample_is_a_clear_error():
    processor = processor_for(100)
    case = CASES["odd_53x37"]
    resized = resize_longest_side(to_uint8_hwc(case["image"]), 90)
    image_processor = processor.image_processor
    saved = image_processor.resample
    image_processor.resample = 0  # NEAREST
    try:
        with pytest.raises(ValueError, match="resample 0 is not supported"):
            processor_resize(resized, image_processor)
    finally:
        image_processor.resample = saved
