"""`wall-oss make-checkpoint`: write an untrained Wall-OSS checkpoint directory (demo / tests).

The weights are random (seeded): the actions it produces are meaningless. It exists so the whole
stack runs without downloading anything; point the policy at a real checkpoint for real behaviour.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from wall_oss_core.model.checkpoint_generator import SIZES
    from wall_oss_core.model.processing import GENERATIONS

    parser = subparsers.add_parser(
        "make-checkpoint", help="write an untrained checkpoint directory (random weights, local tokenizer)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path, help="directory to write (created)")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--generation", default="wall_oss_05", choices=list(GENERATIONS))
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> int:
    from wall_oss_core.model.checkpoint_generator import generate_checkpoint

    if args.out_dir.exists() and not args.out_dir.is_dir():
        print(f"wall-oss make-checkpoint: error: {args.out_dir} exists and is not a directory", file=sys.stderr)
        return 2
    directory = generate_checkpoint(args.out_dir, size=args.size, generation=args.generation, seed=args.seed)
    print(f"wrote untrained {args.generation} ({args.size}, seed {args.seed}) checkpoint to {directory}")
    return 0
