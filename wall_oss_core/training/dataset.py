"""LeRobot v3.0 datasets (as `wall-oss export-dataset` writes them) as Wall-OSS training samples.

A sample is one frame: every camera's image (decoded from the AV1 videos with PyAV, or PNG cells), the raw state,
the instruction, and the action chunk of the next H frames of the same episode with a mask that is 0 on steps past
the episode's end (padded by repeating the last action).  Datasets in the Wall-OSS end-effector layout
(`observation.state` named like the 26-dim absolute EE state) train on relative actions, as the checkpoints speak:
p_rel = p_target − p_state and R_rel = R_target · R_stateᵀ against the state of the chunk's first frame; other
layouts (joint positions) train on their absolute actions.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wall_oss_core.policy import action_space as aspace

IMAGE_PREFIX = "observation.images."
MIN_SPAN = 1e-3  # statistics ranges narrower than this are widened around their centre (no division blow-up)


class DatasetError(ValueError):
    """The directory is not a LeRobot v3.0 dataset this trainer can read."""


def _ee_poses(vectors: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(N, 26) Wall-OSS EE vectors -> per arm (N, 4, 4) poses and (N,) grippers."""
    poses, grippers = {}, {}
    for arm in aspace.ARMS:
        block = vectors[:, aspace.arm_block(arm)]
        pose = np.tile(np.eye(4), (len(vectors), 1, 1))
        pose[:, :3, :3] = aspace.rotation_from_6d(block[:, 3:9])
        pose[:, :3, 3] = block[:, :3]
        poses[arm], grippers[arm] = pose, block[:, 9]
    return poses, grippers


def relative_chunk(targets: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Absolute EE targets (H, 26) -> Wall-OSS relative actions against `state` (26,)."""
    poses, grippers = _ee_poses(np.asarray(targets, dtype=float))
    reference, _ = _ee_poses(np.asarray(state, dtype=float)[None])
    return aspace.poses_to_relative_actions(poses, grippers, {arm: reference[arm][0] for arm in aspace.ARMS})


def quantile_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """q01 / q99 per dimension of (N, D) values, ranges narrower than MIN_SPAN widened to MIN_SPAN."""
    low, high = np.quantile(values, 0.01, axis=0), np.quantile(values, 0.99, axis=0)
    return _widen(low, high)


def _widen(low: np.ndarray, high: np.ndarray) -> dict[str, np.ndarray]:
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    centre, half = (low + high) / 2, np.maximum((high - low) / 2, MIN_SPAN / 2)
    return {"q01": (centre - half).astype(np.float32), "q99": (centre + half).astype(np.float32)}


def _decode_video(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _decode_png(cell: dict) -> np.ndarray:
    import cv2

    frame = cv2.imdecode(np.frombuffer(cell["bytes"], np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise DatasetError("an image cell of the data parquet is not a decodable PNG")
    return frame[:, :, ::-1]


class TrainingDataset:
    """Every frame of a LeRobot v3.0 dataset in memory, with its action chunk."""

    def __init__(self, root: str | Path, chunk_size: int, episodes: list[int] | None = None):
        import pandas as pd

        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.root} has no meta/info.json: not a LeRobot dataset")
        self.info = json.loads(info_path.read_text())
        if self.info.get("codebase_version") != "v3.0":
            raise DatasetError(f"{self.root}: codebase_version {self.info.get('codebase_version')!r}, expected v3.0")
        features = self.info["features"]
        for key in ("observation.state", "action"):
            if key not in features:
                raise DatasetError(f"{self.root}: no {key} feature")
        self.fps = float(self.info["fps"])
        self.chunk_size = chunk_size
        self.state_names = list(features["observation.state"].get("names") or [])
        self.raw_action_names = list(features["action"].get("names") or [])
        self.cameras = tuple(key[len(IMAGE_PREFIX):] for key, f in features.items()
                             if key.startswith(IMAGE_PREFIX) and f.get("dtype") in ("video", "image"))
        if not self.cameras:
            raise DatasetError(f"{self.root}: no camera features")
        self.ee_layout = self.state_names == aspace.wall_oss_names(relative=False)
        self.action_names = aspace.wall_oss_names(relative=True) if self.ee_layout else self.raw_action_names

        data = pd.concat([pd.read_parquet(p) for p in sorted((self.root / "data").glob("*/*.parquet"))])
        data = data.sort_values("index").reset_index(drop=True)
        meta = pd.concat([pd.read_parquet(p) for p in sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))])
        tasks = pd.read_parquet(self.root / "meta" / "tasks.parquet")
        task_names = {int(index): str(task) for task, index in zip(tasks.index, tasks["task_index"])}
        keep = set(meta["episode_index"]) if episodes is None else set(episodes)
        if episodes is not None and not keep <= set(meta["episode_index"]):
            raise DatasetError(f"{self.root}: episodes {sorted(keep - set(meta['episode_index']))} do not exist")
        images = {camera: self._camera_frames(camera, data, meta, features[IMAGE_PREFIX + camera]["dtype"])
                  for camera in self.cameras}
        rows = data["episode_index"].isin(keep).to_numpy()
        self.states = np.stack(data["observation.state"].to_numpy()[rows]).astype(np.float32)
        targets = np.stack(data["action"].to_numpy()[rows]).astype(np.float32)
        self.episode_index = data["episode_index"].to_numpy()[rows]
        self.tasks = [task_names[int(i)] for i in data["task_index"].to_numpy()[rows]]
        self.images = {camera: frames[rows] for camera, frames in images.items()}
        self.actions, self.action_valid = self._chunks(targets)
        self.stats = json.loads((self.root / "meta" / "stats.json").read_text())

    def _camera_frames(self, camera: str, data, meta, dtype: str) -> np.ndarray:
        key = IMAGE_PREFIX + camera
        if dtype == "image":
            return np.stack([_decode_png(cell) for cell in data[key]])
        files: dict[Path, np.ndarray] = {}
        frames = []
        starts = {int(row["episode_index"]): row for _, row in meta.iterrows()}
        for episode, timestamp in zip(data["episode_index"], data["timestamp"]):
            row = starts[int(episode)]
            path = self.root / self.info["video_path"].format(
                video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                file_index=int(row[f"videos/{key}/file_index"]))
            if path not in files:
                files[path] = _decode_video(path)
            position = int(round((float(row[f"videos/{key}/from_timestamp"]) + float(timestamp)) * self.fps))
            if position >= len(files[path]):
                raise DatasetError(f"{path} has {len(files[path])} frames; frame {position} is missing")
            frames.append(files[path][position])
        return np.stack(frames)

    def _chunks(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per frame the next H actions of its episode (relative for EE datasets) and their validity."""
        n, h = len(targets), self.chunk_size
        chunks = np.zeros((n, h, len(self.action_names)), dtype=np.float32)
        valid = np.zeros((n, h), dtype=bool)
        ends = {e: int(np.flatnonzero(self.episode_index == e)[-1]) + 1 for e in np.unique(self.episode_index)}
        for i in range(n):
            end = ends[int(self.episode_index[i])]
            steps = np.minimum(np.arange(i, i + h), end - 1)
            valid[i] = np.arange(i, i + h) < end
            chunk = targets[steps]
            chunks[i] = relative_chunk(chunk, self.states[i]) if self.ee_layout else chunk
        return chunks, valid

    def __len__(self) -> int:
        return len(self.states)

    def state_statistics(self) -> dict[str, np.ndarray]:
        stats = self.stats["observation.state"]
        return _widen(stats["q01"], stats["q99"])

    def action_statistics(self) -> dict[str, np.ndarray]:
        """q01/q99 of the actions the model is trained on (relative ones are not in stats.json)."""
        if not self.ee_layout:
            stats = self.stats["action"]
            return _widen(stats["q01"], stats["q99"])
        return quantile_stats(self.actions[self.action_valid])

    def batch(self, indices) -> dict:
        indices = np.asarray(indices)
        return {"images": {camera: self.images[camera][indices] for camera in self.cameras},
                "state": self.states[indices], "tasks": [self.tasks[i] for i in indices],
                "actions": self.actions[indices], "valid": self.action_valid[indices]}
