"""Where the package's share files (config/, urdf/, msg/, launch/) live: next to wall_oss_core in a
source checkout or editable install, or under <prefix>/share/wall_oss in a colcon/cmake install."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def share_file(relative: str) -> Path:
    """Absolute path of a share file such as "config/bimanual.yaml"; FileNotFoundError if absent."""
    candidates = [_HERE.parent / relative]
    if len(_HERE.parents) > 3:  # <prefix>/lib/python3.X/site-packages/wall_oss_core
        candidates.append(_HERE.parents[3] / "share" / "wall_oss" / relative)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{relative} not found in {[str(c) for c in candidates]}")


BUILTIN_CHECKPOINT = "checkpoints/wall_oss_aloha"


def builtin_checkpoint() -> Path:
    """The built-in trained checkpoint (a tiny Wall-OSS-0.5 trained on ALOHA expert demonstrations in the sim;
    its README says how it was made and what it scores): the default policy of `sim-eval` and the demo."""
    return share_file(BUILTIN_CHECKPOINT)
