"""`wall-oss replay`: play a bag into the running graph, record its outputs and compare with the bag.

Nodes that check input freshness (the policy node) must follow the bag's clock: start them with
`use_sim_time:=true` and replay with `--clock`. Also runnable as `python -m wall_oss_ros.cli_replay
[options] [--ros-args ...]` (ROS arguments, e.g. remappings, go to the replay node).
Exit status: 0 played (and compared), 1 played but the comparison could not be made, 2 nothing played
(bad bag, topics or options). Ctrl-C stops playback and still finishes the recording (and comparison).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="source rosbag2 bag (directory, .mcap or .db3)")
    parser.add_argument("--out", required=True, help="output directory (run_bag/, comparison/, replay.json)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--start", type=float, default=0.0, help="seconds into the bag where playback begins")
    parser.add_argument("--duration", type=float, default=None, help="bag seconds to play (default: to the end)")
    parser.add_argument("--loop", action="store_true",
                        help="repeat the played window (each pass shifted forward in time) until Ctrl-C or --loops")
    parser.add_argument("--loops", type=int, default=None, help="with --loop: number of passes")
    parser.add_argument("--clock", action="store_true",
                        help="publish /clock in the bag's time (for nodes with use_sim_time:=true)")
    parser.add_argument("--clock-rate", type=float, default=100.0, help="/clock ticks per second between messages")
    parser.add_argument("--topics", nargs="+", default=None,
                        help="absolute topics to play (default: cameras, /joint_states, the instruction)")
    parser.add_argument("--record", nargs="+", default=None,
                        help="absolute topics to record (default: action_chunk, candidate_command, safety_status, "
                             "controller commands)")
    parser.add_argument("--latched", nargs="+", default=(),
                        help="extra topics to publish as transient local (the instruction always is)")
    parser.add_argument("--namespace", default="wall_oss", help="namespace of the graph's nodes")
    parser.add_argument("--robot-config", default="", help="robot layout YAML (default: the package's)")
    parser.add_argument("--wait", type=float, default=5.0,
                        help="seconds to wait for subscribers of the played topics before playing anyway")
    parser.add_argument("--drain", type=float, default=1.0, help="seconds to keep recording after the last message")
    parser.add_argument("--start-paused", action="store_true",
                        help="wait for a call of the /wall_oss_replay/resume service (std_srvs/Trigger) before playing")
    parser.add_argument("--no-compare", action="store_true", help="play and record only")


def add_parser(subparsers):
    parser = subparsers.add_parser("replay", help="play a bag into the running graph, record and compare")
    add_arguments(parser)


def run(args, ros_args: list[str] | None = None) -> int:
    from wall_oss_core.data.bag_reader import BagError
    from wall_oss_core.data.playback import PlaybackConfig, PlaybackError
    from wall_oss_core.robot.config import ConfigError
    from wall_oss_ros.live_replay import LiveReplayConfig, run_live_replay
    from wall_oss_ros.recorder import RecorderError

    try:
        config = LiveReplayConfig(
            bag=Path(args.bag), out_dir=Path(args.out),
            playback=PlaybackConfig(rate=args.rate, start=args.start, duration=args.duration, loop=args.loop,
                                    loops=args.loops, clock_rate=args.clock_rate),
            topics=tuple(args.topics or ()), record_topics=tuple(args.record or ()),
            latched_topics=tuple(args.latched), publish_clock=args.clock, namespace=args.namespace,
            robot_config=args.robot_config, startup_wait=args.wait, drain=args.drain, compare=not args.no_compare,
            start_paused=args.start_paused)
        result = run_live_replay(config, ros_args=ros_args)
    except (BagError, PlaybackError, RecorderError, ConfigError, FileNotFoundError) as error:
        print(f"wall-oss replay: {error}", file=sys.stderr)
        return 2
    summary = result.summary
    playback = summary["playback"]
    headline = {"messages_sent": playback["messages_sent"], "lateness_ms": playback["lateness_ms"],
                "clock_messages": playback["clock_messages"], "recorded": summary["recorded"]}
    if summary["comparison"]:
        headline["comparison"] = [{"pass": m["pass"], "evaluated": m["coverage"]["evaluated"],
                                   "overall_mae": m["overall"]["mae"]} for m in summary["comparison"]]
    print(json.dumps(headline, indent=2))
    print(f"summary: {Path(args.out) / 'replay.json'}")
    if result.comparison_error:
        print(f"wall-oss replay: no comparison: {result.comparison_error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else ["cli_replay", *argv]
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else None
    parser = argparse.ArgumentParser(prog="wall-oss replay", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    return run(args, ros_args=["cli_replay", *ros_args] if ros_args else None)


if __name__ == "__main__":
    sys.exit(main())
