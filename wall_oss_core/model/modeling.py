"""Wall-OSS policy model: Qwen2.5-VL vision tower + Mixture-of-Transformers decoder + flow-matching head.

Read top to bottom: inputs, small building blocks (RMSNorm, mRoPE, SwiGLU), the two decoder-layer
flavours (0.5: everything per expert; flow: shared attention, per-expert MLP), the action embedder,
and `WallOssModel`, whose `sample_actions` integrates the flow with 10 Euler steps.

The decoder always sees two token streams: the *prompt* (every non-action token, expert 0) and the
*action* block (the H `<|action|>` tokens, expert 1).  Attention is joint over both, with a mask that
reproduces the reference's full-sequence mask in the original token order.  Because no prompt token
that precedes the action block ever attends to an action token, the prompt's keys/values are the same
at every flow step; `use_prefix_cache=True` computes them once and runs only the action stream per
step, `use_prefix_cache=False` recomputes the whole sequence every step (the reference behaviour).
Prompt tokens placed after the action block cannot influence the actions in either generation (they
are later in a causal order), so the cached path simply never lets actions see them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import WallOssConfig
from .flow_time import inference_times


class InputError(ValueError):
    """Model inputs with the wrong shapes or token layout."""


# ==================================================================== inputs

@dataclass
class ModelInputs:
    """Already-prepared tensors for one batch (the output of the preprocessing pipeline)."""

    input_ids: torch.Tensor  # [B, S] long, left padded
    attention_mask: torch.Tensor  # [B, S] long, 1 = real token, 0 = left pad
    position_ids: torch.Tensor  # [3, B, S] long, mRoPE (t, h, w) indices
    dof_mask: torch.Tensor | None = None  # [B, H, A] bool/float, 1 where the action dimension is used (actions)
    pixel_values: torch.Tensor | None = None  # [N_patches, C*T*P*P] float, all images of the batch
    image_grid_thw: torch.Tensor | None = None  # [n_images, 3] long
    proprioception: torch.Tensor | None = None  # flow: [B, D] (or [B, 1, D]) normalized state
    agent_pos_mask: torch.Tensor | None = None  # flow: [B, D] (or [B, 1, D]) 1 where the state is used

    def to(self, device: torch.device | str) -> ModelInputs:
        return ModelInputs(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                              for k, v in self.__dict__.items()})


@dataclass
class SamplingTrace:
    """Intermediate tensors of one `sample_actions` call, filled when passed in (for golden tests)."""

    vision_embeds: torch.Tensor | None = None  # [N_image_tokens, D]
    inputs_embeds_step0: torch.Tensor | None = None  # [B, S, D] decoder input at the first flow step
    decoder_output_step0: torch.Tensor | None = None  # [B, S, D] after the final norm(s), first step
    times: torch.Tensor | None = None  # [N + 1]
    velocities: list[torch.Tensor] = field(default_factory=list)  # N x [B, H, A]
    x_t: list[torch.Tensor] = field(default_factory=list)  # N + 1 x [B, H, A]


# ==================================================================== building blocks

class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def mrope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, section: tuple[int, int, int],
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Multimodal RoPE: frequency band i of the head takes its angle from axis (t, h, w)[band group].

    position_ids [3, B, T] -> cos, sin [B, 1, T, head_dim] (broadcast over heads).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device,
                                             dtype=torch.float32) / head_dim))
    angles = position_ids.float()[..., None] * inv_freq  # [3, B, T, hd/2]
    emb = torch.cat([angles, angles], dim=-1)  # [3, B, T, hd]
    bands = torch.split(emb, list(section) * 2, dim=-1)
    emb = torch.cat([band[i % 3] for i, band in enumerate(bands)], dim=-1)  # [B, T, hd]
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class FusedSwiGLU(nn.Module):
    """0.5 expert MLP: one `gate_up_proj` ([gate; up]) and `down_proj`, no biases."""

    def __init__(self, width: int, intermediate: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(width, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class SwiGLU(nn.Module):
    """Flow expert MLP: separate gate/up/down projections, no biases."""

    def __init__(self, width: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, intermediate, bias=False)
        self.up_proj = nn.Linear(width, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ExpertMLPs(nn.Module):
    """Holds the per-expert MLPs under the checkpoint name `moe.experts.{e}`."""

    def __init__(self, experts: list[nn.Module]):
        super().__init__()
        self.experts = nn.ModuleList(experts)


# ==================================================================== decoder layers
# Both flavours expose the same two halves around the joint attention:
#   qkv(h, expert) -> q [B,Hq,T,hd], k, v [B,Hkv,T,hd]  (input norm + projections, before RoPE)
#   finish(h, attn, expert) -> h                        (output projection, residual, post norm, MLP)

class MoTAttention(nn.Module):
    """0.5 attention weights: one fused qkv (with bias) and one o_proj (no bias) per expert width."""

    def __init__(self, config: WallOssConfig):
        super().__init__()
        t = config.text
        qkv_out = (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim
        self.qkv_proj_experts = nn.ModuleList(
            nn.Linear(e.hidden_size, qkv_out, bias=True) for e in config.experts)
        self.o_proj_experts = nn.ModuleList(
            nn.Linear(t.num_attention_heads * t.head_dim, e.hidden_size, bias=False) for e in config.experts)


class MoTDecoderLayer(nn.Module):
    """Wall-OSS-0.5 layer: expert e reads and writes the first `experts[e].hidden_size` channels."""

    def __init__(self, config: WallOssConfig):
        super().__init__()
        t = config.text
        self.split = (t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim,
                      t.num_key_value_heads * t.head_dim)
        self.head_dim = t.head_dim
        self.input_layernorms = nn.ModuleList(RMSNorm(e.hidden_size, t.rms_norm_eps) for e in config.experts)
        self.post_attention_layernorms = nn.ModuleList(
            RMSNorm(e.hidden_size, t.rms_norm_eps) for e in config.experts)
        self.self_attn = MoTAttention(config)
        self.moe = ExpertMLPs([FusedSwiGLU(e.hidden_size, e.intermediate_size) for e in config.experts])

    def qkv(self, h: torch.Tensor, expert: int):
        x = self.input_layernorms[expert](h)
        q, k, v = self.self_attn.qkv_proj_experts[expert](x).split(self.split, dim=-1)
        return (_heads(q, self.head_dim), _heads(k, self.head_dim), _heads(v, self.head_dim))

    def finish(self, h: torch.Tensor, attn: torch.Tensor, expert: int) -> torch.Tensor:
        h = h + self.self_attn.o_proj_experts[expert](attn)
        return h + self.moe.experts[expert](self.post_attention_layernorms[expert](h))


class SharedAttention(nn.Module):
    """Flow attention weights, shared by both experts: q/k/v with bias, o without."""

    def __init__(self, config: WallOssConfig):
        super().__init__()
        t = config.text
        self.q_proj = nn.Linear(t.hidden_size, t.num_attention_heads * t.head_dim, bias=True)
        self.k_proj = nn.Linear(t.hidden_size, t.num_key_value_heads * t.head_dim, bias=True)
        self.v_proj = nn.Linear(t.hidden_size, t.num_key_value_heads * t.head_dim, bias=True)
        self.o_proj = nn.Linear(t.num_attention_heads * t.head_dim, t.hidden_size, bias=False)


class FlowDecoderLayer(nn.Module):
    """Wall-OSS-flow layer: shared norms and attention; only the MLP depends on the expert."""

    def __init__(self, config: WallOssConfig):
        super().__init__()
        t = config.text
        self.head_dim = t.head_dim
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.self_attn = SharedAttention(config)
        self.moe = ExpertMLPs([SwiGLU(e.hidden_size, e.intermediate_size) for e in config.experts])

    def qkv(self, h: torch.Tensor, expert: int):
        x = self.input_layernorm(h)
        a = self.self_attn
        return (_heads(a.q_proj(x), self.head_dim), _heads(a.k_proj(x), self.head_dim),
                _heads(a.v_proj(x), self.head_dim))

    def finish(self, h: torch.Tensor, attn: torch.Tensor, expert: int) -> torch.Tensor:
        h = h + self.self_attn.o_proj(attn)
        return h + self.moe.experts[expert](self.post_attention_layernorm(h))


def _with_slots(x: torch.Tensor, slots: int) -> torch.Tensor:
    """x [B, H, T, hd] followed by `slots` zeroed positions along T."""
    return torch.cat([x, x.new_zeros(*x.shape[:2], slots, x.shape[3])], dim=2) if slots else x


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, -1, head_dim).transpose(1, 2)


class Decoder(nn.Module):
    """Token embeddings, layers and final norm(s) under the checkpoint prefix `model.`."""

    def __init__(self, config: WallOssConfig):
        super().__init__()
        t = config.text
        self.embed_tokens = nn.Embedding(t.vocab_size, t.hidden_size)
        if config.generation == "wall_oss_05":
            self.layers = nn.ModuleList(MoTDecoderLayer(config) for _ in range(t.num_hidden_layers))
            self.norms = nn.ModuleList(RMSNorm(e.hidden_size, t.rms_norm_eps) for e in config.experts)
        else:
            self.layers = nn.ModuleList(FlowDecoderLayer(config) for _ in range(t.num_hidden_layers))
            self.norm = RMSNorm(t.hidden_size, t.rms_norm_eps)

    def final_norm(self, h: torch.Tensor, expert: int) -> torch.Tensor:
        return self.norms[expert](h) if hasattr(self, "norms") else self.norm(h)


# ==================================================================== action head

def sinusoidal_time_embedding(t: torch.Tensor, width: int) -> torch.Tensor:
    """Raw-t sinusoidal embedding [sin, cos], freq_i = exp(-i ln(1e4) / (half - 1)); t [B] -> [B, width]."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ActionPreprocessor(nn.Module):
    """Action embedder and velocity readout (checkpoint prefix `action_preprocessor.`), no biases.

    embed: h = w3(silu(w2([w1([x_t, dof_mask]), temb(t)])));  readout: v = action_proj_back(h) in fp32.
    Flow checkpoints also hold `propri_proj`, which turns [state, state_mask] into the <|propri|> embedding.
    """

    def __init__(self, config: WallOssConfig):
        super().__init__()
        width, a = config.action.hidden_size, config.action.action_dim
        self.width = width
        self.w1 = nn.Linear(2 * a, width, bias=False)
        self.w2 = nn.Linear(2 * width, width, bias=False)
        self.w3 = nn.Linear(width, width, bias=False)
        self.action_proj_back = nn.Linear(width, a, bias=False)
        if config.generation == "wall_oss_flow":
            self.propri_proj = nn.Linear(2 * config.action.state_dim, config.text.hidden_size, bias=False)

    def embed(self, x_t: torch.Tensor, t: torch.Tensor, dof_mask: torch.Tensor) -> torch.Tensor:
        dtype = self.w1.weight.dtype
        a = self.w1(torch.cat([x_t, dof_mask.to(x_t.dtype)], dim=-1).to(dtype))
        temb = sinusoidal_time_embedding(t, self.width).to(dtype)[:, None].expand_as(a)
        return self.w3(F.silu(self.w2(torch.cat([a, temb], dim=-1))))

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h.float(), self.action_proj_back.weight.float())

    def embed_proprioception(self, state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.propri_proj.weight
        return F.linear(torch.cat([state, mask.to(state.dtype)], dim=-1).to(w.dtype), w)


# ==================================================================== vision attention

VISION_ATTENTION = "flash_windows_sdpa"


def windowed_vision_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                              cu_seq_lens_q=None, **kwargs):
    """Attention of transformers' Qwen2.5-VL vision tower, one SDPA call per run of equal-length windows.

    The tower attends within windows (and within whole images in its full-attention blocks), delimited by
    `cu_seqlens`.  Its stock SDPA path makes one call per window (about 50 per layer for three 448x448
    views); stacking equal-length neighbours into a batch gives the same numbers in one or two calls.
    transformers hands `cu_seqlens` only to attention functions whose name contains "flash", hence the
    registered name (set on the tower's config after construction).
    query/key/value [1, heads, S, head_dim] -> output [1, S, heads, head_dim].
    """
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    outputs, start, i = [], 0, 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        n, length = j - i, lengths[i]
        span = slice(start, start + n * length)

        def windows(x, span=span, n=n, length=length):
            return x[0, :, span].unflatten(1, (n, length)).transpose(0, 1)  # [n, heads, length, hd]

        out = F.scaled_dot_product_attention(windows(query), windows(key), windows(value), scale=scaling)
        outputs.append(out.permute(0, 2, 1, 3).flatten(0, 1))  # [n * length, heads, hd]
        start, i = start + n * length, j
    return torch.cat(outputs, dim=0)[None], None


def _register_vision_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(VISION_ATTENTION, windowed_vision_attention)


# ==================================================================== the model

GRAPH_PROMPT_BUCKET = 128  # prompt-cache capacity step of the captured action-step graphs


@dataclass
class TokenLayout:
    """Where the prompt and action tokens sit, per batch row (every row has the same counts)."""

    prompt_index: torch.Tensor  # [B, P] original positions of the prompt (non-action) tokens
    action_index: torch.Tensor  # [B, H] original positions of the action tokens
    prompt_valid: torch.Tensor  # [B, P] bool, False on left padding
    prompt_cos_sin: tuple[torch.Tensor, torch.Tensor]
    action_cos_sin: tuple[torch.Tensor, torch.Tensor]
    prompt_mask: torch.Tensor  # [B, 1, P, P] bool, prompt queries over prompt keys
    action_mask: torch.Tensor  # [B, 1, H, P + H] bool, action queries over [prompt, action] keys
    prompt_action_mask: torch.Tensor  # [B, 1, P, H] bool, prompt queries over action keys (full recompute)


class WallOssModel(nn.Module):
    def __init__(self, config: WallOssConfig):
        super().__init__()
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        self.config = config
        vision_config = config.vision_transformers_config()
        vision_config._attn_implementation = "sdpa"
        self.visual = Qwen2_5_VisionTransformerPretrainedModel(vision_config)
        # switched after construction: transformers' init-time check would look for a flash-attn package
        _register_vision_attention()
        self.visual.config._attn_implementation = VISION_ATTENTION
        self.model = Decoder(config)
        self.action_preprocessor = ActionPreprocessor(config)
        self._step_graphs: dict[tuple[int, int], StaticActionStep] = {}

    # ---------------------------------------------------------------- prompt embedding
    def vision_embeddings(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """Merged image-token embeddings [N_image_tokens, D] from transformers' Qwen2.5-VL vision tower."""
        dtype = self.visual.patch_embed.proj.weight.dtype
        out = self.visual(pixel_values.to(dtype), grid_thw=image_grid_thw)
        return out.pooler_output

    def embed_prompt(self, inputs: ModelInputs, trace: SamplingTrace | None = None) -> torch.Tensor:
        """Token embeddings with image embeddings at <|image_pad|> and (flow) the projected state at <|propri|>.

        The rows of the action tokens are left as their token embeddings; the flow steps replace them.
        """
        embeds = self.embed_tokens_and_images(inputs, trace)
        if self.config.generation == "wall_oss_flow":
            embeds = self._insert_proprioception(inputs, embeds)
        return embeds

    def embed_tokens_and_images(self, inputs: ModelInputs, trace: SamplingTrace | None = None) -> torch.Tensor:
        """Token embeddings [B, S, D] with the image embeddings scattered into the <|image_pad|> slots."""
        ids = inputs.input_ids
        embeds = self.model.embed_tokens(ids)
        image_slots = ids == self.config.token_ids.image_pad
        n_slots = int(image_slots.sum())
        if n_slots:
            if inputs.pixel_values is None or inputs.image_grid_thw is None:
                raise InputError(f"input_ids hold {n_slots} <|image_pad|> tokens but pixel_values/image_grid_thw "
                                 "are missing")
            image_embeds = self.vision_embeddings(inputs.pixel_values, inputs.image_grid_thw)
            if trace is not None:
                trace.vision_embeds = image_embeds
            if image_embeds.shape[0] != n_slots:
                raise InputError(f"{n_slots} <|image_pad|> tokens but the images give {image_embeds.shape[0]} "
                                 "embeddings (check image_grid_thw and the prompt)")
            embeds = embeds.masked_scatter(image_slots[..., None], image_embeds.to(embeds.dtype))
        return embeds

    def _insert_proprioception(self, inputs: ModelInputs, embeds: torch.Tensor) -> torch.Tensor:
        slots = inputs.input_ids == self.config.token_ids.propri
        b = inputs.input_ids.shape[0]
        if inputs.proprioception is None or inputs.agent_pos_mask is None:
            raise InputError("flow checkpoints need proprioception and agent_pos_mask")
        state = inputs.proprioception.reshape(b, -1)
        mask = inputs.agent_pos_mask.reshape(b, -1)
        if state.shape[1] != self.config.action.state_dim or mask.shape != state.shape:
            raise InputError(f"proprioception/agent_pos_mask must be [B, {self.config.action.state_dim}], got "
                             f"{tuple(inputs.proprioception.shape)} / {tuple(inputs.agent_pos_mask.shape)}")
        if not torch.equal(slots.sum(1), torch.ones_like(slots.sum(1))):
            raise InputError("each row must hold exactly one <|propri|> token")
        projected = self.action_preprocessor.embed_proprioception(state, mask).to(embeds.dtype)
        return embeds.masked_scatter(slots[..., None], projected)

    # ---------------------------------------------------------------- token layout and masks
    def token_layout(self, inputs: ModelInputs, dtype: torch.dtype) -> TokenLayout:
        """Split positions, mRoPE tables and attention masks of the prompt and action streams (validated)."""
        ids, valid = inputs.input_ids, inputs.attention_mask.bool()
        b, s = ids.shape
        h = self.config.action.chunk_size
        if inputs.position_ids.shape != (3, b, s) or valid.shape != (b, s):
            raise InputError(f"position_ids must be [3, {b}, {s}] and attention_mask [{b}, {s}], got "
                             f"{tuple(inputs.position_ids.shape)} / {tuple(inputs.attention_mask.shape)}")
        is_action = (ids == self.config.token_ids.action) & valid
        counts = is_action.sum(1)
        if not bool((counts == h).all()):
            raise InputError(f"every row needs exactly {h} <|action|> tokens (chunk_size), got {counts.tolist()}")
        order = torch.arange(s, device=ids.device).expand(b, s)
        action_index = order[is_action].view(b, h)
        if not bool((action_index[:, -1] - action_index[:, 0] == h - 1).all()):
            raise InputError("the <|action|> tokens of a row must be contiguous")
        prompt_index = order[~is_action].view(b, s - h)
        prompt_valid = torch.gather(valid, 1, prompt_index)

        def rope(index):
            t = self.config.text
            positions = torch.gather(inputs.position_ids, 2, index[None].expand(3, -1, -1))
            return mrope_cos_sin(positions, t.head_dim, t.rope_theta, t.mrope_section, dtype)

        def causal(query_index, key_index):
            return key_index[:, None, :] <= query_index[:, :, None]

        # Visibility in the original order: causal, never a padding key; flow additionally lets the
        # action block attend to itself bidirectionally.  Padding queries see only themselves, which
        # keeps their (unused) rows finite.
        prompt_mask = causal(prompt_index, prompt_index) & prompt_valid[:, None, :]
        prompt_mask |= torch.eye(s - h, dtype=torch.bool, device=ids.device)
        action_over_prompt = causal(action_index, prompt_index) & prompt_valid[:, None, :]
        if self.config.generation == "wall_oss_flow":
            action_over_action = torch.ones(b, h, h, dtype=torch.bool, device=ids.device)
        else:
            action_over_action = causal(action_index, action_index)
        prompt_over_action = causal(prompt_index, action_index) & prompt_valid[:, :, None]
        return TokenLayout(
            prompt_index=prompt_index,
            action_index=action_index,
            prompt_valid=prompt_valid,
            prompt_cos_sin=rope(prompt_index),
            action_cos_sin=rope(action_index),
            prompt_mask=prompt_mask[:, None],
            action_mask=torch.cat([action_over_prompt, action_over_action], dim=-1)[:, None],
            prompt_action_mask=prompt_over_action[:, None],
        )

    # ---------------------------------------------------------------- decoder passes
    def _attend(self, q, k, v, mask):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        b, _, t, _ = out.shape
        return out.transpose(1, 2).reshape(b, t, -1)

    def _rope_qkv(self, layer, h, expert, cos_sin):
        q, k, v = layer.qkv(h, expert)
        cos, sin = cos_sin
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def encode_prompt(self, prompt_embeds: torch.Tensor, layout: TokenLayout, with_output: bool = False,
                      action_slots: int = 0) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
        """Run the prompt stream alone; returns every layer's (k, v) and, optionally, the normed output.

        Each layer's keys/values get `action_slots` zeroed slots after the prompt's, which the cached flow steps
        fill in place (no per-step concatenation of the whole cache).  The prompt's last-layer attention and
        MLP only matter for `with_output`: the actions read the prompt's keys/values, never its outputs.
        """
        h, cache = prompt_embeds, []
        last = len(self.model.layers) - 1
        for i, layer in enumerate(self.model.layers):
            q, k, v = self._rope_qkv(layer, h, 0, layout.prompt_cos_sin)
            cache.append((_with_slots(k, action_slots), _with_slots(v, action_slots)))
            if i < last or with_output:
                h = layer.finish(h, self._attend(q, k, v, layout.prompt_mask), 0)
        return cache, (self.model.final_norm(h, 0) if with_output else None)

    def decode_actions_cached(self, action_embeds: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor],
                              mask: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Run only the action stream against the cached prompt keys/values; returns the normed output.

        `cache` holds per layer [B, Hkv, K + H, hd] buffers: K prompt keys, then H slots that receive this
        step's action keys/values (`encode_prompt(..., action_slots=H)`).  `mask` [B, 1, H, K + H] covers them.
        """
        h = action_embeds
        n = action_embeds.shape[1]
        for layer, (keys, values) in zip(self.model.layers, cache):
            q, k, v = self._rope_qkv(layer, h, 1, cos_sin)
            keys[:, :, -n:].copy_(k)
            values[:, :, -n:].copy_(v)
            h = layer.finish(h, self._attend(q, keys, values, mask), 1)
        return self.model.final_norm(h, 1)

    def action_velocity(self, x_t: torch.Tensor, t: torch.Tensor, dof_mask: torch.Tensor,
                        cos_sin: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor,
                        cache: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One cached flow step: (velocity [B, H, A] fp32, action decoder output)."""
        action_out = self.decode_actions_cached(self.action_preprocessor.embed(x_t, t, dof_mask), cos_sin, mask,
                                                cache)
        return self.action_preprocessor.readout(action_out), action_out

    def decode_full(self, prompt_embeds: torch.Tensor, action_embeds: torch.Tensor,
                    layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference pass over the whole sequence: both streams every layer, joint attention."""
        p = prompt_embeds.shape[1]
        full_mask = torch.cat([
            torch.cat([layout.prompt_mask, layout.prompt_action_mask], dim=-1),
            layout.action_mask,
        ], dim=2)
        hp, ha = prompt_embeds, action_embeds
        for layer in self.model.layers:
            qp, kp, vp = self._rope_qkv(layer, hp, 0, layout.prompt_cos_sin)
            qa, ka, va = self._rope_qkv(layer, ha, 1, layout.action_cos_sin)
            attn = self._attend(torch.cat([qp, qa], dim=2), torch.cat([kp, ka], dim=2),
                                torch.cat([vp, va], dim=2), full_mask)
            hp, ha = layer.finish(hp, attn[:, :p], 0), layer.finish(ha, attn[:, p:], 1)
        return self.model.final_norm(hp, 0), self.model.final_norm(ha, 1)

    # ---------------------------------------------------------------- text (vision-language expert only)
    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 vocabulary logits; the LM head is tied to the token embeddings (not stored in checkpoints)."""
        weight = self.model.embed_tokens.weight
        return F.linear(hidden[..., : weight.shape[1]].to(weight.dtype), weight).float()

    def decode_text(self, embeds: torch.Tensor, position_ids: torch.Tensor, key_valid: torch.Tensor,
                    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run T new tokens, all on the vision-language expert, after the K tokens held in `cache`.

        embeds [B, T, D]; position_ids [3, B, T] (mRoPE); key_valid [B, K + T] bool, False on left padding.
        Attention is causal over cache + new tokens and never sees padding keys (a padding query sees
        itself, keeping its unused row finite).  Returns (final-normed hidden [B, T, D], cache of K + T keys).
        """
        b, t, _ = embeds.shape
        past = cache[0][0].shape[2] if cache else 0
        if position_ids.shape != (3, b, t) or key_valid.shape != (b, past + t):
            raise InputError(f"position_ids must be [3, {b}, {t}] and key_valid [{b}, {past + t}], got "
                             f"{tuple(position_ids.shape)} / {tuple(key_valid.shape)}")
        text = self.config.text
        dtype = self.model.embed_tokens.weight.dtype
        cos_sin = mrope_cos_sin(position_ids, text.head_dim, text.rope_theta, text.mrope_section, dtype)
        query_index = torch.arange(past, past + t, device=embeds.device)
        key_index = torch.arange(past + t, device=embeds.device)
        mask = (key_index[None] <= query_index[:, None])[None] & key_valid.bool()[:, None, :]
        mask |= (key_index[None] == query_index[:, None])[None]
        h, new_cache = embeds.to(dtype), []
        for i, layer in enumerate(self.model.layers):
            q, k, v = self._rope_qkv(layer, h, 0, cos_sin)
            if cache:
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
            new_cache.append((k, v))
            h = layer.finish(h, self._attend(q, k, v, mask[:, None]), 0)
        return self.model.final_norm(h, 0), new_cache

    # ---------------------------------------------------------------- flow sampling
    def _check_action_inputs(self, inputs: ModelInputs, noise: torch.Tensor | None) -> tuple[int, int, int]:
        b = inputs.input_ids.shape[0]
        h, a = self.config.action.chunk_size, self.config.action.action_dim
        if inputs.dof_mask is None or inputs.dof_mask.shape != (b, h, a):
            got = None if inputs.dof_mask is None else tuple(inputs.dof_mask.shape)
            raise InputError(f"dof_mask must be [{b}, {h}, {a}], got {got}")
        if noise is not None and noise.shape != (b, h, a):
            raise InputError(f"noise must be [{b}, {h}, {a}], got {tuple(noise.shape)}")
        return b, h, a

    @torch.no_grad()
    def sample_actions(self, inputs: ModelInputs, noise: torch.Tensor | None = None, use_prefix_cache: bool = True,
                       generator: torch.Generator | None = None, trace: SamplingTrace | None = None,
                       prompt_embeds: torch.Tensor | None = None, use_cuda_graph: bool = False) -> torch.Tensor:
        """Normalized action chunk [B, H, A] (fp32) by Euler integration of the flow from t=0 (noise).

        `use_cuda_graph` (CUDA, cached mode) replays each flow step's action pass as one captured graph,
        which removes the per-kernel launch cost that dominates a 32-token pass; graphs are kept per
        (batch size, prompt length rounded up to 128).
        `prompt_embeds` [B, S, D] skips `embed_prompt` (vision tower and token embeddings), e.g. to start from
        a recorded decoder input; its action rows are ignored.
        """
        b, h, a = self._check_action_inputs(inputs, noise)
        if use_cuda_graph and not use_prefix_cache:
            raise ValueError("use_cuda_graph needs use_prefix_cache=True")
        device = inputs.input_ids.device
        dtype = self.model.embed_tokens.weight.dtype
        layout = self.token_layout(inputs, dtype)
        if prompt_embeds is None:
            prompt_embeds = self.embed_prompt(inputs, trace)
        prompt_stream = torch.gather(prompt_embeds.to(dtype), 1,
                                     layout.prompt_index[..., None].expand(-1, -1, prompt_embeds.shape[-1]))
        if noise is None:
            noise = torch.randn(b, h, a, generator=generator, device=device, dtype=torch.float32)
        x_t = noise.to(device=device, dtype=torch.float32)
        steps = self.config.sampler.num_steps
        times = inference_times(self.config.sampler, device)
        cache = prompt_out = step = None
        if use_prefix_cache:
            cache, prompt_out = self.encode_prompt(prompt_stream, layout, with_output=trace is not None,
                                                   action_slots=h)
            if use_cuda_graph:
                step = self._graphed_step(b, layout.prompt_index.shape[1])
                step.load(layout, cache, inputs.dof_mask)
        if trace is not None:
            trace.times, trace.x_t = times, [x_t]
        for i in range(steps):
            t = times[i].expand(b)
            if step is not None:
                velocity, action_out = step(x_t, t)
            elif use_prefix_cache:
                velocity, action_out = self.action_velocity(x_t, t, inputs.dof_mask, layout.action_cos_sin,
                                                            layout.action_mask, cache)
            else:
                action_embeds = self.action_preprocessor.embed(x_t, t, inputs.dof_mask)
                prompt_out, action_out = self.decode_full(prompt_stream, action_embeds, layout)
                velocity = self.action_preprocessor.readout(action_out)
            if trace is not None and i == 0:
                action_embeds = self.action_preprocessor.embed(x_t, t, inputs.dof_mask)
                trace.inputs_embeds_step0 = self._scatter_streams(layout, prompt_stream, action_embeds)
                trace.decoder_output_step0 = self._scatter_streams(layout, prompt_out, action_out)
            x_t = x_t + (times[i + 1] - times[i]) * velocity
            if trace is not None:
                trace.velocities.append(velocity)
                trace.x_t.append(x_t)
        return x_t

    def _graphed_step(self, batch: int, prompt_len: int) -> StaticActionStep:
        """A captured CUDA graph of the action step for this batch size and prompt length bucket."""
        if self.model.embed_tokens.weight.device.type != "cuda":
            raise ValueError("use_cuda_graph needs the model on a CUDA device")
        capacity = -(-prompt_len // GRAPH_PROMPT_BUCKET) * GRAPH_PROMPT_BUCKET
        key = (batch, capacity)
        if key not in self._step_graphs:
            step = StaticActionStep(self, batch, capacity)
            step.capture()
            self._step_graphs[key] = step
        return self._step_graphs[key]

    def _scatter_streams(self, layout: TokenLayout, prompt: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Back to the original token order [B, S, D]; narrower action rows are zero-padded on the right."""
        b, p, d = prompt.shape
        h = action.shape[1]
        out = prompt.new_zeros(b, p + h, d)
        out.scatter_(1, layout.prompt_index[..., None].expand(-1, -1, d), prompt)
        padded = F.pad(action.to(prompt.dtype), (0, d - action.shape[-1]))
        out.scatter_(1, layout.action_index[..., None].expand(-1, -1, d), padded)
        return out


class StaticActionStep:
    """The cached action step over fixed buffers, so one CUDA graph serves every chunk.

    The prompt cache is copied into buffers of `capacity` prompt keys followed by the action slots; the
    unused prompt tail is masked out (and stays finite), so any prompt up to `capacity` tokens reuses the
    same graph.  Without `capture()` it runs
    eagerly, which is how the padding is checked on machines without a GPU.
    """

    def __init__(self, model: WallOssModel, batch: int, capacity: int):
        config, weight = model.config, model.model.embed_tokens.weight
        device, dtype = weight.device, weight.dtype
        h, a, t = config.action.chunk_size, config.action.action_dim, config.text
        self.model, self.capacity = model, capacity
        self.x_t = torch.zeros(batch, h, a, device=device)
        self.t = torch.zeros(batch, device=device)
        self.dof_mask = torch.zeros(batch, h, a, device=device)
        self.cos = torch.zeros(batch, 1, h, t.head_dim, device=device, dtype=dtype)
        self.sin = torch.zeros_like(self.cos)
        self.mask = torch.zeros(batch, 1, h, capacity + h, dtype=torch.bool, device=device)
        shape = (batch, t.num_key_value_heads, capacity + h, t.head_dim)  # prompt capacity, then action slots
        self.cache = [(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
                      for _ in range(t.num_hidden_layers)]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    def load(self, layout: TokenLayout, cache: list[tuple[torch.Tensor, torch.Tensor]], dof_mask: torch.Tensor) -> None:
        p = layout.prompt_index.shape[1]
        if p > self.capacity:
            raise ValueError(f"prompt of {p} tokens exceeds the step buffers' capacity {self.capacity}")
        for (static_k, static_v), (k, v) in zip(self.cache, cache):
            static_k[:, :, :p].copy_(k[:, :, :p])
            static_v[:, :, :p].copy_(v[:, :, :p])
        self.mask.zero_()
        self.mask[..., :p].copy_(layout.action_mask[..., :p])
        self.mask[..., self.capacity:].copy_(layout.action_mask[..., p:])
        self.cos.copy_(layout.action_cos_sin[0])
        self.sin.copy_(layout.action_cos_sin[1])
        self.dof_mask.copy_(dof_mask)

    def _run(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.action_velocity(self.x_t, self.t, self.dof_mask, (self.cos, self.sin), self.mask,
                                          self.cache)

    @torch.no_grad()
    def capture(self) -> None:
        """Record the step as a CUDA graph after warm-up runs on a side stream (as graph capture requires)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._run()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x_t.copy_(x_t)
        self.t.copy_(t)
        if self.graph is None:
            return self._run()
        self.graph.replay()
        velocity, action_out = self.outputs
        return velocity.clone(), action_out.clone()
