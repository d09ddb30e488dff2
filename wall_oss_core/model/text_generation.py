"""Autoregressive text from the vision-language expert (VQA, captions, language subtasks).

Wall-OSS answers in text through its vision-language expert alone: every token, prompt and generated,
is routed to expert 0, and the next-token logits come from the LM head tied to the token embeddings.
Greedy (temperature 0) or temperature + top-p sampling, stopping at EOS, as the reference
`generate_text` of LeRobot `wall_oss_05` does.  The reference recomputes the whole sequence for every
token; here the prompt's keys/values are kept (KV cache) and each step runs one token, which is exactly
equivalent because attention is causal (`use_cache=False` keeps the recompute path for checking).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .modeling import InputError, ModelInputs, WallOssModel


@dataclass(frozen=True)
class TextSampling:
    """How to pick tokens: greedy when temperature is 0, else softmax(logits / T) restricted to top-p."""

    max_new_tokens: int = 100
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class GeneratedText:
    token_ids: torch.Tensor  # [B, N] long; rows that stopped early are filled with the pad id after EOS
    first_logits: torch.Tensor  # [B, V] fp32 logits of the first generated token


def next_token(logits: torch.Tensor, sampling: TextSampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, V] fp32 logits -> [B] token ids.  Top-p keeps the smallest prefix of the sorted distribution
    whose mass reaches p (the most likely token always stays)."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    probabilities = F.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_p, order = probabilities.sort(dim=-1, descending=True)
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(dim=-1) - sorted_p > sampling.top_p, 0.0)
        choice = torch.multinomial(sorted_p / sorted_p.sum(dim=-1, keepdim=True), 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_text(model: WallOssModel, inputs: ModelInputs, sampling: TextSampling, stop_token_ids: Sequence[int],
                  pad_token_id: int, use_cache: bool = True, generator: torch.Generator | None = None,
                  prompt_embeds: torch.Tensor | None = None) -> GeneratedText:
    """Generate up to `sampling.max_new_tokens` tokens after each (left-padded) prompt row.

    A row stops at its first token in `stop_token_ids` (kept in the output); later positions hold `pad_token_id`.

    inputs: input_ids / attention_mask [B, S], position_ids [3, B, S], images (dof_mask is not used).
    prompt_embeds [B, S, D] replaces the token + image embedding (e.g. a recorded decoder input).
    """
    ids, valid = inputs.input_ids, inputs.attention_mask.bool()
    b, s = ids.shape
    if valid.shape != (b, s) or inputs.position_ids.shape != (3, b, s):
        raise InputError(f"attention_mask must be [{b}, {s}] and position_ids [3, {b}, {s}], got "
                         f"{tuple(inputs.attention_mask.shape)} / {tuple(inputs.position_ids.shape)}")
    if not bool(valid[:, -1].all()):
        raise InputError("text prompts must be left padded (the last position of every row a real token)")
    embeds = model.embed_tokens_and_images(inputs) if prompt_embeds is None else prompt_embeds
    if embeds.shape[:2] != (b, s):
        raise InputError(f"prompt_embeds must be [{b}, {s}, D], got {tuple(embeds.shape)}")
    positions = inputs.position_ids
    next_position = positions[:, :, -1].max(dim=0).values + 1  # [B]; text resumes after the last index

    hidden, cache = model.decode_text(embeds, positions, valid)
    logits = model.lm_logits(hidden[:, -1])
    first_logits, generated = logits, []
    finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
    stops = torch.tensor(list(stop_token_ids), dtype=torch.long, device=ids.device)
    for step in range(sampling.max_new_tokens):
        token = next_token(logits, sampling, generator)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        generated.append(token)
        finished |= torch.isin(token, stops)
        if bool(finished.all()) or step == sampling.max_new_tokens - 1:
            break
        token_embeds = model.model.embed_tokens(token[:, None])
        token_positions = (next_position + step)[None, :, None].expand(3, b, 1)
        valid = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=ids.device)], dim=1)
        if use_cache:
            hidden, cache = model.decode_text(token_embeds, token_positions, valid, cache)
        else:
            embeds = torch.cat([embeds, token_embeds.to(embeds.dtype)], dim=1)
            positions = torch.cat([positions, token_positions], dim=2)
            hidden, _ = model.decode_text(embeds, positions, valid)
        logits = model.lm_logits(hidden[:, -1])
    return GeneratedText(token_ids=torch.stack(generated, dim=1), first_logits=first_logits)
