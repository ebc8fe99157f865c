"""Steady masks on video: a temporal exponential moving average whose weight falls where the image changed.

Per-frame masks flicker at object edges, where the network is unsure and small changes in the
frame (sensor noise, compression) tip it either way. Averaging each mask with the previous output
steadies them; but averaging where the subject moved would leave a ghost of where it was. So the
previous output's weight is ``strength`` where the image is unchanged and falls to 0 where it
changed:

    d = the colour change between consecutive frames (the largest of B, G, R), measured on a
        thumbnail 160 px on its longer side, blurred 3x3, then spread to neighbouring cells (5x5 max)
    w = strength * clip((change - d) / (change / 2), 0, 1)       # full weight up to change / 2
    out_t = w * out_t-1 + (1 - w) * mask_t

Why each part (measured by ``benchmarks/smoothing.py``): a colour change, not a gray one, because a
subject and its background often share a gray level (14 to 44% of the pixels a subject left
changed by under 24 gray levels); the spread, because the mask's soft edge reaches a few pixels past
the subject onto pixels whose image does not change; the thumbnail, because averaging cells of
pixels quiets sensor noise, so that ``change`` can be small, and costs little at any frame size;
the dead zone up to ``change / 2``, so that noise that gets through does not weaken the smoothing.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .._deps import require
from ..errors import U2EdgeError

__all__ = ["MaskSmoother", "SmoothingError", "DEFAULT_STRENGTH", "DEFAULT_CHANGE"]

DEFAULT_STRENGTH = 0.6  # flicker falls to about a third (an EMA's (1 - s) / sqrt(1 + s)), and settles in ~2 frames
DEFAULT_CHANGE = 8.0  # colour levels (0-255) on the thumbnail: above its sensor noise (<= 4 at sigma 8, 640x480)
WORK_SIDE = 160  # the thumbnail's longer side: half the network's 320 px input, the detail a mask has
_SPREAD = np.ones((5, 5), np.uint8)


class SmoothingError(U2EdgeError, ValueError):
    """A smoothing strength or change out of range."""


class MaskSmoother:
    """``smoother(frame, mask) -> mask`` for consecutive frames of one stream, in order.

    ``strength`` (0 to 1, exclusive of 1) is the previous output's weight where nothing changed: 0
    turns smoothing off, 0.6 (the default) cuts flicker to about a third. ``change`` is the colour
    change (0-255 levels) at which the previous output stops counting; below half of it the weight is
    full. A change of frame or mask size starts again, as does ``reset()``. The mask returned is a
    new float32 array (the first frame's, and every one at strength 0, is ``mask`` itself).
    """

    def __init__(self, strength: float = DEFAULT_STRENGTH, change: float = DEFAULT_CHANGE) -> None:
        if not 0.0 <= strength < 1.0:
            raise SmoothingError(f"smoothing strength {strength} is out of range: give a value from 0 (off) up to, "
                                 f"but not including, 1 ({DEFAULT_STRENGTH} is the default)")
        if not 0.0 < change < math.inf:
            raise SmoothingError(f"smoothing change {change} is out of range: give a positive number of colour "
                                 f"levels ({DEFAULT_CHANGE:g} is the default)")
        self.strength, self.change = float(strength), float(change)
        self._thumb: np.ndarray | None = None
        self._out: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the stream: the next frame starts again."""
        self._thumb = self._out = None

    def __call__(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.strength == 0.0:
            return mask
        cv2 = require("cv2")
        thumb = _thumbnail(cv2, frame)
        if self._out is None or self._out.shape != mask.shape or self._thumb.shape != thumb.shape:
            self._thumb, self._out = thumb, mask.astype(np.float32, copy=True)
            return mask
        diff = cv2.absdiff(thumb, self._thumb)
        if diff.ndim == 3:  # the largest channel's change; numpy's max over a short last axis is 20x slower
            diff = functools.reduce(np.maximum, [diff[..., c] for c in range(diff.shape[2])])
        diff = cv2.dilate(diff, _SPREAD)  # the mask's soft edge reaches past the pixels that changed
        weight = (self.change - diff.astype(np.float32)) * (2.0 * self.strength / self.change)
        np.clip(weight, 0.0, self.strength, out=weight)
        weight = cv2.resize(weight, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
        out = np.subtract(self._out, mask, dtype=np.float32)  # in place from here: w * previous + (1 - w) * mask
        out *= weight
        out += mask
        np.copyto(self._out, out)  # the caller may draw on its mask; the state stays ours, in a buffer kept
        self._thumb = thumb
        return out


def _thumbnail(cv2, frame: np.ndarray) -> np.ndarray:
    """``frame`` at most ``WORK_SIDE`` px on its longer side (area-averaged), blurred 3x3, uint8."""
    h, w = frame.shape[:2]
    scale = WORK_SIDE / max(h, w)
    if scale < 1.0:
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.blur(frame, (3, 3))
