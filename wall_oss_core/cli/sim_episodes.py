"""`wall-oss sim-episodes`: ROS-free closed-loop evaluation in the ALOHA sim (EpisodeRunner, sim time).

The launched graph's executor, supervisor and task scoring without DDS: a checkpoint (default: the
built-in trained one) or the scripted expert is scored by task progress in seconds per episode, for
iterating on training. `wall-oss sim-eval` runs the same episodes through the full ROS graph.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("sim-episodes", help="ROS-free closed-loop evaluation in the ALOHA sim",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="checkpoint directory (default: the built-in trained checkpoint)")
    source.add_argument("--scripted", action="store_true", help="the scripted expert (privileged object poses)")
    parser.add_argument("--tasks", nargs="+", default=None, help="tasks of config/tasks.yaml (default: the "
                        "checkpoint's training tasks: transfer_cube hand_over_red_cube hand_over_green_cube)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per task")
    parser.add_argument("--seed", type=int, default=1000, help="episode k uses scene seed SEED + k")
    parser.add_argument("--duration", type=float, default=12.0, help="sim seconds per episode")
    parser.add_argument("--chunk-period", type=float, default=0.5, help="sim seconds between policy calls")
    parser.add_argument("--policy-seed", type=int, default=0, help="flow-noise seed of the checkpoint")
    parser.add_argument("--noise-scale", type=float, default=None,
                        help="initial flow noise scale (0: the prior's mean; default: the checkpoint's, else 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--video", action="store_true", help="a face-camera video per episode in the report")
    parser.add_argument("--out", default=None, help="write metrics.json and report.html here")
    parser.add_argument("--robot-config", default=None, help="default: config/aloha.yaml")
    return parser


DEFAULT_TASKS = ("transfer_cube", "hand_over_red_cube", "hand_over_green_cube")


def run(args: argparse.Namespace) -> int:
    import sys

    from wall_oss_core.backends.wall_oss import WallOssPolicy, WallOssPolicyConfig
    from wall_oss_core.paths import builtin_checkpoint, share_file
    from wall_oss_core.policy.interface import PolicyError
    from wall_oss_core.robot.config import load_robot_config
    from wall_oss_core.sim.evaluate import SimEvalConfig, checkpoint_image_size, evaluate, expert_factory
    from wall_oss_core.sim.tasks import load_tasks

    robot = load_robot_config(args.robot_config or share_file("config/aloha.yaml"))
    tasks = load_tasks()
    names = tuple(args.tasks or DEFAULT_TASKS)
    try:
        for name in names:
            tasks[name]
        if args.scripted:
            factory, cameras, image_size, title = expert_factory(tasks), (), 64, "scripted expert"
        else:
            checkpoint = args.checkpoint or str(builtin_checkpoint())
            policy = WallOssPolicy(WallOssPolicyConfig(checkpoint, seed=args.policy_seed,
                                                       num_threads=args.threads, noise_scale=args.noise_scale))
            factory, cameras = (lambda sim, kinematics: policy), tuple(policy.camera_names)
            image_size, title = checkpoint_image_size(checkpoint), f"checkpoint {checkpoint}"
        config = SimEvalConfig(tasks=names, episodes=args.episodes, seed=args.seed, duration=args.duration,
                               image_size=image_size, chunk_period=args.chunk_period, video=args.video)
        metrics = evaluate(factory, cameras, robot, tasks, config, args.out, title=f"ROS-free sim episodes: {title}")
    except (KeyError, ValueError, PolicyError, FileNotFoundError) as error:
        print(f"wall-oss sim-episodes: {error}", file=sys.stderr)
        return 2
    print(f"policy: {title}")
    for name, values in metrics["tasks"].items():
        grasp = values["first_grasp"]
        print(f"{name}: progress {values['progress_mean']:.1f} [{values['progress_ci95'][0]:.1f}, "
              f"{values['progress_ci95'][1]:.1f}], success {100 * values['success_rate']:.0f}%, first grasp on "
              f"{grasp['named_object']}: {grasp['on_named']}/{values['episodes']}")
    if args.out:
        print(f"report={args.out.rstrip('/')}/report.html")
    print(f"task_progress={metrics['task_progress']:.1f}")
    return 0
