"""`wall-oss ask`: ask a local checkpoint about the scene in an observation file; prints the answer.

The vision-language expert answers in text: `--kind vqa` a question about the cameras' view, `caption` a
description (default question "Describe what you observe in the current scene."), `subtask` the next step
in language for a task instruction (default: the file's `task` metadata).  OBS.safetensors holds
`observation.images.<camera>` (float32 Bx3xHxW in [0, 1] or uint8 BxHxWx3); other entries are ignored.
Greedy decoding unless --temperature > 0 (then top-p sampling with --seed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .infer import TASK_METADATA, InferInputError, read_images, read_safetensors, read_tasks


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ask", help="ask a checkpoint a question about an observation (VQA, caption, subtask)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="local checkpoint directory")
    parser.add_argument("--observation", required=True, type=Path, help="OBS.safetensors with the camera frames")
    parser.add_argument("--question", help="the question (vqa), caption request (caption) or task (subtask)")
    parser.add_argument("--kind", default="vqa", choices=["vqa", "caption", "subtask"])
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (temperature > 0)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--cameras", nargs="+", help="camera prompt order when config.json names none")
    return parser


def questions_for(args: argparse.Namespace, metadata: dict[str, str], batch: int, path: Path) -> list[str]:
    """One text per row: --question, else the caption request / the file's tasks (subtask)."""
    from wall_oss_core.model.processing import CAPTION_QUESTION

    if args.question is not None:
        return [args.question] * batch
    if args.kind == "caption":
        return [CAPTION_QUESTION] * batch
    if TASK_METADATA not in metadata:
        raise InferInputError(f"--kind subtask needs --question or a `{TASK_METADATA}` metadata entry in {path}")
    return read_tasks(path, metadata, batch)


def ask(args: argparse.Namespace) -> list[str]:
    from wall_oss_core.model.pipeline import WallOssPipeline
    from wall_oss_core.model.text_generation import TextSampling

    if args.kind == "vqa" and args.question is None:
        raise InferInputError("--kind vqa needs --question")
    sampling = TextSampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    tensors, metadata = read_safetensors(args.observation, "observation")
    pipeline = WallOssPipeline.from_pretrained(args.checkpoint, dtype=args.dtype, device=args.device,
                                               camera_names=args.cameras, allow_identity_normalization=True)
    images = read_images(args.observation, tensors, pipeline.spec.camera_names)
    batch = len(next(iter(images.values())))
    texts = questions_for(args, metadata, batch, args.observation)
    generator = torch.Generator(device=pipeline.device).manual_seed(args.seed)
    return pipeline.ask(images, texts, kind=args.kind, sampling=sampling, generator=generator)


def run(args: argparse.Namespace) -> int:
    """Prints one answer per observation row; exit status 2 with a one-line message on bad input."""
    from wall_oss_core.model.checkpoint_files import CheckpointError
    from wall_oss_core.model.configuration import ConfigError
    from wall_oss_core.model.normalization import NormalizationError
    from wall_oss_core.model.processing import ObservationError

    try:
        answers = ask(args)
    except (InferInputError, ObservationError, NormalizationError, ConfigError, CheckpointError,
            FileNotFoundError, ValueError) as error:
        print(f"wall-oss ask: error: {error}", file=sys.stderr)
        return 2
    for row, answer in enumerate(answers):
        print(answer if len(answers) == 1 else f"[{row}] {answer}")
    return 0
