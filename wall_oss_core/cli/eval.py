"""`wall-oss eval`: open-loop evaluation of a checkpoint (or the replay backend) on a recorded bag."""
from __future__ import annotations

import json
import sys


def add_parser(subparsers):
    parser = subparsers.add_parser("eval", help="open-loop evaluation of a policy on a bag (metrics, report, plots)")
    parser.add_argument("--bag", required=True, help="rosbag2 bag (directory, .mcap or .db3)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="Wall-OSS checkpoint directory")
    source.add_argument("--replay", help="replay backend: a bag or chunk file (.npz/.safetensors) of recorded chunks")
    parser.add_argument("--out", required=True, help="output directory (metrics.json, report.html, plots/, bag)")
    parser.add_argument("--robot-config", default=None, help="robot layout YAML (default: the package's)")
    parser.add_argument("--instants", choices=("chunks", "frames", "period"), default="chunks",
                        help="evaluate at each recorded chunk, each camera frame, or every --period s")
    parser.add_argument("--period", type=float, default=0.5)
    parser.add_argument("--ground-truth", choices=("auto", "chunks", "joint_states"), default="auto")
    parser.add_argument("--namespace", default="wall_oss")
    parser.add_argument("--max-instants", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="flow-noise seed for a checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--ablate", choices=("cameras",), default=None,
                        help="cameras: also re-predict with each camera replaced by noise / a constant frame and "
                             "report how far the chunks move (does the policy look?)")


def run(args) -> int:
    from wall_oss_core.backends.replay import RecordingError, replay_policy_from_path
    from wall_oss_core.data.bag_reader import BagError
    from wall_oss_core.evaluation.open_loop import EvaluationConfig, EvaluationError, evaluate_bag
    from wall_oss_core.policy.interface import PolicyError

    try:
        config = EvaluationConfig(instants=args.instants, period=args.period, ground_truth=args.ground_truth,
                                  namespace=args.namespace, max_instants=args.max_instants,
                                  progress=not args.no_progress, ablate_cameras=args.ablate == "cameras")
        if args.checkpoint:
            from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig
            policy = WallOssPolicy(WallOssPolicyConfig(checkpoint_dir=args.checkpoint, seed=args.seed,
                                                       device=args.device))
        else:
            policy = replay_policy_from_path(args.replay, alignment="absolute")
        result = evaluate_bag(args.bag, policy, args.out, args.robot_config, config)
    except (BagError, EvaluationError, PolicyError, RecordingError, ValueError, FileExistsError) as error:
        print(f"wall-oss eval: {error}", file=sys.stderr)
        return 1
    metrics = result.metrics
    coverage = metrics["coverage"]
    summary = {"evaluated": coverage["evaluated"], "skipped": coverage["skipped"],
               "overall_mae": metrics["overall"]["mae"],
               "ee_position_error_mm_mean": {arm: v["position_error_mm"].get("mean")
                                             for arm, v in metrics["end_effector"].items()}}
    if "camera_ablation" in metrics:
        ablation = metrics["camera_ablation"]
        summary["camera_ablation_ratio_to_floor"] = {
            camera: {name: values.get("ratio_to_floor", values.get("mean")) for name, values in by_ablation.items()}
            for camera, by_ablation in ablation["cameras"].items()}
    print(json.dumps(summary, indent=2))
    for name, path in result.outputs.items():
        print(f"{name}: {path}")
    return 0 if coverage["evaluated"] else 1
