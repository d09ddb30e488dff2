"""Camera frames → numpy RGB uint8 (H, W, 3), without ROS, copying only when the pixels must change.

cv_bridge for ROS 2 is not installable here. Every raw encoding we accept is 8-bit, so the frame is
first viewed in place (`np.frombuffer`, honouring `step` row padding). An rgb8 frame is returned as
that read-only view: zero copies. Other encodings need their channels reordered, dropped or
replicated; a strided numpy view could do that without copying, but whoever later needs contiguous
memory (PIL, torch) would then pay numpy's per-element strided copy, about 100x slower than one
OpenCV conversion (bench/bench_image_conversion.py). So those are converted once, here, with
cv2.cvtColor straight from the message buffer.

The `*_msg_*` functions only read attributes, so they accept rclpy messages and rosbags messages
alike (the live node and offline bag evaluation convert frames with the same code).
"""
from __future__ import annotations

import cv2
import numpy as np

# encoding → (bytes per pixel, OpenCV conversion to RGB; None = already RGB, served as a view)
_LAYOUTS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
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
    """An 8-bit raw frame as (height, width, 3) RGB uint8: a read-only view of `data` for rgb8, one
    OpenCV conversion for the other encodings.

    data: any buffer (bytes, array.array, memoryview, uint8 ndarray); step: bytes per row (≥ width ×
    bytes per pixel; extra bytes are row padding and are skipped by the view's stride).
    """
    if encoding not in _LAYOUTS:
        raise ImageError("unknown_encoding",
                         f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, conversion = _LAYOUTS[encoding]
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
    # rows of `step` bytes, padding cut off; splitting the contiguous row into pixels is still a view
    rows = buffer.reshape(height, step)[:, :row_bytes]
    if conversion is None:
        pixels = rows.reshape(height, width, 3)
        pixels.flags.writeable = False  # the frame belongs to the message
        return pixels
    return cv2.cvtColor(rows.reshape(height, width, channels) if channels > 1 else rows, conversion)


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rclpy or rosbags) → RGB; see `raw_to_rgb`."""
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
