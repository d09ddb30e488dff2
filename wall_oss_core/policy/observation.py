"""Turning a stream of camera frames and joint states into synchronized policy observations.

One class serves the live policy node and offline bag evaluation, so both see exactly the same
observation at the same instant. It holds the latest frame of every camera and the latest joint
state with their stamps, and builds an `Observation` only when every input is present, none is
older than its max age, none is from the future, and the result is newer than the last observation
handed out. It never reads a clock: the caller passes `now` (ROS time live, bag time offline).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from wall_oss_core.policy.interface import Observation
from wall_oss_core.robot.kinematics import BimanualKinematics

JOINT_STATES = "joint_states"  # input name of the joint state in reasons


class InputRejected(ValueError):
    """An input that must not enter an observation. `reason` is a short stable key for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Unavailable:
    """Why no observation could be assembled now.

    reason: stable key (missing_camera, stale_camera, missing_joints, stale_joints, future_stamp,
    not_newer); input: the camera name or "joint_states" it concerns ("" when none); detail: a
    sentence for logs and diagnostics.
    """

    reason: str
    input: str
    detail: str

    @property
    def key(self) -> str:
        """Counting key that also names the input, e.g. "stale_camera:face_view"."""
        return f"{self.reason}:{self.input}" if self.input else self.reason


@dataclass(frozen=True)
class AssemblyLimits:
    """Freshness rules, all in seconds. An input is stale when now - stamp > its max age; a stamp
    later than now + max_clock_skew is from the future (a clock problem, never silently accepted)."""

    camera_max_age: float = 0.5
    joint_state_max_age: float = 0.2
    max_clock_skew: float = 0.05

    def __post_init__(self):
        for name in ("camera_max_age", "joint_state_max_age"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.max_clock_skew >= 0:
            raise ValueError(f"max_clock_skew must be non-negative, got {self.max_clock_skew}")


def _check_stamp(stamp: float, previous: float | None, what: str) -> None:
    if not (math.isfinite(stamp) and stamp > 0):
        raise InputRejected("unstamped", f"{what} has no valid stamp ({stamp}); the publisher must set header.stamp")
    if previous is not None and stamp < previous:
        raise InputRejected("reordered", f"{what} stamp {stamp:.6f} is older than the previous one {previous:.6f}")


def select_joints(names, positions, wanted: tuple[str, ...]) -> np.ndarray:
    """Positions of `wanted` joints, in that order, from a joint state's parallel name/position lists."""
    positions = np.asarray(positions, dtype=np.float64)
    names = list(names)
    if positions.shape != (len(names),):
        raise InputRejected("size_mismatch", f"joint state has {len(names)} names but {positions.size} positions")
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in wanted if name not in index]
    if missing:
        raise InputRejected("missing_joints", f"joint state lacks joints {missing}")
    selected = positions[[index[name] for name in wanted]]
    if not np.all(np.isfinite(selected)):
        bad = [name for name, value in zip(wanted, selected) if not np.isfinite(value)]
        raise InputRejected("nan_joints", f"joint state has non-finite positions for {bad}")
    return selected


class JointStateMerger:
    """The latest measured position of each wanted joint, merged across joint state messages.

    Real robots publish /joint_states the ros2_control way: one joint_state_broadcaster per arm or a
    separate gripper driver, each message naming only its joints, in any order, with joints the robot
    config does not command; velocity and effort are NaN for joints without those interfaces (they are
    not read here: callers use positions only). A merged state exists once every wanted joint has been
    seen; its stamp is its oldest joint's stamp (the state is as old as its oldest part). It is refused
    while its parts are more than `max_skew` seconds apart, so a publisher that stopped cannot hide behind
    the others, and a joint still never seen `max_skew` after the first message is reported missing."""

    def __init__(self, joints, max_skew: float = 0.5):
        if not max_skew > 0:
            raise ValueError(f"max_skew must be positive, got {max_skew}")
        self.joints = tuple(joints)
        self.max_skew = float(max_skew)
        self._index = {name: i for i, name in enumerate(self.joints)}
        self._positions = np.full(len(self.joints), np.nan)
        self._stamps = np.full(len(self.joints), -np.inf)
        self._first_stamp: float | None = None

    def missing(self) -> list[str]:
        """The wanted joints no message has named yet."""
        return [name for name, seen in zip(self.joints, np.isfinite(self._stamps)) if not seen]

    def update(self, names, positions, stamp: float) -> tuple[np.ndarray, float] | None:
        """Store the wanted joints of one message; return (positions in `joints` order, stamp) when the merged
        state is complete and consistent, None while joints are still expected. InputRejected (nothing of
        the message stored) on mismatched sizes, non-finite wanted positions, or a joint's stamp going back."""
        positions = np.asarray(positions, dtype=np.float64)
        names = list(names)
        if positions.shape != (len(names),):
            raise InputRejected("size_mismatch", f"joint state has {len(names)} names but {positions.size} positions")
        _check_stamp(stamp, None, "joint state")
        slots = [(self._index[name], i) for i, name in enumerate(names) if name in self._index]
        targets = np.array([slot for slot, _ in slots], dtype=int)
        values = positions[[i for _, i in slots]] if slots else np.empty(0)
        if not np.all(np.isfinite(values)):
            bad = [self.joints[slot] for slot, value in zip(targets, values) if not np.isfinite(value)]
            raise InputRejected("nan_joints", f"joint state has non-finite positions for {bad}")
        if slots and np.any(self._stamps[targets] > stamp):
            raise InputRejected("reordered", f"joint state stamp {stamp:.6f} is older than the previous one of "
                                             f"its joints ({self._stamps[targets].max():.6f})")
        self._positions[targets] = values
        self._stamps[targets] = stamp
        if self._first_stamp is None:
            self._first_stamp = float(stamp)
        newest = float(self._stamps.max())
        missing = self.missing()
        if missing:
            if newest - self._first_stamp > self.max_skew:
                raise InputRejected("missing_joints", f"no joint state for {missing} within {self.max_skew:g} s "
                                                      "of the other joints")
            return None
        oldest = float(self._stamps.min())
        if newest - oldest > self.max_skew:
            stale = [name for name, s in zip(self.joints, self._stamps) if newest - s > self.max_skew]
            raise InputRejected("stale_joints", f"joints {stale} were last updated {newest - oldest:.3f} s before "
                                                f"the newest joint state (max {self.max_skew:g} s)")
        return self._positions.copy(), oldest


class ObservationAssembler:
    """Latest inputs → synchronized `Observation`. `add_*` and `assemble` may run on different threads."""

    def __init__(self, kinematics: BimanualKinematics, limits: AssemblyLimits = AssemblyLimits()):
        self.kinematics = kinematics
        self.limits = limits
        self.config = kinematics.config
        self.camera_names = tuple(camera.name for camera in self.config.cameras)
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._joints: tuple[np.ndarray, float] | None = None
        self._merger = JointStateMerger(self.config.command_joints, limits.joint_state_max_age)
        self._last_used: float | None = None
        self._lock = threading.Lock()

    def add_image(self, camera: str, image: np.ndarray, stamp: float) -> None:
        """Keep `image` (H, W, 3 uint8 RGB) as the latest frame of `camera`; InputRejected if it cannot be."""
        if camera not in self.camera_names:
            raise InputRejected("unknown_camera", f"camera {camera!r} is not in the robot config {self.camera_names}")
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
            raise InputRejected("bad_image", f"camera {camera!r}: expected an HxWx3 uint8 RGB image, got "
                                             f"{getattr(image, 'dtype', type(image).__name__)} {np.shape(image)}")
        with self._lock:
            previous = self._images.get(camera)
            _check_stamp(stamp, previous[1] if previous else None, f"camera {camera!r} frame")
            self._images[camera] = (image, float(stamp))

    def add_joint_state(self, names, positions, stamp: float) -> None:
        """Merge the command-joint positions of a joint state (any joint order, possibly only some of the
        joints: see JointStateMerger); InputRejected if invalid."""
        with self._lock:
            merged = self._merger.update(names, positions, stamp)
            if merged is not None:
                self._joints = merged

    def _check_age(self, stamp: float, now: float, max_age: float, kind: str, name: str) -> Unavailable | None:
        age = now - stamp
        if age > max_age:
            return Unavailable(f"stale_{kind}", name, f"{name} is {age:.3f} s old (max {max_age:.3f} s)")
        if age < -self.limits.max_clock_skew:
            return Unavailable("future_stamp", name, f"{name} is stamped {-age:.3f} s after now; clocks disagree")
        return None

    def assemble(self, now: float, instruction: str) -> Observation | Unavailable:
        """The observation at `now`, or why there is none. A returned observation counts as used: the next
        one must be strictly newer (its stamp is the newest input stamp)."""
        with self._lock:
            images = dict(self._images)
            joints = self._joints
            last_used = self._last_used
        for camera in self.camera_names:
            if camera not in images:
                return Unavailable("missing_camera", camera, f"no frame received yet from camera {camera}")
            problem = self._check_age(images[camera][1], now, self.limits.camera_max_age, "camera", camera)
            if problem:
                return problem
        if joints is None:
            with self._lock:
                missing = self._merger.missing()
            return Unavailable("missing_joints", JOINT_STATES, f"no joint state received yet for {missing}")
        problem = self._check_age(joints[1], now, self.limits.joint_state_max_age, "joints", JOINT_STATES)
        if problem:
            return problem
        stamp = max([joints[1]] + [images[camera][1] for camera in self.camera_names])
        if last_used is not None and stamp <= last_used:
            return Unavailable("not_newer", "", f"no input newer than the last observation ({last_used:.6f})")
        positions = joints[0]
        observation = Observation(
            stamp=stamp,
            images={camera: images[camera][0] for camera in self.camera_names},
            joint_positions=positions,
            joint_names=self.config.command_joints,
            ee_poses=self.kinematics.ee_poses(positions),
            grippers={arm.name: float(positions[self.kinematics.gripper_index(arm.name)]) for arm in self.config.arms},
            instruction=instruction,
        )
        with self._lock:
            self._last_used = stamp if self._last_used is None else max(self._last_used, stamp)
        return observation
