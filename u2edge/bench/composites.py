"""A salient-object dataset with exact ground truth, made from real photos: a region of one photo,
cut out with a random polygon, pasted onto another photo. The polygon is the mask.

The official models do poorly on such images (they find the background photo's own subject),
which makes them a test of fine-tuning: a model that learns the task scores well on composites
it never saw, and the official weights do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..images import write_image

__all__ = ["PHOTOS", "photo_pairs", "polygon_mask", "composite", "write_composites", "write_dataset"]

# scikit-image's color photos: subjects, textures and scenes
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "brick.png", "grass.png",
          "gravel.png", "color.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "motorcycle_right.png")


def polygon_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An HxW uint8 mask (0 or 255) of a random star-shaped polygon of 5 to 9 corners, covering
    about a tenth to a third of the frame, placed at random. ``size`` is (width, height)."""
    width, height = size
    corners = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radius = min(width, height) * rng.uniform(0.22, 0.38)
    radii = radius * rng.uniform(0.55, 1.0, corners)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
    return mask


def composite(foreground: np.ndarray, background: np.ndarray, size: tuple[int, int],
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): a polygon of ``foreground`` pasted onto ``background``, both resized to
    ``size`` (width, height), the region taken from a random place of the foreground."""
    back = cv2.resize(background, size, interpolation=cv2.INTER_AREA)
    fore = cv2.resize(foreground, size, interpolation=cv2.INTER_AREA)
    mask = polygon_mask(size, rng)
    ys, xs = np.nonzero(mask)
    dx = int(rng.integers(-xs.min(), size[0] - xs.max()))  # where the region comes from in the foreground
    dy = int(rng.integers(-ys.min(), size[1] - ys.max()))
    image = back.copy()
    image[ys, xs] = fore[ys + dy, xs + dx]
    return image, mask


def write_composites(folder: Path, photos: Sequence[np.ndarray], count: int, *, seed: int,
                     size: tuple[int, int] = (320, 240), pairs: Sequence[tuple[int, int]] | None = None) -> Path:
    """Write ``count`` composites as ``folder/images/NNNN.png`` and ``folder/masks/NNNN.png``.
    ``pairs`` lists the (foreground, background) photo indices to draw from (default: every
    ordered pair of different photos), so that a training set and a test set can use different ones."""
    rng = np.random.default_rng(seed)
    if pairs is None:
        pairs = [(a, b) for a in range(len(photos)) for b in range(len(photos)) if a != b]
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        fg, bg = pairs[int(rng.integers(len(pairs)))]
        image, mask = composite(photos[fg], photos[bg], size, rng)
        write_image(folder / "images" / f"{i:04d}.png", image)
        write_image(folder / "masks" / f"{i:04d}.png", mask)
    return folder


def photo_pairs(count: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The ordered (foreground, background) pairs of ``count`` photos, split into two disjoint
    sets, about three quarters and one quarter: a training set, and a test set of pairs it never saw."""
    pairs = [(a, b) for a in range(count) for b in range(count) if a != b]
    return [p for p in pairs if sum(p) % 4], [p for p in pairs if not sum(p) % 4]


def write_dataset(folder: Path, photos: Sequence[np.ndarray], *, train: int, test: int, seed: int = 0,
                  size: tuple[int, int] = (320, 240)) -> tuple[Path, Path]:
    """``folder/train`` and ``folder/test`` (each with images/ and masks/), drawn from disjoint
    photo pairs with different seeds: the test composites are new to a model trained on the others."""
    train_pairs, test_pairs = photo_pairs(len(photos))
    return (write_composites(folder / "train", photos, train, seed=seed, size=size, pairs=train_pairs),
            write_composites(folder / "test", photos, test, seed=seed + 1, size=size, pairs=test_pairs))
