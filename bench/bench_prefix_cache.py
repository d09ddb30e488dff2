"""Chunk inference with the prefix cache vs full recompute, side by side on the same weights and noise.

Default: a mid-size random Wall-OSS-0.5 model on the CPU (512 wide, 8 layers), three 224x224 cameras,
32 actions, 10 flow steps.  Both modes encode the images once; "recompute" then reruns the decoder over
the whole sequence at every flow step (what the reference implementations do), "cached" runs the prompt
once and only the 32 action tokens per step.  Repetitions are interleaved so both modes see the same
machine load.  Last line: `prefix_cache_speedup=X.X`.

`--full-size --dtype bfloat16 --device cuda --image-size 448` builds the full-size 0.5 architecture with
random weights directly on the GPU and prints chunks/s and peak memory per mode, including the cached
mode with each flow step replayed as a CUDA graph; last line `full_size_chunk_hz=X.X` (fastest cached).
`--layers N` truncates the decoder and vision depth (smoke tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from wall_oss_core.model.configuration import (
    ActionHeadConfig,
    ExpertConfig,
    SamplerConfig,
    TextDecoderConfig,
    TokenIds,
    WallOssConfig,
    full_size_05_config,
)
from wall_oss_core.model.modeling import ModelInputs, WallOssModel

TEXT_TOKENS_BEFORE_IMAGES = 20  # system turn and "Observation:"
TEXT_TOKENS_PER_CAMERA = 4  # "front view: " etc.
TEXT_TOKENS_AFTER_IMAGES = 16 + 26 * 2 + 12  # instruction, 26 state bins with spaces, assistant turn


def mid_size_config() -> WallOssConfig:
    """Half-width copy of the full-size 0.5 proportions, small enough for a CPU run of a few seconds/chunk."""
    return WallOssConfig(
        generation="wall_oss_05",
        text=TextDecoderConfig(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                               num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-6,
                               rope_theta=1000000.0, mrope_section=(8, 12, 12)),
        vision={"depth": 4, "hidden_size": 256, "hidden_act": "silu", "intermediate_size": 684, "num_heads": 4,
                "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                "tokens_per_second": 2, "window_size": 112, "out_hidden_size": 512, "fullatt_block_indexes": [3]},
        experts=(ExpertConfig(512, 1408), ExpertConfig(256, 512)),
        action=ActionHeadConfig(action_dim=26, state_dim=26, chunk_size=32, hidden_size=256),
        sampler=SamplerConfig(num_steps=10, time_scale=0.999),
        token_ids=TokenIds(action=4001, propri=4000, image_pad=3998, video_pad=3999, vision_start=3995,
                           vision_end=3996, pad=3990),
    )


def truncated(config: WallOssConfig, layers: int) -> WallOssConfig:
    vision = dict(config.vision, depth=layers, fullatt_block_indexes=[layers - 1])
    text = dataclasses.replace(config.text, num_hidden_layers=layers)
    return dataclasses.replace(config, text=text, vision=vision)


def synthetic_inputs(config: WallOssConfig, cameras: int, image_size: int, batch: int,
                     device: torch.device) -> ModelInputs:
    """A prompt with the reference's token layout and mRoPE positions, random token ids and pixels."""
    gen = torch.Generator().manual_seed(1)
    ids = config.token_ids
    patch, merge = config.vision["patch_size"], config.vision["spatial_merge_size"]
    grid = image_size // patch
    merged = grid // merge

    def text(n):
        return torch.randint(0, ids.vision_start - 10, (n,), generator=gen).tolist()

    tokens, pos = [], []  # pos: (t, h, w) per token

    def add_text(token_ids):
        start = (max(max(p) for p in pos) + 1) if pos else 0
        for i, tok in enumerate(token_ids):
            tokens.append(tok)
            pos.append((start + i,) * 3)

    add_text(text(TEXT_TOKENS_BEFORE_IMAGES))
    for _ in range(cameras):
        add_text(text(TEXT_TOKENS_PER_CAMERA) + [ids.vision_start])
        offset = max(max(p) for p in pos) + 1
        for r in range(merged):
            for c in range(merged):
                tokens.append(ids.image_pad)
                pos.append((offset, offset + r, offset + c))
        add_text([ids.vision_end])
    add_text(text(TEXT_TOKENS_AFTER_IMAGES) + [ids.action] * config.action.chunk_size)

    seq = len(tokens)
    input_ids = torch.tensor(tokens).expand(batch, seq).contiguous()
    position_ids = torch.tensor(pos).T[:, None, :].expand(3, batch, seq).contiguous()
    n_patches = batch * cameras * grid * grid
    channels = config.vision.get("in_channels", 3) * config.vision["temporal_patch_size"] * patch * patch
    return ModelInputs(
        input_ids=input_ids,
        attention_mask=torch.ones(batch, seq, dtype=torch.long),
        position_ids=position_ids,
        dof_mask=torch.ones(batch, config.action.chunk_size, config.action.action_dim),
        pixel_values=torch.randn(n_patches, channels, generator=gen),
        image_grid_thw=torch.tensor([[1, grid, grid]] * (batch * cameras)),
    ).to(device)


def random_model(config: WallOssConfig, dtype: torch.dtype, device: torch.device) -> WallOssModel:
    """Random weights created directly on `device` (no host copy of a GPU model)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = WallOssModel(config)
    return model.to(dtype).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MODES = {  # name -> sample_actions options
    "cached": {"use_prefix_cache": True},
    "recompute": {"use_prefix_cache": False},
    "cached+graph": {"use_prefix_cache": True, "use_cuda_graph": True},
}


def timed_chunk(model, inputs, noise, mode: str, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """(seconds, peak MiB (0 off CUDA), actions) for one chunk."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    out = model.sample_actions(inputs, noise=noise, **MODES[mode])
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return seconds, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="full-size Wall-OSS-0.5 architecture")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads while measuring")
    parser.add_argument("--layers", type=int, default=None, help="truncate decoder/vision depth (smoke tests)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="skip the CUDA-graph mode on a GPU")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = full_size_05_config() if args.full_size else mid_size_config()
    if args.layers is not None:
        config = truncated(config, args.layers)
    model = random_model(config, dtype, device)
    inputs = synthetic_inputs(config, args.cameras, args.image_size, args.batch, device)
    noise = torch.randn(args.batch, config.action.chunk_size, config.action.action_dim,
                        generator=torch.Generator().manual_seed(2)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_image = int((inputs.input_ids[0] == config.token_ids.image_pad).sum())
    print(f"model: {'full-size' if args.full_size else 'mid-size'} wall_oss_05, {n_params / 1e6:.0f} M params, "
          f"{config.text.num_hidden_layers} layers, {args.dtype} on {device}, {torch.get_num_threads()} CPU threads")
    print(f"tokens per row: {inputs.input_ids.shape[1]} ({n_image} image, {config.action.chunk_size} action), "
          f"{args.cameras} cameras at {args.image_size}x{args.image_size}, batch {args.batch}, "
          f"{config.sampler.num_steps} flow steps")

    modes = ["cached", "recompute"]
    if device.type == "cuda" and not args.no_cuda_graph:
        try:  # capture once (kept by the model) before timing; a failed capture is reported, not fatal
            timed_chunk(model, inputs, noise, "cached+graph", device)
            modes.append("cached+graph")
        except RuntimeError as exc:
            print(f"CUDA graph capture failed, timing eager modes only: {exc}")
    results = {m: [] for m in modes}
    peaks = {m: 0.0 for m in modes}
    outputs = {}
    for mode in modes:  # warm-up (allocator, kernels)
        timed_chunk(model, inputs, noise, mode, device)
    for rep in range(args.repeats):
        for mode in (modes if rep % 2 == 0 else modes[::-1]):
            seconds, peak, out = timed_chunk(model, inputs, noise, mode, device)
            results[mode].append(seconds)
            peaks[mode] = max(peaks[mode], peak)
            outputs[mode] = out

    # fp32: the modes must agree to rounding; half precision rounds differently along the two paths,
    # so there the bound is relative to the action magnitude
    scale = outputs["recompute"].abs().max().item()
    tolerance = 1e-4 if dtype == torch.float32 else 0.1 * max(1.0, scale)
    diffs = {m: (outputs[m] - outputs["recompute"]).abs().max().item() for m in modes if m != "recompute"}
    for mode, diff in diffs.items():
        assert torch.isfinite(outputs[mode]).all(), f"{mode} sampling produced non-finite actions"
        assert diff <= tolerance, f"{mode} and recompute outputs differ by {diff} (> {tolerance})"

    encode = []
    for _ in range(args.repeats):  # the image/token encoding every mode does once per chunk
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            model.embed_prompt(inputs)
        synchronize(device)
        encode.append(time.perf_counter() - start)
    shared = statistics.median(encode)

    medians = {m: statistics.median(results[m]) for m in modes}
    print(f"{'mode':<13} {'median ms':>10} {'chunks/s':>9} {'peak MiB':>9} {'vs recompute':>13}")
    for mode in modes:
        peak = f"{peaks[mode]:.0f}" if device.type == "cuda" else "-"
        print(f"{mode:<13} {medians[mode] * 1e3:>10.1f} {1 / medians[mode]:>9.2f} {peak:>9} "
              f"{medians['recompute'] / medians[mode]:>12.2f}x")
    speedup = medians["recompute"] / medians["cached"]
    decoder_speedup = (medians["recompute"] - shared) / max(medians["cached"] - shared, 1e-9)
    print(f"shared vision + embedding: {shared * 1e3:.1f} ms; decoder-only speedup (eager cached) "
          f"{decoder_speedup:.2f}x")
    print("max |mode - recompute|: " + ", ".join(f"{m} {d:.2e}" for m, d in diffs.items())
          + f" (max |action| {scale:.2f})")
    if args.full_size:
        best = min((m for m in modes if m != "recompute"), key=medians.get)
        print(f"best mode: {best}")
        print(f"full_size_chunk_hz={1 / medians[best]:.1f}")
    else:
        print(f"prefix_cache_speedup={speedup:.1f}")


if __name__ == "__main__":
    main()
