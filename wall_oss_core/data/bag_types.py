"""The rosbags type store for wall_oss bags: ROS 2 Kilted's standard types plus the project's own
messages, registered from the same msg/*.msg files the interfaces are built from, so bags written
here are self-describing and readable by `ros2 bag` on a full install."""
from __future__ import annotations

from functools import lru_cache

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from wall_oss_core.paths import share_file

PACKAGE = "wall_oss"


@lru_cache(maxsize=1)
def wall_oss_typestore() -> Typestore:
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(share_file("msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store
