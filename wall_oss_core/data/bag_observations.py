"""Bag → observations: the recorded inputs of a bag fed to the live node's `ObservationAssembler` in stamp order.

Shared by open-loop evaluation and dataset export, so both see exactly what the policy node would have seen.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from wall_oss_core.data.bag_reader import BagMessage, BagReader
from wall_oss_core.policy.images import ImageError, compressed_msg_to_rgb, image_msg_to_rgb
from wall_oss_core.policy.observation import InputRejected, ObservationAssembler, select_joints
from wall_oss_core.robot.config import RobotConfig


def header_stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


@dataclass
class JointTrajectory:
    """Recorded command-joint positions over time (header stamps), for interpolation at any time."""

    times: np.ndarray
    positions: np.ndarray  # (N, J) in RobotConfig.command_joints order

    def covers(self, t: np.ndarray) -> np.ndarray:
        return (t >= self.times[0]) & (t <= self.times[-1]) if len(self.times) else np.zeros(len(t), bool)

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(t, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])],
                        axis=-1)


def joint_trajectory_from_messages(messages: Iterable[BagMessage], config: RobotConfig, skipped: Counter
                                   ) -> JointTrajectory:
    """Command-joint positions of JointState messages by header stamp; invalid or reordered ones are counted."""
    times, rows = [], []
    for item in messages:
        try:
            positions = select_joints(item.message.name, item.message.position, config.command_joints)
        except InputRejected as error:
            skipped[f"joint_state:{error.reason}"] += 1
            continue
        t = header_stamp(item.message)
        if times and t <= times[-1]:
            skipped["joint_state:reordered"] += 1
            continue
        times.append(t)
        rows.append(positions)
    width = len(config.command_joints)
    return JointTrajectory(np.array(times), np.array(rows).reshape(-1, width))


class BagObservationFeeder:
    """Feeds bag messages to the assembler in header-stamp order up to an instant, reading ahead a bounded
    window of the receive-time-ordered stream (inputs arrive after they are stamped)."""

    def __init__(self, stream, assembler: ObservationAssembler, camera_topics: dict[str, str],
                 joint_topic: str, instruction_topic: str, lookahead: float, rejections: Counter):
        self.stream = iter(stream)
        self.assembler = assembler
        self.camera_of_topic = {topic: camera for camera, topic in camera_topics.items()}
        self.joint_topic = joint_topic
        self.instruction_topic = instruction_topic
        self.lookahead = lookahead
        self.rejections = rejections
        self.pending: deque[tuple[float, BagMessage]] = deque()
        self.exhausted = False
        self.instruction = ""
        self.last_read = -math.inf

    def advance(self, instant: float):
        while not self.exhausted and self.last_read <= instant + self.lookahead:
            item = next(self.stream, None)
            if item is None:
                self.exhausted = True
                break
            self.last_read = item.log_time
            release = item.log_time if item.topic == self.instruction_topic else header_stamp(item.message)
            self.pending.append((release, item))
        ready = sorted((p for p in self.pending if p[0] <= instant), key=lambda p: p[0])
        self.pending = deque(p for p in self.pending if p[0] > instant)
        for release, item in ready:
            self._feed(release, item)

    def _feed(self, stamp: float, item: BagMessage):
        try:
            if item.topic == self.instruction_topic:
                self.instruction = str(item.message.data)
            elif item.topic == self.joint_topic:
                self.assembler.add_joint_state(item.message.name, item.message.position, stamp)
            else:
                camera = self.camera_of_topic[item.topic]
                image = (compressed_msg_to_rgb(item.message) if item.topic.endswith("/compressed")
                         else image_msg_to_rgb(item.message))
                self.assembler.add_image(camera, image, stamp)
        except (InputRejected, ImageError) as error:
            self.rejections[f"{item.topic}:{error.reason}"] += 1


def camera_topics(reader: BagReader, config: RobotConfig) -> dict[str, str]:
    topics = {}
    for camera in config.cameras:
        for candidate in (camera.topic, camera.topic.rstrip("/") + "/compressed"):
            if candidate in reader.topics:
                topics[camera.name] = candidate
                break
    return topics
