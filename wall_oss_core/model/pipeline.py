"""End to end: raw cameras + raw state + instructions -> unnormalized action chunks.

normalize state -> build prompt/tokens/pixels/positions -> prefix-cached flow sampling ->
unnormalize actions into the checkpoint's action space.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .configuration import WallOssConfig
from .loading import load_model
from .modeling import ModelInputs, WallOssModel
from .normalization import CheckpointNormalization, NormalizationError, load_normalization
from .processing import (
    DEFAULT_IMAGE_LONGEST_SIDE,
    END_OF_TURN_TOKEN,
    GENERATION_05,
    ObservationError,
    ProcessedBatch,
    ProcessorSettings,
    WallOssProcessor,
)
from .text_generation import TextSampling, generate_text

LOG = logging.getLogger(__name__)
IMAGE_FEATURE_PREFIX = "observation.images."
DEFAULT_MAX_PROMPT_TOKENS = 1000


def _feature_width(features: object, key: str) -> int | None:
    if isinstance(features, dict) and isinstance(features.get(key), dict):
        shape = features[key].get("shape")
        if isinstance(shape, list) and len(shape) == 1:
            return int(shape[0])
    return None


def checkpoint_cameras(config: WallOssConfig) -> tuple[str, ...]:
    """Camera names in prompt order: LeRobot `camera_key_mapping`, else the image input features."""
    if config.camera_key_mapping:
        return tuple(config.camera_key_mapping.values())
    features = config.policy_fields.get("input_features", {})
    return tuple(key[len(IMAGE_FEATURE_PREFIX):] for key in features if key.startswith(IMAGE_FEATURE_PREFIX))


def _schema_names(config: WallOssConfig, kind: str, width: int) -> list[str]:
    """Per-dimension names: stored in config, else expanded from the flow dof/agent_pos schema, else generic."""
    stored = config.policy_fields.get(f"{kind}_names")
    if isinstance(stored, list) and len(stored) == width:
        return [str(name) for name in stored]
    schema = config.dof_config if kind == "action" else config.agent_pos_config
    if schema and sum(schema.values()) == width:
        return [f"{part}_{index}" for part, size in schema.items() for index in range(size)]
    return [f"{kind}_{index}" for index in range(width)]


@dataclass(frozen=True)
class PipelineSpec:
    """What a checkpoint consumes and produces, resolved once at load time."""

    generation: str
    camera_names: tuple[str, ...]
    state_names: list[str]
    action_names: list[str]
    chunk_size: int
    model_action_dim: int


class WallOssPipeline:
    """A loaded checkpoint that turns raw observations into action chunks."""

    def __init__(self, model: WallOssModel, config: WallOssConfig, processor: WallOssProcessor,
                 normalization: CheckpointNormalization, device: torch.device, dtype: torch.dtype,
                 source: str = ""):
        self.model = model
        self.config = config
        self.processor = processor
        self.normalization = normalization
        self.device = device
        self.dtype = dtype
        self.source = source
        settings = processor.settings
        self.spec = PipelineSpec(
            generation=config.generation,
            camera_names=settings.camera_names,
            state_names=_schema_names(config, "state", settings.active_state_dims),
            action_names=_schema_names(config, "action", settings.active_action_dims),
            chunk_size=settings.chunk_size,
            model_action_dim=settings.action_dim,
        )
        for kind, normalizer, width in (("state", normalization.state, settings.active_state_dims),
                                        ("action", normalization.action, settings.active_action_dims)):
            if normalizer.dim is not None and normalizer.dim != width:
                raise NormalizationError(
                    f"{normalization.source}: {kind} statistics have {normalizer.dim} dims, the checkpoint uses {width}"
                )

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
        camera_names: Sequence[str] | None = None,
        image_longest_side: int | None = None,
        robot: str | None = None,
        allow_identity_normalization: bool = False,
    ) -> WallOssPipeline:
        """Load model, tokenizer, image processor and statistics from a local checkpoint directory.

        camera_names: prompt order of the cameras, needed when the config names none.
        robot: which robot's statistics to use when the author tensors hold several.
        allow_identity_normalization: run a checkpoint that ships no statistics (values pass through).
        """
        directory = Path(checkpoint_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
        dtype = parse_dtype(dtype)
        device = torch.device(device)
        model, config = load_model(directory, dtype=dtype, device=device)
        cameras = tuple(camera_names) if camera_names else checkpoint_cameras(config)
        if not cameras:
            raise ObservationError(f"{directory}: config.json names no cameras; pass camera_names")
        fields = config.policy_fields
        active_state = _feature_width(fields.get("input_features"), "observation.state") or config.action.state_dim
        active_action = _feature_width(fields.get("output_features"), "action") or config.action.action_dim
        settings = ProcessorSettings(
            generation=config.generation,
            camera_names=cameras,
            chunk_size=config.action.chunk_size,
            action_dim=config.action.action_dim,
            state_dim=config.action.state_dim,
            active_action_dims=min(active_action, config.action.action_dim),
            active_state_dims=min(active_state, config.action.state_dim),
            image_longest_side=int(image_longest_side or fields.get("image_longest_side")
                                   or DEFAULT_IMAGE_LONGEST_SIDE[config.generation]),
            max_prompt_tokens=int(fields.get("tokenizer_max_length", DEFAULT_MAX_PROMPT_TOKENS)),
        )
        processor = WallOssProcessor.from_checkpoint_dir(directory, settings)
        if processor.action_token_id != config.token_ids.action:
            raise ObservationError(
                f"{directory}: tokenizer maps <|action|> to {processor.action_token_id}, config expects "
                f"{config.token_ids.action}"
            )
        normalization = load_normalization(directory, robot=robot, allow_identity=allow_identity_normalization)
        if normalization.state.mode == "IDENTITY":
            LOG.warning("%s: no normalization statistics; state and actions pass through unchanged", directory)
        return cls(model, config, processor, normalization, device, dtype, source=str(directory))

    def normalize_state(self, state) -> torch.Tensor:
        values = torch.as_tensor(np.asarray(state, dtype=np.float32))
        width = self.processor.settings.active_state_dims
        if values.ndim != 2 or values.shape[1] != width:
            raise ObservationError(f"state must be [B, {width}], got shape {tuple(values.shape)}")
        if not bool(torch.isfinite(values).all()):
            raise ObservationError("state contains NaN or infinite values")
        normalized = self.normalization.state.normalize(values)
        return normalized.clamp(-1.0, 1.0) if self.config.generation == GENERATION_05 else normalized

    def prepare(self, images: Mapping[str, object], state, tasks: Sequence[str]) -> ProcessedBatch:
        return self.processor(images, self.normalize_state(state), list(tasks) if not isinstance(tasks, str) else tasks)

    def model_inputs(self, batch: ProcessedBatch) -> ModelInputs:
        return ModelInputs(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            dof_mask=batch.dof_mask,
            pixel_values=batch.pixel_values.to(self.dtype),
            image_grid_thw=batch.image_grid_thw,
            proprioception=batch.proprioception.to(self.dtype) if batch.proprioception is not None else None,
            agent_pos_mask=batch.agent_pos_mask.to(self.dtype) if batch.agent_pos_mask is not None else None,
        ).to(self.device)

    @torch.no_grad()
    def __call__(self, images: Mapping[str, object], state, tasks: Sequence[str], noise=None,
                 use_prefix_cache: bool = True, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions [B, H, A] in the checkpoint's action space, normalized model output [B, H, A_model]).

        images: camera -> batch of frames (uint8 HxWx3 or float 3xHxW in [0, 1]); state: raw [B, D];
        tasks: one instruction per row; noise: optional [B, H, A_model] initial flow noise.
        """
        batch = self.prepare(images, state, tasks)
        batch_size = batch.input_ids.shape[0]
        if noise is not None:
            noise = torch.as_tensor(np.asarray(noise, dtype=np.float32))
            expected = (batch_size, self.spec.chunk_size, self.spec.model_action_dim)
            if tuple(noise.shape) != expected:
                raise ObservationError(f"noise must be {list(expected)}, got {list(noise.shape)}")
            noise = noise.to(self.device)
        normalized = self.model.sample_actions(
            self.model_inputs(batch), noise=noise, use_prefix_cache=use_prefix_cache, generator=generator
        ).float().cpu()
        width = self.processor.settings.active_action_dims
        actions = self.normalization.action.unnormalize(normalized[..., :width])
        return actions, normalized


    @torch.no_grad()
    def ask(self, images: Mapping[str, object], texts: Sequence[str], kind: str = "vqa",
            sampling: TextSampling | None = None, generator: torch.Generator | None = None,
            use_cache: bool = True) -> list[str]:
        """One generated answer per row from the vision-language expert (see `text_generation`).

        images: camera -> batch of frames, as for actions; texts: the question (vqa), the caption request
        (caption) or the task instruction (subtask) per row.
        """
        batch = self.processor.text_inputs(images, kind, texts)
        inputs = ModelInputs(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, pixel_values=batch.pixel_values.to(self.dtype),
                             image_grid_thw=batch.image_grid_thw).to(self.device)
        tokenizer = self.processor.tokenizer
        stops = {token for token in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN_TOKEN))
                 if token is not None and token != tokenizer.unk_token_id}
        generated = generate_text(self.model, inputs, sampling or TextSampling(), sorted(stops),
                                  self.processor.pad_token_id, use_cache=use_cache, generator=generator)
        return [text.strip() for text in tokenizer.batch_decode(generated.token_ids.cpu(), skip_special_tokens=True,
                                                                clean_up_tokenization_spaces=False)]


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(names)}")
    return names[dtype]
