"""`wall-oss train`: fine-tune (--init) or train from scratch (--config SIZE) on a LeRobot v3.0 dataset."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train a Wall-OSS checkpoint on a LeRobot v3.0 dataset")
    parser.add_argument("--dataset", required=True, help="LeRobot v3.0 dataset directory (wall-oss export-dataset)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--init", help="checkpoint directory to fine-tune")
    source.add_argument("--config", choices=("tiny", "small"), help="train a new model of this size from scratch")
    parser.add_argument("--out", required=True, help="output directory (checkpoint/, state/, train_log.jsonl)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-steps", type=int, default=None, help="default: 5%% of the steps, at most 1000")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="autocast dtype (weights and optimizer stay float32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lora-rank", type=int, default=0, help="> 0: train LoRA adapters on the decoder experts")
    parser.add_argument("--image-size", type=int, default=None, help="longest image side (default: the checkpoint's)")
    parser.add_argument("--resume", help="continue a previous run from its output directory")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step with a resumable state")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from wall_oss_core.training.dataset import DatasetError
    from wall_oss_core.training.trainer import TrainConfig, Trainer, TrainingError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = TrainConfig(dataset=args.dataset, out=args.out, init=args.init, size=args.config, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                             dtype=args.dtype, device=args.device, lora_rank=args.lora_rank, seed=args.seed,
                             image_size=args.image_size, resume=args.resume, stop_at=args.stop_at,
                             progress=not args.no_progress)
        trainer = Trainer(config)
        losses = trainer.run()
    except (TrainingError, DatasetError, FileNotFoundError) as error:
        print(f"wall-oss train: {error}", file=sys.stderr)
        return 2
    if losses:
        print(f"steps={trainer.step} first_loss={losses[0]:.5f} last_loss={losses[-1]:.5f}")
    print(f"checkpoint={trainer.checkpoint}")
    return 0
