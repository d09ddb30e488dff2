"""`wall-oss export-dataset` (bags → LeRobot v3.0 dataset) and `wall-oss stats` (normalization statistics)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _common(parser):
    parser.add_argument("bags", nargs="+", help="rosbag2 bags (directories, .mcap or .db3); one episode each")
    parser.add_argument("--robot-config", default=None)
    parser.add_argument("--fps", type=int, default=None, help="frame rate, an integer (default: the first camera's)")
    parser.add_argument("--state-space", choices=("joint_position", "wall_oss_ee"), default=None)
    parser.add_argument("--action-source", choices=("auto", "commands", "next_state"), default="auto")
    parser.add_argument("--namespace", default="wall_oss")


def add_parser(subparsers):
    export = subparsers.add_parser("export-dataset", help="bags → LeRobot dataset (v3.0 layout)")
    _common(export)
    export.add_argument("--out", required=True, help="new dataset directory")
    export.add_argument("--images", action="store_true", help="store PNG frames in parquet instead of AV1 videos")
    export.set_defaults(stats_only=False)
    stats = subparsers.add_parser("stats", help="normalization statistics (mean/std/min/max/q01/q99) from bags")
    _common(stats)
    stats.add_argument("--out", default=None, help="write the statistics JSON here (default: print)")
    stats.set_defaults(stats_only=True, images=False)


def run(args) -> int:
    from wall_oss_core.data.lerobot_export import (
        REPORT_PATH,
        ExportConfig,
        ExportError,
        export_dataset,
        stats_from_bags,
    )

    try:
        config = ExportConfig(fps=args.fps, state_space=args.state_space, action_source=args.action_source,
                              video=not args.images, namespace=args.namespace)
        if args.stats_only:
            text = json.dumps(stats_from_bags(args.bags, args.robot_config, config), indent=2)
            if args.out:
                with open(args.out, "w") as handle:
                    handle.write(text)
            else:
                print(text)
            return 0
        info = export_dataset(args.bags, args.out, args.robot_config, config)
    except (ExportError, ValueError, OSError) as error:
        print(f"wall-oss {args.command}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {info['total_episodes']} episodes, {info['total_frames']} frames at {info['fps']} fps to {args.out}")
    report = json.loads((Path(args.out) / REPORT_PATH).read_text())
    for bag, summary in report["bags"].items():
        if summary["skipped"] or summary["gaps"]:
            print(f"  {bag}: {summary['episodes']} episodes; skipped {summary['skipped']}; "
                  f"split at {len(summary['gaps'])} gaps")
    for bag, error in report["failures"].items():
        print(f"  {bag}: not exported: {error}")
    return 0
