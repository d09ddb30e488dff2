"""Live replay: play a bag's inputs into the running graph with their original timing, record what the
graph publishes, and compare that run with the bag using the offline evaluation metrics.

Messages go out as the raw CDR bytes stored in the bag (rclpy publishes serialized bytes as they
are), from a plain loop that sleeps until each message's time (`wall_oss_core.data.playback` computes the
schedule: rate factor, start offset, duration, loop). Header stamps are left as recorded (shifted
only on later loop passes), so nodes that check input freshness, like the policy node, must follow
the bag's clock: run them with `use_sim_time:=true` and play with `publish_clock`, which publishes
rosgraph_msgs/Clock ticks and one ahead of every message.

While it plays, a `BagRecorder` in the same node records the graph's outputs (action chunks,
candidate commands, controller commands, safety status) into `<out>/run_bag` (MCAP, receive times
from the system clock). Afterwards the run's chunks, mapped back into the source bag's time base
pass by pass, are compared with the source bag (`wall_oss_core.evaluation.run_comparison`) and everything is
summarized in `<out>/replay.json`.

The recorder and the /clock subscription side run on a SingleThreadedExecutor in a background
thread; the publishing loop owns the main thread, so Ctrl-C ends playback, and the recording and
comparison of what was played still complete.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import QosDurability
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from wall_oss_core.data.bag_reader import BagMessage, BagReader
from wall_oss_core.data.playback import (
    NS,
    PlaybackConfig,
    PlaybackError,
    PlaybackEvent,
    Timeline,
    pass_messages,
    playback_events,
    shift_header_stamp,
    starts_with_header,
)
from wall_oss_core.evaluation.run_comparison import (
    RunComparisonError,
    chunks_by_pass,
    compare_run,
    run_chunks,
    topic_rates,
)
from wall_oss_core.robot.config import RobotConfig, default_config_path, load_robot_config
from wall_oss_ros.node_runtime import install_stop_signals, spin_until_stopped
from wall_oss_ros.recorder import BagRecorder, RecorderError, message_class

PLAY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # reliable offers match every subscriber
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
SLEEP_MARGIN = 0.002  # [s] the last stretch before a deadline is slept with time.sleep, not Event.wait
LATENESS_WINDOW = 100_000  # messages the lateness percentiles cover
DISCOVERY_PERIOD = 0.2  # [s] how often the recorder looks for graph topics that appeared late


@dataclass(frozen=True)
class LiveReplayConfig:
    """bag: source bag; out_dir: where run_bag/, comparison/ and replay.json go (created).
    topics: absolute topics to play (empty: the robot config's cameras, /joint_states, the instruction).
    record_topics: absolute topics to record (empty: the graph's outputs in `namespace`).
    latched_topics: played as transient local besides the instruction and topics recorded that way.
    startup_wait: how long to wait for subscribers of the played topics and publishers of the recorded
    ones before playing anyway [s]. drain: how long to keep recording after the last message [s].
    start_paused: wait (after the startup wait) until the node's `~/resume` service (std_srvs/Trigger)
    is called, e.g. once every other process has connected."""

    bag: Path
    out_dir: Path
    playback: PlaybackConfig = field(default_factory=PlaybackConfig)
    topics: tuple[str, ...] = ()
    record_topics: tuple[str, ...] = ()
    latched_topics: tuple[str, ...] = ()
    publish_clock: bool = False
    namespace: str = "wall_oss"
    robot_config: str = ""
    startup_wait: float = 5.0
    drain: float = 1.0
    compare: bool = True
    start_paused: bool = False

    def __post_init__(self):
        for name in ("startup_wait", "drain"):
            if not getattr(self, name) >= 0:
                raise PlaybackError(f"{name} must be >= 0 s, got {getattr(self, name)}")
        for topic in self.topics + self.record_topics + self.latched_topics:
            if not topic.startswith("/"):
                raise PlaybackError(f"give topics by their absolute name, got {topic!r}")

    def topic(self, relative: str) -> str:
        namespace = self.namespace.strip("/")
        return f"/{namespace}/{relative}" if namespace else f"/{relative}"


def default_play_topics(reader: BagReader, robot: RobotConfig, config: LiveReplayConfig) -> list[str]:
    """The policy's inputs the bag holds: each camera's raw topic (else its /compressed), the joint states,
    the instruction."""
    topics = []
    for camera in robot.cameras:
        for candidate in (camera.topic, camera.topic.rstrip("/") + "/compressed"):
            if candidate in reader.topics:
                topics.append(candidate)
                break
    topics += [t for t in ("/joint_states", config.topic("instruction")) if t in reader.topics]
    return topics


def default_record_topics(robot: RobotConfig, config: LiveReplayConfig) -> list[str]:
    """What the graph publishes: chunks, candidate commands, safety status and the controller commands."""
    suffix = "joint_trajectory" if robot.controller_interface == "joint_trajectory" else "commands"
    controllers = [name for arm in robot.arms for name in (arm.controller, arm.gripper_controller)]
    return ([config.topic(name) for name in ("action_chunk", "candidate_command", "safety_status")]
            + [f"/{controller}/{suffix}" for controller in controllers])


def _summary_ms(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    array = np.asarray(values) * 1e3
    return {"count": int(array.size), "p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "max": float(array.max())}


@dataclass
class PlaybackStats:
    """What a playback did. lateness: how long after its scheduled wall time each of the last
    LATENESS_WINDOW messages went out [s] (bounded, for endless loops); max_lateness: over all."""

    sent: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    lateness: deque = field(default_factory=lambda: deque(maxlen=LATENESS_WINDOW))
    max_lateness: float = 0.0
    clock_messages: int = 0
    passes_started: int = 0
    first_sim_time: float | None = None
    last_sim_time: float | None = None
    wall_time: float = 0.0
    interrupted: bool = False

    def as_dict(self) -> dict:
        return {"sent": dict(sorted(self.sent.items())), "messages_sent": sum(self.sent.values()),
                "skipped": dict(sorted(self.skipped.items())),
                "lateness_ms": {**_summary_ms(list(self.lateness)), "max_overall": self.max_lateness * 1e3},
                "clock_messages": self.clock_messages, "passes_started": self.passes_started,
                "first_sim_time": self.first_sim_time, "last_sim_time": self.last_sim_time,
                "wall_time_s": self.wall_time, "interrupted": self.interrupted}


def _sleep_until(deadline: float, stop: threading.Event) -> bool:
    """Sleep until time.monotonic() reaches `deadline`; False if `stop` was set first. The wait is an
    interruptible Event.wait up to a few ms before the deadline, then a plain (finer) sleep."""
    remaining = deadline - time.monotonic()
    if remaining > SLEEP_MARGIN and stop.wait(remaining - SLEEP_MARGIN):
        return False
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    return not stop.is_set()


class BagPlayer:
    """Publishes chosen topics of an open bag into the graph along a `Timeline` (see the module docstring)."""

    def __init__(self, node: Node, reader: BagReader, topics: list[str], timeline: Timeline, *,
                 publish_clock: bool, clock_rate: float, latched_topics: set[str]):
        self.node = node
        self.reader = reader
        self.timeline = timeline
        self.clock_rate = clock_rate if publish_clock else None
        self.stats = PlaybackStats()
        self.publishers = {}
        self.latched = set()
        self._stamped = set()
        for topic in topics:
            msgtype = reader.topics[topic].msgtype
            try:
                cls = message_class(msgtype)
            except RecorderError as error:
                raise PlaybackError(f"cannot play {topic}: {error}") from error
            latched = topic in latched_topics or self._recorded_latched(topic)
            self.publishers[topic] = node.create_publisher(cls, topic, LATCHED_QOS if latched else PLAY_QOS)
            if latched:
                self.latched.add(topic)
            if starts_with_header(reader.typestore, msgtype):
                self._stamped.add(topic)
        self.clock_publisher = node.create_publisher(Clock, "/clock", CLOCK_QOS) if publish_clock else None

    def _recorded_latched(self, topic: str) -> bool:
        """True when every publisher the bag recorded for `topic` offered transient local durability."""
        offers = [qos for c in self.reader.connections if c.topic == topic
                  for qos in getattr(c.ext, "offered_qos_profiles", None) or []]
        return bool(offers) and all(qos.durability == QosDurability.TRANSIENT_LOCAL for qos in offers)

    def unsubscribed_topics(self) -> list[str]:
        return [topic for topic, publisher in self.publishers.items() if publisher.get_subscription_count() == 0]

    def _read_pass(self, pass_index: int):
        """One pass read lazily from the bag (see `pass_messages`)."""
        timeline = self.timeline
        before = (self.reader.messages(sorted(self.latched), deserialize=False, stop=(timeline.start_ns + 1) / NS)
                  if pass_index == 0 and self.latched else ())
        window = self.reader.messages(list(self.publishers), deserialize=False,
                                      start=(timeline.start_ns - NS // 1000) / NS, stop=(timeline.stop_ns + 1) / NS)
        return pass_messages(timeline, pass_index, ((m.topic, m.log_time_ns, m) for m in window),
                             ((m.topic, m.log_time_ns, m) for m in before))

    def play(self, stop: threading.Event) -> PlaybackStats:
        """Publish every scheduled message at its time until the schedule ends or `stop` is set."""
        stats = self.stats
        started = time.monotonic()
        current_pass = -1
        events = playback_events(self.timeline, self._read_pass, self.clock_rate)
        for event in events:
            if not _sleep_until(started + event.wall_offset, stop):
                stats.interrupted = True
                break
            if event.pass_index != current_pass:
                current_pass = event.pass_index
                stats.passes_started += 1
            self._send(event, started)
        stats.wall_time = time.monotonic() - started
        return stats

    def _send(self, event: PlaybackEvent[BagMessage], started: float) -> None:
        stats = self.stats
        sim_seconds = event.sim_time_ns / NS
        if stats.first_sim_time is None:
            stats.first_sim_time = sim_seconds
        stats.last_sim_time = sim_seconds
        if event.is_clock:
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(event.sim_time_ns, NS)
            self.clock_publisher.publish(clock)
            stats.clock_messages += 1
            return
        item = event.item
        raw = item.raw
        if item.topic in self._stamped and event.pass_index:
            try:
                raw = shift_header_stamp(raw, self.timeline.shift_ns(event.pass_index))
            except PlaybackError as error:
                stats.skipped[f"{item.topic}:stamp_not_shiftable"] += 1
                self.node.get_logger().warning(f"not playing a message of {item.topic}: {error}",
                                               throttle_duration_sec=1.0)
                return
        self.publishers[item.topic].publish(raw)
        lateness = max(0.0, time.monotonic() - started - event.wall_offset)
        stats.lateness.append(lateness)
        stats.max_lateness = max(stats.max_lateness, lateness)
        stats.sent[item.topic] += 1


@dataclass
class ReplayResult:
    """Outcome of `run_live_replay`; `summary` is what replay.json holds."""

    summary: dict
    run_bag: Path
    comparisons: list  # one EvaluationResult per compared pass
    comparison_error: str | None = None


def _compare(config: LiveReplayConfig, run_bag: Path, timeline: Timeline, robot: RobotConfig
             ) -> tuple[list, list[dict], str | None]:
    from wall_oss_core.evaluation.open_loop import EvaluationConfig

    chunks, invalid = run_chunks(run_bag, config.topic("action_chunk"))
    if not chunks:
        return [], [], (f"the graph published no valid action chunks on {config.topic('action_chunk')} "
                        f"({invalid} invalid); nothing to compare")
    evaluation = EvaluationConfig(namespace=config.namespace, progress=False)
    by_pass = chunks_by_pass(chunks, timeline)
    results, metrics = [], []
    for pass_index, pass_chunks in by_pass.items():
        out = config.out_dir / "comparison" / (f"pass_{pass_index:03d}" if len(by_pass) > 1 else "")
        try:
            result = compare_run(config.bag, pass_chunks, out, robot, evaluation,
                                 extra_metrics={"pass": pass_index, "invalid_run_chunks": invalid})
        except (RunComparisonError, ValueError, RuntimeError) as error:
            return results, metrics, f"pass {pass_index}: {error}"
        results.append(result)
        metrics.append(result.metrics)
    return results, metrics, None


def run_live_replay(config: LiveReplayConfig, stop: threading.Event | None = None,
                    ros_args: list[str] | None = None) -> ReplayResult:
    """Play, record and compare (see the module docstring). Raises BagError / PlaybackError /
    RecorderError before anything is played when the bag, the topics or the output are unusable.
    Without a `stop` event, Ctrl-C / SIGTERM set one: playback stops, the recording is finished."""
    stop = stop or install_stop_signals()
    robot = load_robot_config(config.robot_config or default_config_path())
    out_dir = Path(config.out_dir)
    run_bag = out_dir / "run_bag"
    if run_bag.exists():
        raise RecorderError(f"{run_bag} exists already; choose a new output directory")
    with BagReader(config.bag) as reader:
        topics = list(config.topics) or default_play_topics(reader, robot, config)
        if not topics:
            raise PlaybackError(f"bag {config.bag} holds none of the default input topics; it has "
                                f"{sorted(reader.topics)} (choose with topics)")
        reader.check_topics(topics)
        unknown = [t for t in topics if not reader.topics[t].known_type]
        if unknown:
            raise PlaybackError(f"cannot play {unknown}: their message types are unknown and not defined in the bag")
        bag_start, bag_end = reader.time_range()
        timeline = Timeline.for_bag(config.playback, round(bag_start * NS), round(bag_end * NS),
                                    sum(reader.topics[t].message_count for t in topics))
        record = list(config.record_topics) or default_record_topics(robot, config)
        latched = {config.topic("instruction"), *config.latched_topics}
        context = rclpy.Context()
        rclpy.init(args=ros_args, context=context, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("wall_oss_replay", context=context)
        executor = SingleThreadedExecutor(context=context)
        recorder = spinner = None
        done_recording = threading.Event()  # ends the spinner thread once playback and drain are over
        try:
            player = BagPlayer(node, reader, topics, timeline, publish_clock=config.publish_clock,
                               clock_rate=config.playback.clock_rate, latched_topics=latched)
            out_dir.mkdir(parents=True, exist_ok=True)
            recorder = BagRecorder(node, run_bag, record)
            node.create_timer(DISCOVERY_PERIOD, recorder.discover)
            executor.add_node(node)
            spinner = threading.Thread(target=spin_until_stopped, args=(executor, done_recording),
                                       name="replay_executor", daemon=True)
            spinner.start()
            waiting = _wait_for_graph(player, recorder, config.startup_wait, stop)
            if config.start_paused:
                _wait_for_resume(node, stop)
            node.get_logger().info(
                f"playing {len(topics)} topics of {config.bag} at rate {config.playback.rate:g}"
                + (f"; no subscribers yet on {waiting['unsubscribed']}" if waiting["unsubscribed"] else "")
                + (f"; nothing published yet on {waiting['unpublished']}" if waiting["unpublished"] else ""))
            stats = player.play(stop)
            if not stats.interrupted:
                _drain(config.drain, stop)
        finally:
            done_recording.set()  # first: no recorder callback may run while the bag is finished
            if spinner is not None:
                spinner.join(timeout=5.0)
            executor.shutdown()
            run_path = recorder.close() if recorder is not None else None
            node.destroy_node()
            rclpy.try_shutdown(context=context)
        summary = {
            "source_bag": str(config.bag), "run_bag": str(run_path), "played_topics": topics,
            "latched_topics": sorted(player.latched), "recorded_topics": record,
            "config": {key: value for key, value in asdict(config).items() if key not in ("bag", "out_dir")},
            "timeline": asdict(timeline), "startup": waiting, "playback": stats.as_dict(),
            "recorded": {t: recorder.counts[t] for t in record},
            "not_recorded": {**{t: "no publisher appeared" for t in recorder.pending_topics}, **recorder.failed},
            "bag_warnings": list(reader.warnings),
        }
    results, metrics, error = _compare(config, run_path, timeline, robot) if config.compare else ([], [], None)
    summary["comparison"] = metrics if metrics else None
    summary["comparison_error"] = error
    summary["topic_rates"] = {"source": topic_rates(config.bag, record), "run": topic_rates(run_path, record)}
    (out_dir / "replay.json").write_text(json.dumps(summary, indent=2, default=str))
    return ReplayResult(summary, run_path, results, error)


def _wait_for_graph(player: BagPlayer, recorder: BagRecorder, timeout: float, stop: threading.Event) -> dict:
    """Wait up to `timeout` s until every played topic has a subscriber and every recorded topic a
    publisher; report what is still missing (playback goes ahead anyway: some inputs may be unused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (player.unsubscribed_topics() or recorder.pending_topics):
        if stop.wait(0.05):
            break
    return {"unsubscribed": player.unsubscribed_topics(), "unpublished": list(recorder.pending_topics)}


def _wait_for_resume(node: Node, stop: threading.Event) -> None:
    """Block until `~/resume` is called (or `stop` is set); the executor thread serves the call."""
    resumed = threading.Event()

    def resume(_request, response):
        resumed.set()
        response.success, response.message = True, "playback started"
        return response

    node.create_service(Trigger, "~/resume", resume)
    node.get_logger().info(f"paused: call {node.get_fully_qualified_name()}/resume (std_srvs/Trigger) to play")
    while not (resumed.wait(0.05) or stop.is_set()):
        pass


def _drain(seconds: float, stop: threading.Event) -> None:
    """Keep recording for `seconds` after the last message (the graph's answers to it are in flight)."""
    stop.wait(seconds)
