"""Raw observation -> model inputs, exactly as the reference Wall-OSS pipelines build them.

The image processor and tokenizer are the `transformers` Qwen2-VL / Qwen2 classes; this module
only decides what goes into them (prompt text, image resizes, state bins) and computes the
multimodal rotary position ids (mRoPE) that the decoder consumes.  Images match the references'
torchvision-backed image processor (see `processor_resize`) without needing torchvision.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .normalization import bins_to_text, state_to_bins

GENERATION_05 = "wall_oss_05"
GENERATION_FLOW = "wall_oss_flow"
GENERATIONS = (GENERATION_05, GENERATION_FLOW)

PROPRIO_TOKEN = "<|propri|>"
ACTION_TOKEN = "<|action|>"
IMAGE_TOKEN = "<|image_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"
END_OF_TURN_TOKEN = "<|im_end|>"  # ends the assistant's answer (text generation stops there)

# Phrases the checkpoints were trained with; unknown cameras fall back to their name with spaces.
CAMERA_LABELS = {
    "face_view": "front view",
    "front_view": "front view",
    "left_wrist_view": "left wrist view",
    "right_wrist_view": "right wrist view",
    "top_view": "top view",
    "wall_view": "wall view",
}

# Longest image side before the Qwen2-VL processor (0.5 real-robot setting / LeRobot wall_x).
DEFAULT_IMAGE_LONGEST_SIDE = {GENERATION_05: 448, GENERATION_FLOW: 256}


class ObservationError(ValueError):
    """An observation does not fit the checkpoint's inputs (camera, shape, dtype, batch)."""


def camera_label(camera_name: str) -> str:
    return CAMERA_LABELS.get(camera_name, camera_name.replace("_", " "))


def build_prompt(camera_names: Sequence[str], instruction: str, state_text: str, chunk_size: int) -> str:
    """The prompt with one `<|image_pad|>` per camera (expanded later from the image grids)."""
    observation = "".join(
        f" {camera_label(name)}: {VISION_START_TOKEN}{IMAGE_TOKEN}{VISION_END_TOKEN}" for name in camera_names
    )
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\nObservation:{observation}\n"
        f"Instruction: {instruction}\n"
        f"Predict the next action in robot action.\nProprioception: {state_text}\n"
        "<|im_end|>\n<|im_start|>assistant\n" + ACTION_TOKEN * chunk_size
    )


TEXT_KINDS = ("vqa", "caption", "subtask")
CAPTION_QUESTION = "Describe what you observe in the current scene."


def build_text_prompt(camera_names: Sequence[str], kind: str, text: str) -> str:
    """A text-generation prompt (no state, no action tokens) as the reference builds them.

    vqa/caption: "Question: {text}" (caption asks `CAPTION_QUESTION`); subtask: "Instruction: {task}" then
    "Predict the next action in language." (the co-training subtask turn).
    """
    if kind not in TEXT_KINDS:
        raise ObservationError(f"unknown text kind {kind!r}; choose one of {list(TEXT_KINDS)}")
    observation = "".join(
        f" {camera_label(name)}: {VISION_START_TOKEN}{IMAGE_TOKEN}{VISION_END_TOKEN}" for name in camera_names
    )
    request = (f"Instruction: {text}\nPredict the next action in language.\n" if kind == "subtask"
               else f"Question: {text}\n")
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\nObservation:{observation}\n{request}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def expand_image_tokens(prompt: str, token_counts: Sequence[int]) -> str:
    """Replace the i-th `<|image_pad|>` by token_counts[i] copies of it."""
    parts = prompt.split(IMAGE_TOKEN)
    if len(parts) - 1 != len(token_counts):
        raise ObservationError(
            f"prompt has {len(parts) - 1} image placeholders but {len(token_counts)} images were processed"
        )
    out = [parts[0]]
    for count, tail in zip(token_counts, parts[1:]):
        out.append(IMAGE_TOKEN * int(count))
        out.append(tail)
    return "".join(out)


def to_uint8_hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Accept uint8 HxWx3 or float 3xHxW in [0, 1] (LeRobot convention); return uint8 HxWx3.

    Floats are clamped to [0, 1] and rounded, as the 0.5 reference does.
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3:
        raise ObservationError(f"expected one image with 3 dimensions, got shape {array.shape}")
    if array.dtype == np.uint8:
        if array.shape[2] != 3:
            raise ObservationError(f"uint8 images must be HxWx3 RGB, got shape {array.shape}")
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if array.shape[0] != 3:
            raise ObservationError(f"float images must be 3xHxW in [0, 1], got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ObservationError("float image contains NaN or infinite values")
        scaled = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0)
        return np.ascontiguousarray(scaled.astype(np.uint8).transpose(1, 2, 0))
    raise ObservationError(f"images must be uint8 HxWx3 or float 3xHxW, got dtype {array.dtype}")


def resize_longest_side(image: np.ndarray, longest_side: int) -> Image.Image:
    """Scale so the longer side equals `longest_side` (other side truncated), PIL default filter."""
    pil_image = Image.fromarray(image)
    width, height = pil_image.size
    if width > height:
        size = (longest_side, int(longest_side * height / width))
    else:
        size = (int(longest_side * width / height), longest_side)
    if min(size) < 1:
        raise ObservationError(f"image of {width}x{height} is too thin to resize to {longest_side}")
    return pil_image.resize(size)


def mrope_position_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    image_token_id: int,
    spatial_merge_size: int,
) -> torch.Tensor:
    """Qwen2.5-VL 3-axis positions [3, B, S] for image+text prompts.

    Text advances one index on all three axes; an image's tokens get (t, h, w) indices over its
    merged grid, offset by the running text index; text after an image resumes at max + 1.
    Padding positions (attention_mask == 0) get position 1, as the reference does.
    Images are consumed in order: row by row, left to right.
    """
    batch, length = input_ids.shape
    positions = torch.ones(3, batch, length, dtype=torch.long)
    grids = image_grid_thw.tolist() if image_grid_thw is not None else []
    image_index = 0
    for row in range(batch):
        valid = attention_mask[row].bool()
        ids = input_ids[row][valid]
        is_image = (ids == image_token_id).tolist()
        row_positions = torch.empty(3, ids.shape[0], dtype=torch.long)
        next_index = 0
        cursor = 0
        while cursor < len(is_image):
            if is_image[cursor]:
                if image_index >= len(grids):
                    raise ObservationError("prompt has more image tokens than processed images")
                t, h, w = grids[image_index]
                grid_h, grid_w = h // spatial_merge_size, w // spatial_merge_size
                count = t * grid_h * grid_w
                run = cursor
                while run < len(is_image) and is_image[run]:
                    run += 1
                if run - cursor < count:
                    raise ObservationError(
                        f"image {image_index} expects {count} tokens but the prompt holds {run - cursor}"
                    )
                t_index = torch.arange(t).repeat_interleave(grid_h * grid_w)
                h_index = torch.arange(grid_h).repeat_interleave(grid_w).repeat(t)
                w_index = torch.arange(grid_w).repeat(t * grid_h)
                block = torch.stack([t_index, h_index, w_index]) + next_index
                row_positions[:, cursor : cursor + count] = block
                next_index = int(block.max()) + 1
                cursor += count
                image_index += 1
            else:
                end = cursor
                while end < len(is_image) and not is_image[end]:
                    end += 1
                row_positions[:, cursor:end] = torch.arange(next_index, next_index + end - cursor)
                next_index += end - cursor
                cursor = end
        positions[:, row, valid] = row_positions
    if image_index != len(grids):
        raise ObservationError(f"{len(grids)} images were processed but the prompts use {image_index}")
    return positions


def load_tokenizer(checkpoint_dir: str | Path):
    """The checkpoint's Qwen2 tokenizer, left padding, with `<|propri|>` and `<|action|>` added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    tokenizer.add_tokens([PROPRIO_TOKEN, ACTION_TOKEN])
    tokenizer.padding_side = "left"
    return tokenizer


def load_image_processor(checkpoint_dir: str | Path):
    """The checkpoint's Qwen2-VL image processor, PIL backend (no torchvision needed at run time).

    Its own resize differs from the torchvision-backed processor the references run whenever smart_resize
    resamples, so `process_images` first brings every frame to the smart_resize size with
    `processor_resize`; the PIL processor then only rescales, normalizes and patches (its resize is a no-op).
    """
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil.from_pretrained(str(checkpoint_dir))


# PIL resample id -> torch interpolate mode, as transformers' torchvision backend maps them (LANCZOS runs as
# bicubic there, with a warning).
_TORCH_RESAMPLE = {2: "bilinear", 3: "bicubic", 1: "bicubic"}


def processor_resize(image: Image.Image, image_processor) -> Image.Image:
    """Resize to the Qwen2-VL smart_resize size exactly as the torchvision-backed ("fast") processor does.

    That processor resizes the uint8 CHW tensor with torchvision's `resize`, which on the CPU is
    `torch.nn.functional.interpolate` (align_corners=False, antialias=True) run natively on uint8 for
    bicubic; doing the same here gives its pixels bit for bit (pinned by test/data/image_processor).
    Images already at the smart_resize size pass through.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    width, height = image.size
    size = image_processor.size
    new_height, new_width = smart_resize(height, width, factor=image_processor.patch_size * image_processor.merge_size,
                                         min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    if (new_height, new_width) == (height, width):
        return image
    mode = _TORCH_RESAMPLE.get(int(image_processor.resample))
    if mode is None:
        raise ValueError(f"image processor resample {image_processor.resample} is not supported (bilinear/bicubic)")
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()[None]
    resized = torch.nn.functional.interpolate(pixels, size=(new_height, new_width), mode=mode, align_corners=False,
                                              antialias=True)
    return Image.fromarray(resized[0].permute(1, 2, 0).numpy())


@dataclass(frozen=True)
class ProcessorSettings:
    """What the prompt and inputs look like for one checkpoint."""

    generation: str
    camera_names: tuple[str, ...]
    chunk_size: int
    action_dim: int  # model width (26 for 0.5, 20 for flow)
    state_dim: int  # model width
    active_action_dims: int  # leading action dims the robot uses (dof mask)
    active_state_dims: int  # leading state dims the robot provides
    image_longest_side: int
    max_prompt_tokens: int = 1000

    def __post_init__(self) -> None:
        if self.generation not in GENERATIONS:
            raise ValueError(f"unknown generation {self.generation!r}; expected one of {GENERATIONS}")
        if not self.camera_names:
            raise ValueError("at least one camera is required")
        if not 0 < self.active_action_dims <= self.action_dim:
            raise ValueError(f"active_action_dims {self.active_action_dims} not in 1..{self.action_dim}")
        if not 0 < self.active_state_dims <= self.state_dim:
            raise ValueError(f"active_state_dims {self.active_state_dims} not in 1..{self.state_dim}")


@dataclass
class ProcessedBatch:
    """Everything the model consumes, plus the prompt texts for inspection."""

    prompts: list[str]
    input_ids: torch.Tensor  # [B, S] long
    attention_mask: torch.Tensor  # [B, S] long
    position_ids: torch.Tensor  # [3, B, S] long
    pixel_values: torch.Tensor  # [N, C] float32
    image_grid_thw: torch.Tensor  # [n_images, 3] long
    dof_mask: torch.Tensor  # [B, H, action_dim] float32
    state_bins: torch.Tensor | None  # [B, state_dim] long (0.5; padding dims are normalized 0)
    proprioception: torch.Tensor | None  # [B, 1, state_dim] float32 (flow)
    agent_pos_mask: torch.Tensor | None  # [B, 1, state_dim] float32 (flow)


@dataclass
class TextBatch:
    """Inputs of text generation: prompts without state or action tokens."""

    prompts: list[str]
    input_ids: torch.Tensor  # [B, S] long, left padded
    attention_mask: torch.Tensor  # [B, S] long
    position_ids: torch.Tensor  # [3, B, S] long
    pixel_values: torch.Tensor  # [N, C] float32
    image_grid_thw: torch.Tensor  # [n_images, 3] long


class WallOssProcessor:
    """Turns cameras + normalized state + instructions into a `ProcessedBatch`."""

    def __init__(self, tokenizer, image_processor, settings: ProcessorSettings):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.settings = settings
        self.action_token_id = self._token_id(ACTION_TOKEN)
        self.proprio_token_id = self._token_id(PROPRIO_TOKEN)
        self.image_token_id = self._token_id(IMAGE_TOKEN)
        self.vision_start_token_id = self._token_id(VISION_START_TOKEN)
        self.pad_token_id = tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; the checkpoint's tokenizer files are incomplete")
        self.merge_size = int(image_processor.merge_size)

    @classmethod
    def from_checkpoint_dir(cls, checkpoint_dir: str | Path, settings: ProcessorSettings) -> WallOssProcessor:
        return cls(load_tokenizer(checkpoint_dir), load_image_processor(checkpoint_dir), settings)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer does not know {token}; the checkpoint's tokenizer files are incomplete")
        return int(token_id)

    def process_images(self, images: Mapping[str, object], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize every camera frame and run the Qwen2-VL image processor (sample-major order)."""
        missing = [name for name in self.settings.camera_names if name not in images]
        if missing:
            raise ObservationError(f"missing cameras {missing}; the checkpoint expects {list(self.settings.camera_names)}")
        frames = []
        for row in range(batch_size):
            for name in self.settings.camera_names:
                batch_images = images[name]
                if len(batch_images) != batch_size:
                    raise ObservationError(f"camera {name!r} has {len(batch_images)} frames for a batch of {batch_size}")
                frame = to_uint8_hwc(batch_images[row])
                resized = resize_longest_side(frame, self.settings.image_longest_side)
                frames.append(processor_resize(resized, self.image_processor))
        result = self.image_processor(images=frames, return_tensors="pt")
        return result["pixel_values"].to(torch.float32), result["image_grid_thw"].to(torch.long)

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        input_ids = encoded["input_ids"].to(torch.long)
        if input_ids.shape[1] > self.settings.max_prompt_tokens:
            raise ObservationError(
                f"prompt has {input_ids.shape[1]} tokens, more than the checkpoint's limit "
                f"{self.settings.max_prompt_tokens}; shorten the instruction or use fewer/smaller images"
            )
        return input_ids, encoded["attention_mask"].to(torch.long)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, attention_mask = self._encode(prompts)
        actions_per_row = (input_ids == self.action_token_id).sum(dim=1)
        if not bool((actions_per_row == self.settings.chunk_size).all()):
            raise ObservationError(
                f"every prompt must hold {self.settings.chunk_size} action tokens, got {actions_per_row.tolist()} "
                "(the instruction must not contain special tokens)"
            )
        return input_ids, attention_mask

    def text_inputs(self, images: Mapping[str, object], kind: str, texts: Sequence[str]) -> TextBatch:
        """Cameras + one question / instruction per row -> a text-generation prompt batch."""
        if isinstance(texts, str) or not texts:
            raise ObservationError(f"need a list with one question or instruction per batch row, got {texts!r}")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ObservationError(f"questions and instructions must be non-empty strings, got {text!r}")
        pixel_values, image_grid_thw = self.process_images(images, len(texts))
        tokens_per_image = (image_grid_thw.prod(dim=1) // self.merge_size**2).tolist()
        per_row = len(self.settings.camera_names)
        prompts = [
            expand_image_tokens(build_text_prompt(self.settings.camera_names, kind, text),
                                tokens_per_image[row * per_row : (row + 1) * per_row])
            for row, text in enumerate(texts)
        ]
        input_ids, attention_mask = self._encode(prompts)
        image_slots = (input_ids == self.image_token_id).sum().item()
        if image_slots != sum(tokens_per_image) or bool((input_ids == self.action_token_id).any()):
            raise ObservationError("the question or instruction must not contain special tokens")
        position_ids = mrope_position_ids(input_ids, attention_mask, image_grid_thw, self.image_token_id,
                                          self.merge_size)
        return TextBatch(prompts, input_ids, attention_mask, position_ids, pixel_values, image_grid_thw)

    def __call__(
        self, images: Mapping[str, object], normalized_state: np.ndarray | torch.Tensor, tasks: Sequence[str]
    ) -> ProcessedBatch:
        settings = self.settings
        state = np.asarray(
            normalized_state.detach().cpu().numpy() if isinstance(normalized_state, torch.Tensor) else normalized_state,
            dtype=np.float32,
        )
        if state.ndim != 2 or state.shape[1] != settings.active_state_dims:
            raise ObservationError(f"state must be [B, {settings.active_state_dims}], got shape {state.shape}")
        batch_size = state.shape[0]
        if isinstance(tasks, str) or len(tasks) != batch_size:
            raise ObservationError(f"need one instruction per batch row ({batch_size}), got {tasks!r}")
        for task in tasks:
            if not isinstance(task, str) or not task.strip():
                raise ObservationError(f"instructions must be non-empty strings, got {task!r}")
        if not np.isfinite(state).all():
            raise ObservationError("state contains NaN or infinite values")

        pixel_values, image_grid_thw = self.process_images(images, batch_size)
        tokens_per_image = (image_grid_thw.prod(dim=1) // self.merge_size**2).tolist()
        per_row = len(settings.camera_names)

        padded_state = np.zeros((batch_size, settings.state_dim), dtype=np.float32)
        padded_state[:, : settings.active_state_dims] = state
        bins = state_to_bins(np.clip(padded_state, -1.0, 1.0)) if settings.generation == GENERATION_05 else None
        prompts = []
        for row, task in enumerate(tasks):
            state_text = bins_to_text(bins[row]) if bins is not None else PROPRIO_TOKEN
            prompt = build_prompt(settings.camera_names, task, state_text, settings.chunk_size)
            prompts.append(expand_image_tokens(prompt, tokens_per_image[row * per_row : (row + 1) * per_row]))

        input_ids, attention_mask = self.tokenize(prompts)
        position_ids = mrope_position_ids(
            input_ids, attention_mask, image_grid_thw, self.image_token_id, self.merge_size
        )
        dof_mask = torch.zeros(batch_size, settings.chunk_size, settings.action_dim, dtype=torch.float32)
        dof_mask[..., : settings.active_action_dims] = 1.0

        proprioception = agent_pos_mask = None
        if settings.generation == GENERATION_FLOW:
            proprioception = torch.from_numpy(padded_state)[:, None, :].clone()
            agent_pos_mask = torch.zeros_like(proprioception)
            agent_pos_mask[..., : settings.active_state_dims] = 1.0
        return ProcessedBatch(
            prompts=prompts,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            dof_mask=dof_mask,
            state_bins=torch.from_numpy(bins).to(torch.long) if bins is not None else None,
            proprioception=proprioception,
            agent_pos_mask=agent_pos_mask,
        )
