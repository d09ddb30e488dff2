"""`wall-oss`: one command with subcommands. Each subcommand lives in its own module exposing
`add_parser(subparsers)` and `run(args) -> int`; only the chosen one is imported, so `wall-oss infer`
never loads ROS and `wall-oss demo` never loads what it does not use."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("wall_oss_ros.demo", "the full graph does a task on the simulated ALOHA robot: video, plots, summary"),
    "sim-eval": ("wall_oss_ros.sim_eval", "closed-loop task progress on ALOHA through the launched graph"),
    "launch": ("wall_oss_ros.launch_runner", "run a launch/*.launch.yaml file (the same files ros2 launch runs)"),
    "infer": ("wall_oss_core.cli.infer", "run a checkpoint on an observation file (fake inference)"),
    "ask": ("wall_oss_core.cli.ask", "ask a checkpoint about an observation file (VQA, caption, subtask)"),
    "make-checkpoint": ("wall_oss_core.cli.make_checkpoint", "write a tiny/small untrained checkpoint"),
    "eval": ("wall_oss_core.cli.eval", "open-loop evaluation of a checkpoint or replayed chunks on a bag"),
    "train": ("wall_oss_core.cli.train", "train a checkpoint on a LeRobot v3.0 dataset (reference flow objective)"),
    "collect": ("wall_oss_core.cli.collect", "record scripted-expert demonstrations in the ALOHA sim -> bags + dataset"),
    "sim-episodes": ("wall_oss_core.cli.sim_episodes", "ROS-free closed-loop evaluation in the ALOHA sim (sim time)"),
    "export-dataset": ("wall_oss_core.cli.export", "bags -> LeRobot dataset (v3.0) with videos and stats"),
    "stats": ("wall_oss_core.cli.export", "normalization statistics (mean/std/q01/q99) from bags"),
    "replay": ("wall_oss_ros.cli_replay", "play a bag into the running graph, record its outputs, compare"),
}


def _usage() -> str:
    lines = ["usage: wall-oss <command> [options]", "", "commands:"]
    lines += [f"  {name:<16} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["  test             run the test suite (./wall-oss test)", "", "wall-oss <command> --help for options"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(_usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    parser = argparse.ArgumentParser(prog="wall-oss")
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
