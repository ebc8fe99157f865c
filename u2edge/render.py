"""Turning a frame and its mask into an output image: mask, cutout, a new background, an overlay
(the mask tinted over the frame, with its contour) or the frame and mask side by side.

Blending runs in bands of rows, so an 8000x8000 frame needs no full-size float copies.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ImageError

__all__ = ["Mode", "Background", "render", "parse_color", "flatten"]

_BAND = 256  # rows blended at a time


class Mode(str, enum.Enum):
    MASK = "mask"  # 8-bit grayscale mask
    CUTOUT = "cutout"  # BGRA, alpha = mask
    BACKGROUND = "background"  # the subject over a color, an image or the blurred frame
    OVERLAY = "overlay"  # the frame with the mask tinted over it and its contour drawn
    SIDE_BY_SIDE = "side-by-side"  # the frame, then the mask, in one image twice as wide


@dataclass(frozen=True)
class Background:
    """Exactly one of: a BGR color, a BGR image (resized to each frame), or a blur kernel size."""

    color: tuple[int, int, int] | None = None
    image: np.ndarray | None = None
    blur: int | None = None

    def for_frame(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if self.color is not None:
            return np.asarray(self.color, np.uint8).reshape(1, 1, 3)
        if self.image is not None:
            return cv2.resize(self.image, (w, h), interpolation=cv2.INTER_AREA)
        k = int(self.blur) | 1  # odd kernel
        return cv2.GaussianBlur(frame, (k, k), 0)


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB', 'RRGGBB' or 'R,G,B' -> a BGR triple."""
    raw = text.strip().lstrip("#")
    try:
        if "," in raw:
            r, g, b = (int(v) for v in raw.split(","))
        elif len(raw) == 6:
            r, g, b = (int(raw[i:i + 2], 16) for i in (0, 2, 4))
        else:
            raise ValueError
    except ValueError:
        raise ImageError(f"bad color {text!r}; use '#RRGGBB' or 'R,G,B'") from None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ImageError(f"bad color {text!r}: each channel must be 0..255")
    return b, g, r


def mask_to_u8(mask: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(mask, alpha=255.0)


def render(frame: np.ndarray, mask: np.ndarray, mode: Mode | str = Mode.MASK,
           background: Background | None = None) -> np.ndarray:
    """HxWx3 uint8 BGR frame + HxW float mask -> the output image for ``mode``."""
    mode = Mode(mode)
    if mode is Mode.MASK:
        return mask_to_u8(mask)
    if mode is Mode.CUTOUT:
        out = np.empty(frame.shape[:2] + (4,), np.uint8)
        out[:, :, :3] = frame
        out[:, :, 3] = mask_to_u8(mask)
        return out
    if mode is Mode.OVERLAY:
        return _overlay(frame, mask)
    if mode is Mode.SIDE_BY_SIDE:
        return np.hstack([frame, cv2.cvtColor(mask_to_u8(mask), cv2.COLOR_GRAY2BGR)])
    if background is None:
        raise ImageError("background mode needs a background: --bg-color, --bg-image or --bg-blur")
    bg = background.for_frame(frame)
    out = np.empty_like(frame)
    for top in range(0, frame.shape[0], _BAND):
        rows = slice(top, top + _BAND)
        alpha = mask[rows, :, None]
        fg = frame[rows].astype(np.float32)
        back = bg if bg.shape[0] == 1 else bg[rows]
        out[rows] = np.clip(back + alpha * (fg - back) + 0.5, 0, 255).astype(np.uint8)
    return out


_TINT = np.array([0, 200, 0], np.float32)  # BGR green
_CONTOUR = (0, 255, 255)  # BGR yellow


def _overlay(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.empty_like(frame)
    for top in range(0, frame.shape[0], _BAND):
        rows = slice(top, top + _BAND)
        alpha = 0.5 * mask[rows, :, None]
        out[rows] = np.clip(frame[rows] + alpha * (_TINT - frame[rows]) + 0.5, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours((mask > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, _CONTOUR, max(1, round(max(frame.shape[:2]) / 400)))
    return out


def flatten(image: np.ndarray, square: int = 16) -> np.ndarray:
    """A BGRA cutout over a gray checkerboard, for sinks that cannot hold alpha (screens, videos);
    other images pass through (gray ones as BGR)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] != 4:
        return image
    alpha = image[:, :, 3].astype(np.float32) * (1.0 / 255.0)
    return cv2.blendLinear(np.ascontiguousarray(image[:, :, :3]), _checkerboard(image.shape[:2], square),
                           alpha, 1.0 - alpha)


@functools.lru_cache(maxsize=4)
def _checkerboard(shape: tuple[int, int], square: int) -> np.ndarray:
    ys, xs = np.indices(shape)
    gray = np.where((ys // square + xs // square) % 2 == 0, 200, 140).astype(np.uint8)
    board = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    board.setflags(write=False)  # shared between frames
    return board
