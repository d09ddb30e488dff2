"""`wall-oss collect`: scripted-expert demonstrations in the ALOHA sim → bags → one LeRobot v3.0 dataset."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("collect", help="record expert demonstrations in the sim as bags and a dataset")
    parser.add_argument("--task", action="append", required=True,
                        help="task of config/tasks.yaml (repeat for several: --task a --task b)")
    parser.add_argument("--episodes", type=int, required=True, help="episodes per task")
    parser.add_argument("--out", required=True, help="new directory: bags/, dataset/, episodes.json")
    parser.add_argument("--seed", type=int, default=0, help="episode k of a task uses scene seed SEED + k")
    parser.add_argument("--image-size", type=int, default=64, help="rendered camera images, PX × PX")
    parser.add_argument("--fps", type=int, default=10, help="camera and dataset frame rate (an integer, as LeRobot stores it)")
    parser.add_argument("--duration", type=float, default=10.0, help="sim seconds per episode")
    parser.add_argument("--min-progress", type=float, default=100.0,
                        help="export only expert episodes reaching this task progress")
    parser.add_argument("--video", action="store_true", help="AV1 videos instead of lossless PNG frames")
    parser.add_argument("--robot-config", default=None, help="default: config/aloha.yaml")
    parser.add_argument("--tasks-file", default=None, help="default: config/tasks.yaml")
    return parser


def run(args: argparse.Namespace) -> int:
    import sys

    from wall_oss_core.data.lerobot_export import ExportError
    from wall_oss_core.sim.demonstrations import CollectConfig, collect

    try:
        config = CollectConfig(tasks=tuple(dict.fromkeys(args.task)), episodes=args.episodes, seed=args.seed,
                               image_size=args.image_size, fps=args.fps, duration=args.duration, video=args.video,
                               min_progress=args.min_progress)
        info = collect(config, args.out, args.robot_config, args.tasks_file)
    except (ValueError, KeyError, FileExistsError, ExportError, RuntimeError) as error:
        print(f"wall-oss collect: {error}", file=sys.stderr)
        return 2
    summary = info["collected"]
    print(f"recorded {summary['episodes']} episodes (expert progress {summary['expert_progress']:.1f}), exported "
          f"{info['total_episodes']} episodes, {info['total_frames']} frames at {info['fps']:g} fps, "
          f"{info['total_tasks']} task strings")
    print(f"dataset={args.out.rstrip('/')}/dataset")
    return 0
