"""640x480 camera frames cross processes without loss: the simulated arm's three cameras at a modest rate
into a subscriber in this process, over the shipped Fast DDS profile (conftest points every process at it).

Each render stamps the three cameras' frames alike, so every stamp seen on one camera must arrive on every
camera: a frame missing from one camera is a lost frame. Counts only, no timing thresholds."""
from __future__ import annotations

from collections import defaultdict

from conftest import ROBOT_CONFIG, wait_for

from wall_oss_core.robot.config import load_robot_config
from wall_oss_ros.conversions import stamp_to_seconds
from wall_oss_ros.graph import IMAGE_QOS

ROBOT = load_robot_config(ROBOT_CONFIG)
WIDTH, HEIGHT = 640, 480
FRAMES = 20  # complete renders to collect


def test_640x480_frames_reach_another_process_without_loss(ros_node, node_processes):
    from sensor_msgs.msg import Image

    received: dict[str, list[float]] = defaultdict(list)
    sizes = set()

    def on_image(camera: str, msg: Image):
        received[camera].append(stamp_to_seconds(msg.header.stamp))
        sizes.add((msg.width, msg.height, msg.encoding, len(msg.data)))

    for camera in ROBOT.cameras:
        ros_node.create_subscription(Image, camera.topic, lambda msg, c=camera.name: on_image(c, msg), IMAGE_QOS)
    sim = node_processes("wall_oss_ros.sim_arm_node", params={
        "robot_config": str(ROBOT_CONFIG), "camera_rate_hz": 5.0, "image_width": WIDTH, "image_height": HEIGHT,
        "joint_states_topic": "/image_transport_test/joint_states"})

    def complete_window() -> list[float]:
        """Stamps from the first one every camera received to the last one every camera received."""
        if len(received) < len(ROBOT.cameras):
            return []
        start = max(stamps[0] for stamps in received.values())
        end = min(stamps[-1] for stamps in received.values())
        return sorted({s for stamps in received.values() for s in stamps if start <= s <= end})

    wait_for(lambda: len(complete_window()) >= FRAMES, 120, poll=ros_node.spin_briefly,
             message=f"{FRAMES} renders of all {len(ROBOT.cameras)} cameras")
    assert sim.alive(), sim.log()
    window = complete_window()
    for camera, stamps in received.items():
        in_window = [s for s in stamps if window[0] <= s <= window[-1]]
        assert in_window == window, f"{camera} lost {sorted(set(window) - set(in_window))} (or got duplicates)"
    assert sizes == {(WIDTH, HEIGHT, "rgb8", WIDTH * HEIGHT * 3)}
