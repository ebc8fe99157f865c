"""Pre- and post-processing shared by every backend, so each gives the same mask for a frame.

The recipe is the official U-2-Net one (also rembg's): RGB order, resize to the model's square
input ignoring aspect ratio, divide by the image's own max pixel value, ImageNet mean/std; then
take the fused output d0, min-max normalize it (a constant map becomes 0) and resize it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .errors import ImageError

__all__ = ["Preprocessing", "check_frame", "resize_square", "preprocess", "postprocess", "METADATA_PREFIX"]

METADATA_PREFIX = "u2edge."


@dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes the network's input; the defaults are the official recipe."""

    imgsz: int = 320
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_normalize: bool = True  # divide by the image's own max pixel value before mean/std
    channel_order: str = "RGB"

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX metadata_props and engine sidecars."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, tuple):
                value = ",".join(repr(v) for v in value)
            elif isinstance(value, bool):
                value = str(int(value))
            out[METADATA_PREFIX + key] = str(value)
        return out

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], *, imgsz: int | None = None) -> "Preprocessing":
        """Read what ``to_metadata`` wrote; missing keys take the official defaults."""
        default = cls() if imgsz is None else cls(imgsz=imgsz)

        def get(key, parse):
            raw = meta.get(METADATA_PREFIX + key)
            return getattr(default, key) if raw is None else parse(raw)

        floats = lambda raw: tuple(float(v) for v in raw.split(","))  # noqa: E731
        return cls(imgsz=get("imgsz", int), mean=get("mean", floats), std=get("std", floats),
                   max_normalize=get("max_normalize", lambda raw: raw == "1"),
                   channel_order=get("channel_order", str))


def check_frame(frame: np.ndarray) -> None:
    """Refuse anything but an HxWx3 uint8 array, naming what was received."""
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"expected an HxWx3 uint8 numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise ImageError(
            f"expected an HxWx3 uint8 frame, got shape {frame.shape} dtype {frame.dtype}; "
            "convert gray, BGRA or 16-bit images with u2edge.to_bgr8(image)"
        )


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` x ``size``, ignoring aspect ratio: area averaging when both
    sides shrink, bilinear otherwise."""
    h, w = image.shape[:2]
    shrink = h >= size and w >= size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def preprocess(frame: np.ndarray, spec: Preprocessing, *, rgb: bool = False,
               out: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 uint8 (BGR, or RGB with ``rgb=True``) -> 3xSxS float32 network input."""
    check_frame(frame)
    size = spec.imgsz
    small = resize_square(frame, size)
    if (spec.channel_order == "RGB") != rgb:
        small = small[:, :, ::-1]
    peak = float(small.max()) if spec.max_normalize else 255.0
    scale = 1.0 / (max(peak, 1.0) * np.asarray(spec.std, np.float32))
    shift = np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)
    if out is None:
        out = np.empty((3, size, size), np.float32)
    for c in range(3):
        np.multiply(small[:, :, c], scale[c], out=out[c], casting="unsafe")
        out[c] -= shift[c]
    return out


def postprocess(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """SxS fused sigmoid map -> HxW float32 mask in [0, 1]."""
    pred = np.asarray(pred, np.float32).reshape(pred.shape[-2:])
    lo, hi = float(pred.min()), float(pred.max())
    if hi - lo > 1e-6:
        norm = (pred - lo) * (1.0 / (hi - lo))
    else:
        norm = np.zeros_like(pred)  # a constant map: nothing stands out
    if norm.shape != (height, width):
        shrink = height <= norm.shape[0] and width <= norm.shape[1]
        norm = cv2.resize(norm, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.clip(norm, 0.0, 1.0, out=norm)
