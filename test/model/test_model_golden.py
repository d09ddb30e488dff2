"""The native model against the published golden references (fp32, CPU, max |diff| <= 1e-5 per stage).

Golden files: test/data/golden (copied verbatim from the shared reference).  The 0.5 `b2_leftpad` case
holds no pixel values, so it starts from its recorded decoder input (`decoder_inputs_embeds_step0`);
its left-padding rows are excluded from the decoder-output comparison because no real token attends to
them (their values never reach an action).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wall_oss_core.model.loading import load_model
from wall_oss_core.model.modeling import InputError, ModelInputs, SamplingTrace
from wall_oss_core.model.processing import GENERATION_05, ProcessorSettings, WallOssProcessor

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
TOL = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def model_05():
    return load_model(GOLDEN / "wall_oss_05" / "checkpoint")[0]


@pytest.fixture(scope="module")
def model_flow():
    return load_model(GOLDEN / "wall_oss_flow" / "checkpoint")[0]


def inputs_05(case: dict[str, torch.Tensor]) -> ModelInputs:
    return ModelInputs(input_ids=case["input_ids"], attention_mask=case["attention_mask"],
                       position_ids=case["position_ids"], dof_mask=case["dof_mask"],
                       pixel_values=case.get("pixel_values"), image_grid_thw=case["image_grid_thw"])


def inputs_flow(case: dict[str, torch.Tensor]) -> ModelInputs:
    return ModelInputs(input_ids=case["input_ids"], attention_mask=case["attention_mask"],
                       position_ids=case["position_ids"], dof_mask=case["dof_mask"],
                       pixel_values=case["pixel_values"], image_grid_thw=case["image_grid_thw"],
                       proprioception=case["proprioception"], agent_pos_mask=case["agent_pos_mask"])


def assert_flow_stages(trace: SamplingTrace, out: torch.Tensor, case: dict[str, torch.Tensor]) -> None:
    assert max_diff(trace.times, case["times"]) <= TOL
    assert max_diff(trace.velocities[0], case["velocity_step0"]) <= TOL
    assert max_diff(torch.stack(trace.velocities), case["velocities_all_steps"]) <= TOL
    assert max_diff(torch.stack(trace.x_t), case["x_t_all_steps"]) <= TOL
    # the reference's action-space estimate at each step: x_hat = x_t + (1 - t) v
    x_hat = torch.stack([x + (1 - t) * v for x, t, v in zip(trace.x_t, trace.times, trace.velocities)])
    assert max_diff(x_hat, case["x_hat_all_steps"]) <= TOL
    assert out.dtype == torch.float32
    assert max_diff(out, case["action_normalized"]) <= TOL


@pytest.mark.parametrize("use_prefix_cache", [True, False], ids=["cached", "recompute"])
def test_05_single_sample_every_stage(model_05, use_prefix_cache):
    case = load_file(GOLDEN / "wall_oss_05" / "b1.safetensors")
    trace = SamplingTrace()
    out = model_05.sample_actions(inputs_05(case), noise=case["initial_noise"],
                                  use_prefix_cache=use_prefix_cache, trace=trace)
    assert max_diff(trace.vision_embeds, case["vision_embeds"]) <= TOL
    assert max_diff(trace.inputs_embeds_step0, case["decoder_inputs_embeds_step0"]) <= TOL
    assert max_diff(trace.decoder_output_step0, case["decoder_output_step0"]) <= TOL
    assert_flow_stages(trace, out, case)


@pytest.mark.parametrize("use_prefix_cache", [True, False], ids=["cached", "recompute"])
def test_05_left_padded_batch_from_decoder_inputs(model_05, use_prefix_cache):
    case = load_file(GOLDEN / "wall_oss_05" / "b2_leftpad.safetensors")
    assert "pixel_values" not in case
    real = case["attention_mask"].bool()
    assert not bool(real.all()), "the second row must be left-padded"
    trace = SamplingTrace()
    out = model_05.sample_actions(inputs_05(case), noise=case["initial_noise"], use_prefix_cache=use_prefix_cache,
                                  trace=trace, prompt_embeds=case["decoder_inputs_embeds_step0"])
    assert max_diff(trace.inputs_embeds_step0, case["decoder_inputs_embeds_step0"]) <= TOL
    assert max_diff(trace.decoder_output_step0[real], case["decoder_output_step0"][real]) <= TOL
    assert_flow_stages(trace, out, case)


def test_05_left_padded_batch_prompt_embedding_from_raw_images(model_05):
    """b2 holds raw camera images but no pixel values: preprocessing them and running our vision tower and
    prompt embedding reproduces the recorded image embeddings, and the recorded decoder input on every real
    prompt row (image slots and text; action rows are replaced by the flow steps, padding never attended)."""
    case = load_file(GOLDEN / "wall_oss_05" / "b2_leftpad.safetensors")
    meta = json.loads((GOLDEN / "wall_oss_05" / "b2_leftpad.json").read_text())
    cameras = ("face_view", "right_wrist_view")
    settings = ProcessorSettings(GENERATION_05, cameras, chunk_size=32, action_dim=26, state_dim=26,
                                 active_action_dims=26, active_state_dims=26, image_longest_side=448)
    processor = WallOssProcessor.from_checkpoint_dir(GOLDEN / "wall_oss_05" / "checkpoint", settings)
    batch = processor({c: case[f"raw_observation/observation.images.{c}"] for c in cameras},
                      case["state_normalized_clamped"], meta["raw_observation"]["task"])
    assert torch.equal(batch.input_ids, case["input_ids"])
    inputs = inputs_05(case)
    inputs.pixel_values = batch.pixel_values
    trace = SamplingTrace()
    with torch.no_grad():
        embeds = model_05.embed_prompt(inputs, trace)
    assert max_diff(trace.vision_embeds, case["vision_embeds"]) <= TOL
    prompt_rows = case["attention_mask"].bool() & (case["input_ids"] != model_05.config.token_ids.action)
    assert int((case["input_ids"][prompt_rows] == model_05.config.token_ids.image_pad).sum()) == len(trace.vision_embeds)
    assert max_diff(embeds[prompt_rows], case["decoder_inputs_embeds_step0"][prompt_rows]) <= TOL


@pytest.mark.parametrize("use_prefix_cache", [True, False], ids=["cached", "recompute"])
def test_flow_single_sample(model_flow, use_prefix_cache):
    case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    trace = SamplingTrace()
    out = model_flow.sample_actions(inputs_flow(case), noise=case["noise"], use_prefix_cache=use_prefix_cache,
                                    trace=trace)
    assert max_diff(trace.vision_embeds, case["image_embeds"]) <= TOL
    assert max_diff(trace.velocities[0], case["velocity_t0"]) <= TOL
    assert max_diff(out, case["predict_action"]) <= TOL
    # LeRobot's policy wrapper ran in mixed bf16 and returned the used (dof-masked) dims only: loose check
    used = case["policy_chunk_bf16"].shape[-1]
    assert bool(case["dof_mask"][0, 0, :used].bool().all())
    assert max_diff(out[..., :used], case["policy_chunk_bf16"]) <= 2e-2


def test_flow_routing_matches_the_recorded_stage(model_flow):
    """Expert routing: the tokens the model sends to the action expert are the golden moe_token_types."""
    case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    layout = model_flow.token_layout(inputs_flow(case), torch.float32)
    routed = torch.zeros_like(case["moe_token_types"])
    routed.scatter_(1, layout.action_index, True)
    assert torch.equal(routed, case["moe_token_types"])


def test_flow_bf16_model_tracks_the_bf16_reference():
    model = load_model(GOLDEN / "wall_oss_flow" / "checkpoint", dtype=torch.bfloat16)[0]
    case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    out = model.sample_actions(inputs_flow(case), noise=case["noise"])
    used = case["policy_chunk_bf16"].shape[-1]
    assert out.dtype == torch.float32
    assert max_diff(out[..., :used], case["policy_chunk_bf16"]) <= 0.1


def test_cached_and_recompute_agree_with_left_padding_and_random_noise(model_05):
    case = load_file(GOLDEN / "wall_oss_05" / "b2_leftpad.safetensors")
    noise = torch.randn(case["initial_noise"].shape, generator=torch.Generator().manual_seed(7))
    kwargs = dict(noise=noise, prompt_embeds=case["decoder_inputs_embeds_step0"])
    cached = model_05.sample_actions(inputs_05(case), use_prefix_cache=True, **kwargs)
    full = model_05.sample_actions(inputs_05(case), use_prefix_cache=False, **kwargs)
    assert max_diff(cached, full) <= TOL


def test_generator_makes_noise_reproducible(model_flow):
    case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    a = model_flow.sample_actions(inputs_flow(case), generator=torch.Generator().manual_seed(3))
    b = model_flow.sample_actions(inputs_flow(case), generator=torch.Generator().manual_seed(3))
    c = model_flow.sample_actions(inputs_flow(case), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("generation", ["wall_oss_05", "wall_oss_flow"])
def test_tokens_after_the_action_block_do_not_change_the_actions(model_05, model_flow, generation):
    """Prompt tokens placed after the actions are later in the causal order: both modes ignore them."""
    model = model_05 if generation == "wall_oss_05" else model_flow
    case = load_file(GOLDEN / generation / "b1.safetensors")
    inputs = inputs_05(case) if generation == "wall_oss_05" else inputs_flow(case)
    noise = case["initial_noise"] if generation == "wall_oss_05" else case["noise"]
    expected = case["action_normalized"] if generation == "wall_oss_05" else case["predict_action"]
    tail = 3
    last = inputs.position_ids[:, :, -1:]
    extended = ModelInputs(
        input_ids=torch.cat([inputs.input_ids, torch.full((1, tail), model.config.token_ids.pad)], dim=1),
        attention_mask=torch.cat([inputs.attention_mask, torch.ones(1, tail, dtype=torch.long)], dim=1),
        position_ids=torch.cat([inputs.position_ids, last + torch.arange(1, tail + 1)], dim=2),
        dof_mask=inputs.dof_mask, pixel_values=inputs.pixel_values, image_grid_thw=inputs.image_grid_thw,
        proprioception=inputs.proprioception, agent_pos_mask=inputs.agent_pos_mask)
    for use_prefix_cache in (True, False):
        out = model.sample_actions(extended, noise=noise, use_prefix_cache=use_prefix_cache)
        assert max_diff(out, expected) <= TOL


def test_bad_inputs_are_clear_errors(model_05, model_flow):
    case = load_file(GOLDEN / "wall_oss_05" / "b1.safetensors")
    good = inputs_05(case)
    short = ModelInputs(**{**good.__dict__, "input_ids": good.input_ids[:, :-1],
                           "attention_mask": good.attention_mask[:, :-1],
                           "position_ids": good.position_ids[:, :, :-1]})
    with pytest.raises(InputError, match="exactly 32 <\\|action\\|> tokens"):
        model_05.sample_actions(short)
    with pytest.raises(InputError, match="pixel_values"):
        model_05.sample_actions(ModelInputs(**{**good.__dict__, "pixel_values": None}))
    with pytest.raises(InputError, match="dof_mask"):
        model_05.sample_actions(ModelInputs(**{**good.__dict__, "dof_mask": good.dof_mask[..., :5]}))
    with pytest.raises(InputError, match="noise"):
        model_05.sample_actions(good, noise=torch.zeros(1, 32, 7))
    flow_case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    with pytest.raises(InputError, match="proprioception"):
        model_flow.sample_actions(ModelInputs(**{**inputs_flow(flow_case).__dict__, "proprioception": None}))


def test_static_action_step_with_padded_cache_matches_the_cached_step(model_05):
    """The fixed-buffer step that CUDA graphs replay: a cache padded to its capacity changes nothing."""
    from wall_oss_core.model.modeling import StaticActionStep

    case = load_file(GOLDEN / "wall_oss_05" / "b2_leftpad.safetensors")
    inputs = inputs_05(case)
    layout = model_05.token_layout(inputs, torch.float32)
    prompt = torch.gather(case["decoder_inputs_embeds_step0"], 1,
                          layout.prompt_index[..., None].expand(-1, -1, model_05.config.hidden_size))
    with torch.no_grad():
        cache, _ = model_05.encode_prompt(prompt, layout, action_slots=model_05.config.action.chunk_size)
        step = StaticActionStep(model_05, batch=2, capacity=layout.prompt_index.shape[1] + 37)
        step.load(layout, cache, inputs.dof_mask)
        for x_t, t in zip(case["x_t_all_steps"][:3], case["times"][:3]):
            expected, _ = model_05.action_velocity(x_t, t.expand(2), inputs.dof_mask, layout.action_cos_sin,
                                                   layout.action_mask, cache)
            velocity, _ = step(x_t, t.expand(2))
            assert max_diff(velocity, expected) <= TOL
    with pytest.raises(ValueError, match="CUDA"):
        model_05.sample_actions(inputs, prompt_embeds=case["decoder_inputs_embeds_step0"], use_cuda_graph=True)


@pytest.mark.parametrize("use_prefix_cache", [True, False], ids=["cached", "recompute"])
def test_flow_batch_with_left_padding_reproduces_the_single_sample(model_flow, use_prefix_cache):
    """Row 0: the golden prompt plus 3 trailing tokens; row 1: the same prompt left-padded by 3."""
    case = load_file(GOLDEN / "wall_oss_flow" / "b1.safetensors")
    single = inputs_flow(case)
    pad, n = model_flow.config.token_ids.pad, 3
    ids, pos = single.input_ids[0], single.position_ids[:, 0]
    input_ids = torch.stack([torch.cat([ids, torch.full((n,), pad)]), torch.cat([torch.full((n,), pad), ids])])
    attention_mask = torch.stack([torch.ones(ids.shape[0] + n, dtype=torch.long),
                                  torch.cat([torch.zeros(n, dtype=torch.long), torch.ones_like(ids)])])
    trailing = pos[:, -1:] + torch.arange(1, n + 1)
    position_ids = torch.stack([torch.cat([pos, trailing], dim=1),
                                torch.cat([torch.ones(3, n, dtype=torch.long), pos], dim=1)], dim=1)
    batch = ModelInputs(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        dof_mask=single.dof_mask.expand(2, -1, -1), pixel_values=torch.cat([single.pixel_values] * 2),
        image_grid_thw=torch.cat([single.image_grid_thw] * 2),
        proprioception=single.proprioception.expand(2, -1, -1), agent_pos_mask=single.agent_pos_mask.expand(2, -1, -1))
    out = model_flow.sample_actions(batch, noise=case["noise"].expand(2, -1, -1), use_prefix_cache=use_prefix_cache)
    assert max_diff(out, case["predict_action"].expand(2, -1, -1)) <= TOL
