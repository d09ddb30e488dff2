"""Text from the vision-language expert: golden first-token logits, KV cache = recompute, prompts, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wall_oss_core.model.loading import load_model
from wall_oss_core.model.modeling import InputError, ModelInputs
from wall_oss_core.model.pipeline import WallOssPipeline
from wall_oss_core.model.processing import CAPTION_QUESTION, ObservationError, build_text_prompt
from wall_oss_core.model.text_generation import TextSampling, generate_text, next_token

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
CKPT_05 = GOLDEN / "wall_oss_05" / "checkpoint"


@pytest.fixture(scope="module")
def model_05():
    return load_model(CKPT_05)


def golden_prompt(case: dict[str, torch.Tensor], action_id: int) -> tuple[ModelInputs, int]:
    """The golden prompt up to (excluding) its action block, and that block's first index."""
    first = int((case["input_ids"][0] == action_id).nonzero()[0])
    assert bool((case["input_ids"][:, first:] == action_id).all())  # the action block ends every row
    return ModelInputs(input_ids=case["input_ids"][:, :first], attention_mask=case["attention_mask"][:, :first],
                       position_ids=case["position_ids"][:, :, :first], pixel_values=case.get("pixel_values"),
                       image_grid_thw=case["image_grid_thw"]), first


@torch.no_grad()
@pytest.mark.parametrize("case_name", ["b1", "b2_leftpad"])
def test_first_token_logits_are_the_lm_head_on_the_golden_decoder_output(model_05, case_name):
    """Causal attention: the golden decoder output at the token before the action block is the prompt's
    last hidden state; the first-token logits are the tied LM head applied to it."""
    model, config = model_05
    case = load_file(GOLDEN / "wall_oss_05" / f"{case_name}.safetensors")
    inputs, first = golden_prompt(case, config.token_ids.action)
    prompt_embeds = None if "pixel_values" in case else case["decoder_inputs_embeds_step0"][:, :first]
    out = generate_text(model, inputs, TextSampling(max_new_tokens=1), stop_token_ids=[], pad_token_id=0,
                        prompt_embeds=prompt_embeds)
    last_hidden = case["decoder_output_step0"][:, first - 1]
    expected = last_hidden @ model.model.embed_tokens.weight.T
    assert out.first_logits.shape == (case["input_ids"].shape[0], config.text.vocab_size)
    assert (out.first_logits - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
    assert torch.equal(out.token_ids[:, 0], expected.argmax(-1))


@torch.no_grad()
@pytest.mark.parametrize("sampling", [TextSampling(max_new_tokens=12),
                                      TextSampling(max_new_tokens=12, temperature=1.5, top_p=0.95)],
                         ids=["greedy", "top_p"])
def test_cached_decoding_equals_full_recompute_token_for_token(model_05, sampling):
    model, config = model_05
    case = load_file(GOLDEN / "wall_oss_05" / "b2_leftpad.safetensors")  # left padding in row 1
    inputs, first = golden_prompt(case, config.token_ids.action)
    embeds = case["decoder_inputs_embeds_step0"][:, :first]
    runs = [generate_text(model, inputs, sampling, stop_token_ids=[], pad_token_id=0, prompt_embeds=embeds,
                          use_cache=use_cache, generator=torch.Generator().manual_seed(3))
            for use_cache in (True, False)]
    assert runs[0].token_ids.shape == (2, 12)
    assert torch.equal(runs[0].token_ids, runs[1].token_ids)
    if sampling.temperature > 0:
        assert len(set(runs[0].token_ids.flatten().tolist())) > 3  # the check sees varied tokens


@torch.no_grad()
def test_rows_stop_at_their_stop_token_and_are_padded_after_it(model_05):
    model, config = model_05
    case = load_file(GOLDEN / "wall_oss_05" / "b2_leftpad.safetensors")
    inputs, first = golden_prompt(case, config.token_ids.action)
    embeds = case["decoder_inputs_embeds_step0"][:, :first]
    free = generate_text(model, inputs, TextSampling(max_new_tokens=6, temperature=2.0), stop_token_ids=[],
                         pad_token_id=0, prompt_embeds=embeds, generator=torch.Generator().manual_seed(5))
    stop = int(free.token_ids[0, 2])
    stopped = generate_text(model, inputs, TextSampling(max_new_tokens=6, temperature=2.0), stop_token_ids=[stop],
                            pad_token_id=0, prompt_embeds=embeds, generator=torch.Generator().manual_seed(5))
    row0 = stopped.token_ids[0].tolist()
    end = row0.index(stop)
    assert row0[: end + 1] == free.token_ids[0, : end + 1].tolist()
    assert all(token == 0 for token in row0[end + 1:])


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    generator = torch.Generator().manual_seed(0)
    picks = {int(next_token(logits, TextSampling(temperature=1.0, top_p=0.7), generator)) for _ in range(300)}
    assert picks == {0, 1}
    assert int(next_token(logits, TextSampling())) == 0
    only_best = {int(next_token(logits, TextSampling(temperature=1.0, top_p=0.1), generator)) for _ in range(50)}
    assert only_best == {0}


@pytest.mark.parametrize("kwargs, match", [({"max_new_tokens": 0}, "max_new_tokens"),
                                           ({"temperature": -1.0}, "temperature"),
                                           ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p")])
def test_bad_sampling_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextSampling(**kwargs)


def test_right_padded_or_mismatched_inputs_are_clear_errors(model_05):
    model, config = model_05
    case = load_file(GOLDEN / "wall_oss_05" / "b2_leftpad.safetensors")
    inputs, first = golden_prompt(case, config.token_ids.action)
    embeds = case["decoder_inputs_embeds_step0"][:, :first]
    right_padded = ModelInputs(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask.flip(1),
                               position_ids=inputs.position_ids)
    with pytest.raises(InputError, match="left padded"):
        generate_text(model, right_padded, TextSampling(), [], 0, prompt_embeds=embeds)
    with pytest.raises(InputError, match="prompt_embeds"):
        generate_text(model, inputs, TextSampling(), [], 0, prompt_embeds=embeds[:, 1:])
    short_positions = ModelInputs(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                                  position_ids=inputs.position_ids[:, :, 1:])
    with pytest.raises(InputError, match="position_ids"):
        generate_text(model, short_positions, TextSampling(), [], 0, prompt_embeds=embeds)


def test_text_prompts_follow_the_reference_wording():
    cams = ["face_view", "right_wrist_view"]
    head = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nObservation: front view: "
            "<|vision_start|><|image_pad|><|vision_end|> right wrist view: <|vision_start|><|image_pad|><|vision_end|>\n")
    tail = "<|im_end|>\n<|im_start|>assistant\n"
    assert build_text_prompt(cams, "vqa", "Where is the cup?") == head + "Question: Where is the cup?\n" + tail
    assert build_text_prompt(cams, "caption", CAPTION_QUESTION) == head + f"Question: {CAPTION_QUESTION}\n" + tail
    assert build_text_prompt(cams, "subtask", "clear the table") == (
        head + "Instruction: clear the table\nPredict the next action in language.\n" + tail)
    with pytest.raises(ObservationError, match="unknown text kind"):
        build_text_prompt(cams, "poem", "x")


@pytest.fixture(scope="module")
def pipeline_05():
    return WallOssPipeline.from_pretrained(CKPT_05)


def golden_images() -> dict[str, torch.Tensor]:
    case = load_file(GOLDEN / "wall_oss_05" / "b1.safetensors")
    prefix = "raw_observation/observation.images."
    return {key[len(prefix):]: value for key, value in case.items() if key.startswith(prefix)}


def test_pipeline_ask_runs_the_golden_images_through_the_model(pipeline_05):
    """From raw golden frames: the golden pixels and the golden prompt's observation part; cached = recomputed."""
    images = golden_images()
    batch = pipeline_05.processor.text_inputs(images, "vqa", ["What is on the table?"])
    case = load_file(GOLDEN / "wall_oss_05" / "b1.safetensors")
    assert (batch.pixel_values - case["pixel_values"]).abs().max().item() <= 1e-5
    assert torch.equal(batch.image_grid_thw, case["image_grid_thw"])
    meta = json.loads((GOLDEN / "wall_oss_05" / "b1.json").read_text())
    observation_part = meta["prompt_text"][0].split("\nInstruction:")[0]
    assert batch.prompts[0] == observation_part + "\nQuestion: What is on the table?\n<|im_end|>\n<|im_start|>assistant\n"
    answers = pipeline_05.ask(images, ["What is on the table?"], sampling=TextSampling(max_new_tokens=5))
    again = pipeline_05.ask(images, ["What is on the table?"], sampling=TextSampling(max_new_tokens=5),
                            use_cache=False)
    assert answers == again and len(answers) == 1 and isinstance(answers[0], str)


def test_pipeline_ask_rejects_bad_requests(pipeline_05):
    images = golden_images()
    with pytest.raises(ObservationError, match="non-empty"):
        pipeline_05.ask(images, ["  "])
    with pytest.raises(ObservationError, match="one question"):
        pipeline_05.ask(images, "a bare string")
    with pytest.raises(ObservationError, match="missing cameras"):
        pipeline_05.ask({"face_view": images["face_view"]}, ["What is here?"])
    with pytest.raises(ObservationError, match="special tokens"):
        pipeline_05.ask(images, ["say <|action|>"])
    with pytest.raises(ObservationError, match="has 1 frames for a batch of 2"):
        pipeline_05.ask(images, ["one", "two"])
    with pytest.raises(ObservationError, match="unknown text kind"):
        pipeline_05.ask(images, ["x"], kind="poem")


@torch.no_grad()
def test_flow_checkpoints_generate_text_with_the_same_cache_equivalence():
    """Flow layers (shared attention, per-expert MLP) decode text on expert 0 as well."""
    model, config = load_model(GOLDEN / "wall_oss_flow" / "checkpoint")
    case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    inputs, _ = golden_prompt(case, config.token_ids.action)
    sampling = TextSampling(max_new_tokens=10, temperature=1.5)
    runs = [generate_text(model, inputs, sampling, [], 0, use_cache=use_cache, generator=torch.Generator().manual_seed(1))
            for use_cache in (True, False)]
    assert torch.equal(runs[0].token_ids, runs[1].token_ids)
    assert len(set(runs[0].token_ids[0].tolist())) > 3
