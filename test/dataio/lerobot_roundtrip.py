"""Runs in .venv-lerobot (scripts/lerobot_env.sh), not in the project's venv: load an exported dataset with
LeRobot's own dataset classes, decode and batch it, append an episode with the library, reload it, and print
what was seen as one JSON line for test_lerobot_compat.py to check.

Usage: python lerobot_roundtrip.py DATASET_ROOT NEW_EPISODE_FRAMES
"""
import json
import sys

import torch

# torchvision's C ops cannot load next to the CPU torch (the only torchvision wheels for this torch are CUDA
# builds), and torchvision registers a fake kernel for torchvision::nms at import whether or not its ops
# loaded, which torch 2.13 refuses for an undefined operator. LeRobot's dataset code calls no torchvision op:
# defining the schema (no kernel) lets torchvision import; calling nms would still fail loudly.
_TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
_TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import numpy as np  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

REPO_ID = "local/wall_oss_export"
NEW_TASK = "appended by lerobot"


def summary(dataset: LeRobotDataset) -> dict:
    """Totals, and per episode the first and last frame as LeRobot returns them (video decoded)."""
    episodes = []
    for episode in range(dataset.num_episodes):
        start = int(dataset.meta.episodes[episode]["dataset_from_index"])
        end = int(dataset.meta.episodes[episode]["dataset_to_index"])
        frames = []
        for index in (start, end - 1):
            item = dataset[index]
            frames.append({
                "index": int(item["index"]), "frame_index": int(item["frame_index"]),
                "episode_index": int(item["episode_index"]), "timestamp": float(item["timestamp"]),
                "task": item["task"], "state": item["observation.state"].tolist(),
                "images": {key: {"shape": list(item[key].shape), "mean": float(item[key].mean())}
                           for key in dataset.meta.camera_keys},
            })
        episodes.append({"from": start, "to": end, "frames": frames})
    return {"num_frames": dataset.num_frames, "num_episodes": dataset.num_episodes, "fps": dataset.fps,
            "tasks": list(dataset.meta.tasks.index), "episodes": episodes}


def main(root: str, new_frames: int) -> dict:
    loaded = LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    result = {"loaded": summary(loaded)}
    batch = next(iter(torch.utils.data.DataLoader(loaded, batch_size=4, shuffle=False)))
    result["batch"] = {key: list(value.shape) for key, value in batch.items() if isinstance(value, torch.Tensor)}

    # append as LeRobot's recorder resumes a dataset: open it, add frames, save the episode, finalize
    resumed = LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    state_shape = tuple(resumed.features["observation.state"]["shape"])
    for k in range(new_frames):
        frame = {"observation.state": np.full(state_shape, k, np.float32),
                 "action": np.full(state_shape, k + 1, np.float32), "task": NEW_TASK}
        for key in resumed.meta.camera_keys:
            frame[key] = np.full(tuple(resumed.features[key]["shape"]), 200, np.uint8)
        resumed.add_frame(frame)
    resumed.save_episode(parallel_encoding=False)
    resumed.finalize()

    result["reloaded"] = summary(LeRobotDataset(REPO_ID, root=root, video_backend="pyav"))
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
