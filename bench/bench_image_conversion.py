"""Image → numpy cost: the policy node's converter vs a naive copying one, side by side.

Frames are real sensor_msgs/Image messages as rclpy hands them to a callback (serialized and
deserialized, so `data` has the type received from DDS). Columns:
  ours     wall_oss_core.policy.images.image_msg_to_rgb: a zero-copy view for rgb8, one cv2 conversion otherwise
  naive    copy the buffer into a new array, reshape, reorder channels with numpy and copy
  view     the all-views alternative (strided numpy view, e.g. [..., ::-1] for bgr8) followed by the
           contiguous copy a consumer such as PIL or torch then makes; why only rgb8 is served as a view
For reference it also times decoding the same frame as JPEG (CompressedImage transport).
Last line: image_to_numpy_us=<median µs of ours for rgb8 at the given size>.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from wall_oss_core.policy.images import compressed_to_rgb, image_msg_to_rgb

ENCODINGS = ("rgb8", "bgr8", "rgba8", "mono8")


def _pixels(msg: Image) -> np.ndarray:
    channels = {"mono8": 1, "rgba8": 4}.get(msg.encoding, 3)
    buffer = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :msg.width * channels]
    return buffer.reshape(msg.height, msg.width, channels)


def naive_to_rgb(msg: Image) -> np.ndarray:
    pixels = np.array(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return _strided_rgb(pixels.reshape(msg.height, msg.width, -1), msg.encoding).copy()


def _strided_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "bgr8":
        return pixels[:, :, ::-1]
    if encoding == "rgba8":
        return pixels[:, :, :3]
    if encoding == "mono8":
        return np.broadcast_to(pixels, pixels.shape[:2] + (3,))
    return pixels


def view_then_copy(msg: Image) -> np.ndarray:
    return np.ascontiguousarray(_strided_rgb(_pixels(msg), msg.encoding))


def median_us(function, repeats: int) -> float:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        function()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e3


def received_message(rgb: np.ndarray, encoding: str) -> Image:
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.concatenate([rgb, alpha], axis=2),
              "mono8": rgb[:, :, :1]}[encoding]
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * pixels.shape[2])
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return deserialize_message(serialize_message(msg), Image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    rgb = np.random.default_rng(0).integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)

    print(f"{args.width}x{args.height}, median of {args.repeats} conversions")
    print(f"{'encoding':<9} {'ours us':>9} {'naive us':>9} {'view us':>9} {'naive/ours':>11} {'view/ours':>10}")
    results = {}
    for encoding in ENCODINGS:
        msg = received_message(rgb, encoding)
        ours_image = image_msg_to_rgb(msg)
        np.testing.assert_array_equal(ours_image, naive_to_rgb(msg))  # same pixels every way
        np.testing.assert_array_equal(ours_image, view_then_copy(msg))
        ours = median_us(lambda msg=msg: image_msg_to_rgb(msg), args.repeats)
        naive = median_us(lambda msg=msg: naive_to_rgb(msg), args.repeats)
        view = median_us(lambda msg=msg: view_then_copy(msg), args.repeats)
        results[encoding] = ours
        print(f"{encoding:<9} {ours:>9.1f} {naive:>9.1f} {view:>9.1f} {naive / ours:>10.0f}x {view / ours:>9.1f}x")
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    decode = median_us(lambda: compressed_to_rgb(jpeg, "jpeg"), max(10, args.repeats // 10))
    print(f"jpeg decode (CompressedImage transport): {decode:.0f} us = {decode / results['rgb8']:.0f}x ours for rgb8")
    print(f"image_to_numpy_us={results['rgb8']:.2f}")


if __name__ == "__main__":
    main()
