"""Image → numpy RGB: every raw encoding (with and without row padding), compressed frames, bad input."""
import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from wall_oss_core.data.bag_types import wall_oss_typestore
from wall_oss_core.policy.images import (
    SUPPORTED_ENCODINGS,
    ImageError,
    compressed_msg_to_rgb,
    compressed_to_rgb,
    image_msg_to_rgb,
    raw_to_rgb,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(5, 7, 1), dtype=np.uint8)


def encode(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels as the camera would send them, the RGB the converter must return)."""
    if encoding == "rgb8":
        return rgb, rgb
    if encoding == "bgr8":
        return rgb[:, :, ::-1], rgb
    if encoding == "rgba8":
        return np.concatenate([rgb, ALPHA], axis=2), rgb
    if encoding == "bgra8":
        return np.concatenate([rgb[:, :, ::-1], ALPHA], axis=2), rgb
    gray = rgb[:, :, 1]
    return gray, np.repeat(gray[:, :, None], 3, axis=2)


def packed_rows(pixels: np.ndarray, padding: int) -> tuple[bytes, int]:
    rows = pixels.reshape(pixels.shape[0], -1)
    step = rows.shape[1] + padding
    padded = np.full((rows.shape[0], step), 0xEE, dtype=np.uint8)
    padded[:, :rows.shape[1]] = rows
    return padded.tobytes(), step


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_raw_encodings_become_rgb(encoding, padding):
    pixels, expected = encode(RGB, encoding)
    data, step = packed_rows(pixels, padding)
    rgb = raw_to_rgb(data, 5, 7, encoding, step)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected)
    if encoding == "rgb8":
        assert np.shares_memory(rgb, np.frombuffer(data, np.uint8)), "rgb8 must not be copied"
        assert not rgb.flags.writeable, "the view must not let anyone write into the message"
    else:
        assert rgb.flags.c_contiguous, "converted frames are contiguous, ready for PIL / torch"


def test_rclpy_image_message_is_viewed_in_place():
    data, step = packed_rows(RGB, 2)
    msg = Image(height=5, width=7, encoding="rgb8", step=step, data=array.array("B", data))
    rgb = image_msg_to_rgb(msg)
    np.testing.assert_array_equal(rgb, RGB)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(image_msg_to_rgb(Image(height=5, width=7, encoding="bgr8", step=21,
                                                         data=array.array("B", RGB[:, :, ::-1].tobytes()))), RGB)


def test_rosbags_image_message_converts_with_the_same_function():
    store = wall_oss_typestore()
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    ImageType = store.types["sensor_msgs/msg/Image"]
    data, step = packed_rows(RGB, 0)
    msg = ImageType(header=Header(stamp=Time(sec=1, nanosec=0), frame_id="cam"), height=5, width=7,
                    encoding="rgb8", is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
    decoded = store.deserialize_cdr(store.serialize_cdr(msg, ImageType.__msgtype__), ImageType.__msgtype__)
    np.testing.assert_array_equal(image_msg_to_rgb(decoded), RGB)


@pytest.mark.parametrize("kwargs, reason", [
    (dict(encoding="yuv422"), "unknown_encoding"),
    (dict(encoding="16UC1"), "unknown_encoding"),
    (dict(step=20), "bad_step"),                      # shorter than 7 px x 3 B
    (dict(height=6), "size_mismatch"),                # buffer too short for the claimed size
    (dict(encoding="rgba8", step=28), "size_mismatch"),  # rgb data labelled as rgba
    (dict(height=0), "bad_size"),
    (dict(width=-1), "bad_size"),
])
def test_bad_raw_frames_are_rejected_with_a_reason(kwargs, reason):
    data, step = packed_rows(RGB, 0)
    args = dict(data=data, height=5, width=7, encoding="rgb8", step=step) | kwargs
    with pytest.raises(ImageError) as raised:
        raw_to_rgb(**args)
    assert raised.value.reason == reason
    assert str(raised.value)


@pytest.mark.parametrize("fmt, extension", [("png", ".png"), ("rgb8; png compressed bgr8", ".png")])
def test_png_decodes_losslessly_to_rgb(fmt, extension):
    ok, encoded = cv2.imencode(extension, np.ascontiguousarray(RGB[:, :, ::-1]))  # OpenCV encodes BGR
    assert ok
    msg = CompressedImage(format=fmt, data=array.array("B", encoded.tobytes()))
    rgb = compressed_msg_to_rgb(msg)
    np.testing.assert_array_equal(rgb, RGB)


def test_jpeg_decodes_to_rgb_within_compression_error():
    smooth = np.zeros((32, 48, 3), dtype=np.uint8)
    smooth[:, :, 0] = np.linspace(0, 250, 48, dtype=np.uint8)[None]  # red ramp
    smooth[:, :, 2] = 40                                            # a little blue
    ok, encoded = cv2.imencode(".jpg", smooth[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 95])
    rgb = compressed_to_rgb(encoded.tobytes(), "jpeg")
    assert rgb.shape == smooth.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - smooth.astype(int)).mean() < 3.0
    assert rgb[:, :, 0].mean() > rgb[:, :, 2].mean()  # channels came back in RGB order


def test_mono_png_becomes_three_equal_channels():
    gray = RGB[:, :, 0].copy()
    ok, encoded = cv2.imencode(".png", gray)
    rgb = compressed_to_rgb(encoded.tobytes(), "png")
    np.testing.assert_array_equal(rgb, np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize("data, fmt, reason", [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "png", "decode_failed"),
    (b"not an image at all", "jpeg", "decode_failed"),
    (b"", "jpeg", "empty"),
    (b"\x00" * 16, "tiff", "unknown_format"),
])
def test_bad_compressed_frames_are_rejected_with_a_reason(data, fmt, reason):
    with pytest.raises(ImageError) as raised:
        compressed_to_rgb(data, fmt)
    assert raised.value.reason == reason
