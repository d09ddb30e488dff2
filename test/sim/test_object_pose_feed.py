"""The scripted expert's privileged object poses in the graph: the newest poses the sim reported,
refused when missing or stale, and validated."""
from __future__ import annotations

import numpy as np
import pytest

from wall_oss_core.policy.interface import PolicyError
from wall_oss_core.sim.expert import ObjectPoseFeed


def test_feed_serves_the_newest_poses_and_refuses_missing_or_stale_ones():
    now = [100.0]
    feed = ObjectPoseFeed(max_age=0.5, clock=lambda: now[0])
    with pytest.raises(PolicyError, match="no object poses"):
        feed()
    pose = np.eye(4)
    pose[:3, 3] = [0.1, 0.5, 0.02]
    feed.update({"box": pose})
    moved = pose.copy()
    moved[2, 3] = 0.12
    now[0] = 100.4
    feed.update({"box": moved})  # the cube was lifted: the feed serves where it is now
    np.testing.assert_array_equal(feed()["box"], moved)
    now[0] = 101.0
    with pytest.raises(PolicyError, match="0.6 s old"):
        feed()


def test_feed_rejects_malformed_poses_and_keeps_the_previous_ones():
    feed = ObjectPoseFeed(clock=lambda: 0.0)
    feed.update({"box": np.eye(4)})
    bad = np.eye(4)
    bad[0, 3] = np.nan
    for poses in ({"box": bad}, {"box": np.eye(3)}):
        with pytest.raises(ValueError, match="finite 4×4"):
            feed.update(poses)
    np.testing.assert_array_equal(feed()["box"], np.eye(4))
