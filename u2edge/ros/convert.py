"""sensor_msgs/Image to numpy and back, with plain numpy and OpenCV: no ROS import.

Works on any object with the Image fields (``height``, ``width``, ``encoding``, ``step``, ``data``),
so it is tested without rclpy. Rows may be padded (``step`` larger than a row's bytes); 8-bit
encodings have no byte order, so ``is_bigendian`` does not matter.
"""

from __future__ import annotations

import array

import cv2
import numpy as np

from ..errors import ImageError

__all__ = ["ENCODINGS", "image_array", "to_bgr", "image_fields"]

# encoding -> channels; the encodings the node takes
ENCODINGS = {"bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono8": 1}
_TO_BGR = {"rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR, "rgba8": cv2.COLOR_RGBA2BGR,
           "mono8": cv2.COLOR_GRAY2BGR}
_OUTPUT_ENCODINGS = {1: "mono8", 3: "bgr8", 4: "bgra8"}  # channels -> encoding of an image u2edge renders


def image_array(msg) -> np.ndarray:
    """The message's pixels as an HxW (mono8) or HxWxC uint8 array, a view of ``msg.data``
    (read-only) with the row padding skipped."""
    encoding = str(msg.encoding)
    channels = ENCODINGS.get(encoding)
    if channels is None:
        raise ImageError(f"image encoding {encoding!r} is not supported; publish "
                         f"{', '.join(ENCODINGS)} (image_proc or cv_bridge convert others)")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise ImageError(f"an empty {width}x{height} {encoding} image; an image needs at least one pixel")
    row = width * channels
    if step < row:
        raise ImageError(f"a {width}x{height} {encoding} image with step {step}: a row takes {row} bytes, "
                         f"so step must be at least {row}")
    data = msg.data
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview, array.array)) \
        else np.asarray(data, np.uint8)
    needed = step * (height - 1) + row  # the last row's padding may be left out
    if buffer.size < needed:
        raise ImageError(f"a {width}x{height} {encoding} image with step {step} needs {needed} bytes of data, "
                         f"has {buffer.size}")
    shape, strides = ((height, width), (step, 1)) if channels == 1 else ((height, width, channels), (step, channels, 1))
    return np.lib.stride_tricks.as_strided(buffer, shape, strides, writeable=False)


def to_bgr(msg) -> np.ndarray:
    """An HxWx3 uint8 BGR frame from an Image message, as the engine and renderer take it."""
    image = image_array(msg)
    code = _TO_BGR.get(str(msg.encoding))
    if code is None:  # bgr8: a copy, contiguous and the frame's own
        return image.copy()
    return cv2.cvtColor(image, code)


def image_fields(image: np.ndarray) -> dict:
    """The Image fields for an image u2edge rendered: mono8 (HxW), bgr8 or bgra8, unpadded rows.
    ``data`` is an ``array.array('B')``, which rclpy's messages take without a per-byte check."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"a {image.dtype} image of shape {image.shape} has no ROS encoding here; "
                         "give HxW, HxWx3 (BGR) or HxWx4 (BGRA) uint8")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(image).data)
    return {"height": height, "width": width, "encoding": _OUTPUT_ENCODINGS[channels], "is_bigendian": 0,
            "step": width * channels, "data": data}
