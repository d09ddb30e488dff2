"""Camera frames → numpy RGB uint8 (H, W, 3), without ROS and without copying where possible.

cv_bridge for ROS 2 is not installable here, and a copy per frame is wasted work: every raw
encoding we accept is 8-bit, so the frame is a strided view of the message buffer
(`np.frombuffer`, honouring `step` row padding). Channel order is fixed by slicing (BGR → RGB is a
negative-stride view; mono is broadcast to three channels with a zero stride), so the result is
read-only and may be non-contiguous; consumers that need contiguous memory (a model's
preprocessing) copy once, at the point where they resize anyway.

The `*_msg_*` functions only read attributes, so they accept rclpy messages and rosbags messages
alike (the live node and offline bag evaluation convert frames with the same code).
"""
from __future__ import annotations

import cv2
import numpy as np

# encoding → (channels per pixel, channel index order that yields R, G, B)
_LAYOUTS: dict[str, tuple[int, slice | None]] = {
    "rgb8": (3, slice(None)),
    "bgr8": (3, slice(None, None, -1)),
    "rgba8": (4, slice(0, 3)),
    "bgra8": (4, slice(2, None, -1)),
    "mono8": (1, None),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
MAX_IMAGE_SIDE = 16384  # larger than any camera; rejects garbage headers before any allocation


class ImageError(ValueError):
    """A frame that cannot become an RGB image. `reason` is a short stable key for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def raw_to_rgb(data, height: int, width: int, encoding: str, step: int) -> np.ndarray:
    """View an 8-bit raw frame as (height, width, 3) RGB uint8 without copying.

    data: any buffer (bytes, array.array, memoryview, uint8 ndarray); step: bytes per row (≥ width ×
    bytes per pixel; extra bytes are row padding and are skipped by the view's stride).
    """
    if encoding not in _LAYOUTS:
        raise ImageError("unknown_encoding",
                         f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, order = _LAYOUTS[encoding]
    height, width, step = int(height), int(width), int(step)
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise ImageError("bad_size", f"image size {width}x{height} is not a valid camera frame")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageError("bad_step", f"{encoding} {width}x{height}: step {step} is shorter than a row "
                                     f"({width} px x {channels} B = {row_bytes} B)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageError("size_mismatch", f"{encoding} {width}x{height} with step {step} needs {step * height} "
                                          f"bytes, got {buffer.size}")
    pixels = np.lib.stride_tricks.as_strided(buffer, shape=(height, width, channels),
                                             strides=(step, channels, 1), writeable=False)
    if order is None:
        return np.broadcast_to(pixels, (height, width, 3))
    return pixels[:, :, order]


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rclpy or rosbags) → RGB view; see `raw_to_rgb`."""
    return raw_to_rgb(msg.data, msg.height, msg.width, msg.encoding, msg.step)


def compressed_to_rgb(data, format: str) -> np.ndarray:
    """Decode a JPEG or PNG frame to (H, W, 3) RGB uint8 (a new, contiguous array).

    format: CompressedImage.format as image_transport writes it ("jpeg", "png", or
    "bgr8; jpeg compressed bgr8"); only the codec matters, OpenCV reads the pixel layout from the
    stream itself.
    """
    lowered = format.lower()
    if not any(codec in lowered for codec in ("jpeg", "jpg", "png")):
        raise ImageError("unknown_format",
                         f"unsupported compressed image format {format!r}; supported: {', '.join(COMPRESSED_FORMATS)}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageError("empty", f"compressed {format!r} image has no data")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageError("decode_failed", f"compressed image ({buffer.size} B, format {format!r}) could not be "
                                          "decoded; the stream is corrupt or not what the format says")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def compressed_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (rclpy or rosbags) → RGB; see `compressed_to_rgb`."""
    return compressed_to_rgb(msg.data, msg.format)
