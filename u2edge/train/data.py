"""Training data: image/mask pairs checked once, the official augmentation, and randomness that is
a pure function of (seed, epoch, position), so that a resumed run draws exactly what an
uninterrupted one would, whatever the number of loader workers. Numpy and OpenCV only.

The official recipe (``u2net_train.py``: ``RescaleT(320)``, ``RandomCrop(288)``, ``ToTensorLab``):
resize image and mask to ``imgsz`` square, ignoring aspect ratio; crop ``0.9 * imgsz`` at random;
flip; divide the image by its own max and apply ImageNet mean/std, and the mask by its own max.
The official loader flips rows (``image[::-1]``), upside down; u2edge flips left-right, which
keeps the sky up. Validation runs the model exactly as ``u2edge image`` would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageError
from ..images import read_image, read_mask
from ..processing import Preprocessing, preprocess, resize_square

__all__ = ["Pair", "check_pairs", "split_pairs", "crop_size", "epoch_order", "sample", "read_target"]

CROP_FRACTION = 288 / 320  # the official RandomCrop(288) after RescaleT(320)


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path


def read_target(pair: Pair, *, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 BGR image, HxW uint8 mask) of a pair; one ImageError naming the file otherwise."""
    image = read_image(pair.image, max_pixels=max_pixels)
    mask = read_mask(pair.mask, max_pixels=max_pixels, strict=True)
    if mask.shape != image.shape[:2]:
        raise ImageError(f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {pair.image.name} is "
                         f"{image.shape[1]}x{image.shape[0]}; a mask must be its image's size")
    return image, mask


def check_pairs(pairs: Sequence[Pair], *, max_pixels: int | None = None,
                step=lambda pair: None) -> tuple[list[Pair], list[str]]:
    """The pairs that read as a training pair, and one problem line for each that does not
    (unreadable, a mask of another size, a mask that is not single-channel). ``step`` is
    called with each pair, for a progress bar."""
    good, problems = [], []
    for pair in pairs:
        step(pair)
        try:
            read_target(pair, max_pixels=max_pixels)
        except ImageError as exc:
            problems.append(str(exc))
        else:
            good.append(pair)
    return good, problems


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, validation): ``fraction`` of the pairs, at least one when there are two or more,
    drawn by ``seed``; each keeps the folder's order."""
    count = min(math.ceil(len(pairs) * fraction), len(pairs) - 1) if fraction > 0 else 0
    held = set(np.random.default_rng([seed, 0x5A11]).permutation(len(pairs))[:count].tolist())
    return ([p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held])


def crop_size(imgsz: int) -> int:
    """The training crop for an input side, 288 for the official 320 (a multiple of 32 below)."""
    return max(32, int(imgsz * CROP_FRACTION) // 32 * 32)


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training pairs in ``epoch`` (0-based)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def sample(image: np.ndarray, mask: np.ndarray, spec: Preprocessing, *, seed: int, epoch: int,
           position: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented training sample: (3xCxC float32 input, 1xCxC float32 target in [0, 1]), with
    C the crop size. The crop and flip depend only on (seed, epoch, position)."""
    rng = np.random.default_rng([seed, epoch, position])
    size, crop = spec.imgsz, crop_size(spec.imgsz)
    small = resize_square(image, size)
    label = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    top, left = (int(v) for v in rng.integers(0, size - crop + 1, 2))
    small = small[top:top + crop, left:left + crop]
    label = label[top:top + crop, left:left + crop]
    if rng.random() >= 0.5:
        small, label = small[:, ::-1], label[:, ::-1]
    x = preprocess(np.ascontiguousarray(small), replace(spec, imgsz=crop))
    peak = float(label.max())
    y = label.astype(np.float32) * (1.0 / peak if peak > 0 else 0.0)
    return x, y[None]
