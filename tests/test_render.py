"""Compositing: mask, cutout and backgrounds, on a real photo."""

from __future__ import annotations

import numpy as np
import pytest

from u2edge.errors import ImageError
from u2edge.render import Background, Mode, parse_color, render


@pytest.fixture(scope="module")
def frame_and_mask(engine, photos):
    frame = photos["astronaut.png"]
    return frame, engine(frame)


def test_mask_and_cutout(frame_and_mask):
    frame, mask = frame_and_mask
    gray = render(frame, mask, Mode.MASK)
    assert gray.dtype == np.uint8 and gray.shape == mask.shape
    assert np.abs(gray / 255.0 - mask).max() <= 0.5 / 255 + 1e-6
    cutout = render(frame, mask, "cutout")
    assert cutout.shape == frame.shape[:2] + (4,)
    assert np.array_equal(cutout[:, :, :3], frame) and np.array_equal(cutout[:, :, 3], gray)


def test_backgrounds_keep_the_subject_and_replace_the_rest(frame_and_mask, photos):
    frame, mask = frame_and_mask
    subject, rest = mask > 0.99, mask < 0.01
    green = render(frame, mask, Mode.BACKGROUND, Background(color=parse_color("#00ff00")))
    assert np.abs(green[subject].astype(int) - frame[subject]).max() <= 3
    assert np.abs(green[rest].astype(int) - (0, 255, 0)).max() <= 3
    other = photos["coffee.png"]
    replaced = render(frame, mask, Mode.BACKGROUND, Background(image=other))
    assert replaced.shape == frame.shape
    assert np.abs(replaced[subject].astype(int) - frame[subject]).max() <= 3
    blurred = render(frame, mask, Mode.BACKGROUND, Background(blur=31))
    assert np.abs(blurred[rest].astype(int) - frame[rest]).mean() > 3  # the background really blurred
    assert np.abs(blurred[subject].astype(int) - frame[subject]).max() <= 3


def test_colors():
    assert parse_color("#ff8000") == (0, 128, 255)
    assert parse_color("1,2,3") == (3, 2, 1)
    for bad in ("green", "#12345", "1,2,300"):
        with pytest.raises(ImageError, match="bad color"):
            parse_color(bad)
