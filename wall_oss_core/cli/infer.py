"""`wall-oss infer`: run a local checkpoint on one LeRobot-style observation file ("fake inference").

OBS.safetensors holds `observation.images.<camera>` (float32 Bx3xHxW in [0, 1] or uint8 BxHxWx3),
`observation.state` (BxD) and the metadata entry `task` (a JSON list of B strings). The optional
NOISE.safetensors holds `noise` (BxHxA, the initial flow noise). OUT.safetensors receives `action`
(BxHxA in the checkpoint's action space) and `action_normalized` (the model output).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
TASK_METADATA = "task"
NOISE_KEY = "noise"


class InferInputError(ValueError):
    """The observation or noise file does not fit the checkpoint."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "infer", help="run a checkpoint on an observation file and write the action chunk",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="local checkpoint directory")
    parser.add_argument("--observation", required=True, type=Path, help="OBS.safetensors")
    parser.add_argument("--out", required=True, type=Path, help="OUT.safetensors to write")
    parser.add_argument("--noise", type=Path, help="NOISE.safetensors with `noise` (B x H x A)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--seed", type=int, default=0, help="noise seed when --noise is not given")
    parser.add_argument("--cameras", nargs="+", help="camera prompt order when config.json names none")
    parser.add_argument("--robot", help="robot whose statistics to use (author checkpoints with several)")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute the whole sequence every flow step (reference mode) instead of the prefix cache")
    return parser


def read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise InferInputError(f"{what} file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise InferInputError(f"{what} file {path} is not a readable safetensors file: {error}") from error


def read_observation(path: Path, camera_names) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Images per camera, state [B, D] and tasks from an OBS file, checked against each other."""
    tensors, metadata = read_safetensors(path, "observation")
    if STATE_KEY not in tensors:
        raise InferInputError(f"{path}: missing `{STATE_KEY}` (B x state dim)")
    state = tensors[STATE_KEY]
    if state.ndim != 2:
        raise InferInputError(f"{path}: `{STATE_KEY}` must be B x D, got shape {list(state.shape)}")
    batch = state.shape[0]
    if TASK_METADATA not in metadata:
        raise InferInputError(f"{path}: missing metadata entry `{TASK_METADATA}` (JSON list of {batch} instructions)")
    return read_images(path, tensors, camera_names, batch), state.float(), read_tasks(path, metadata, batch)


def read_tasks(path: Path, metadata: dict[str, str], batch: int) -> list[str]:
    """The `task` metadata entry of an OBS file: a JSON list of `batch` instructions."""
    try:
        tasks = json.loads(metadata[TASK_METADATA])
    except json.JSONDecodeError as error:
        raise InferInputError(f"{path}: metadata `{TASK_METADATA}` is not JSON: {error}") from error
    if not isinstance(tasks, list) or len(tasks) != batch or not all(isinstance(task, str) for task in tasks):
        raise InferInputError(f"{path}: metadata `{TASK_METADATA}` must be a JSON list of {batch} strings, got {tasks!r}")
    return tasks


def read_images(path: Path, tensors: dict[str, torch.Tensor], camera_names,
                batch: int | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's cameras from an OBS file's tensors, all with `batch` frames (default: the first's)."""
    available = sorted(key[len(IMAGE_PREFIX):] for key in tensors if key.startswith(IMAGE_PREFIX))
    missing = [camera for camera in camera_names if camera not in available]
    if missing:
        raise InferInputError(
            f"{path}: missing camera(s) {missing}; the checkpoint needs {list(camera_names)}, the file has {available}"
        )
    images = {}
    for camera in camera_names:
        frames = tensors[IMAGE_PREFIX + camera]
        float_chw = frames.is_floating_point() and frames.ndim == 4 and frames.shape[1] == 3
        uint8_hwc = frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[3] == 3
        if not (float_chw or uint8_hwc):
            raise InferInputError(
                f"{path}: `{IMAGE_PREFIX}{camera}` must be float B x 3 x H x W in [0, 1] or uint8 B x H x W x 3, "
                f"got {frames.dtype} {list(frames.shape)}"
            )
        batch = frames.shape[0] if batch is None else batch
        if frames.shape[0] != batch:
            raise InferInputError(f"{path}: `{IMAGE_PREFIX}{camera}` has {frames.shape[0]} frames, expected {batch} "
                                  "(the state's rows / the other cameras' frames)")
        images[camera] = frames.float() if frames.is_floating_point() else frames
    return images


def read_noise(path: Path) -> torch.Tensor:
    tensors, _ = read_safetensors(path, "noise")
    if NOISE_KEY not in tensors:
        raise InferInputError(f"{path}: missing `{NOISE_KEY}` (B x H x A)")
    return tensors[NOISE_KEY].float()


def infer(args: argparse.Namespace):
    """Load the checkpoint, run the observation; returns (output tensors, pipeline)."""
    from wall_oss_core.model.pipeline import WallOssPipeline

    pipeline = WallOssPipeline.from_pretrained(
        args.checkpoint, dtype=args.dtype, device=args.device, camera_names=args.cameras, robot=args.robot
    )
    images, state, tasks = read_observation(args.observation, pipeline.spec.camera_names)
    noise = read_noise(args.noise) if args.noise else None
    generator = torch.Generator(device=pipeline.device).manual_seed(args.seed) if noise is None else None
    actions, normalized = pipeline(images, state, tasks, noise=noise, use_prefix_cache=not args.recompute,
                                   generator=generator)
    return {"action": actions.contiguous(), "action_normalized": normalized.contiguous()}, pipeline


def run(args: argparse.Namespace) -> int:
    """Exit status 0 on success, 2 with a one-line message on bad input or a bad checkpoint."""
    from wall_oss_core.model.checkpoint_files import CheckpointError
    from wall_oss_core.model.configuration import ConfigError
    from wall_oss_core.model.normalization import NormalizationError
    from wall_oss_core.model.processing import ObservationError

    try:
        outputs, pipeline = infer(args)
    except (InferInputError, ObservationError, NormalizationError, ConfigError, CheckpointError,
            FileNotFoundError, ValueError) as error:
        print(f"wall-oss infer: error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(outputs, str(args.out), metadata={
        "checkpoint": str(args.checkpoint),
        "generation": pipeline.spec.generation,
        "action_names": json.dumps(pipeline.spec.action_names),
        "dtype": args.dtype,
    })
    shape = list(outputs["action"].shape)
    print(f"wrote {args.out}: action {shape} ({pipeline.spec.generation}, {args.dtype})")
    return 0
