"""MaskSmoother on real photos and the official U2-NetP's masks: flicker falls on a still noisy
clip, a moving subject leaves no ghost, and the pipeline applies it in frame order."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from u2edge.bench.clips import add_noise, moving_subject_frames, subject_regions
from u2edge.errors import U2EdgeError
from u2edge.images import read_image
from u2edge.video import Pipeline, open_source
from u2edge.video.smooth import MaskSmoother

SIZE = (320, 240)
# measured here (U2-NetP, ONNX Runtime FP32, 320x240, noise sigma 3): strength 0.6 leaves 0.36 of the
# astronaut's flicker (an EMA's (1 - s) / sqrt(1 + s) = 0.32); the first version, gray-level change, 0.37
FLICKER_RATIO = 0.5
# measured here: 0 on every pixel the cat left; the first version (gray-level change) left up to 0.80 on half of them
GHOST_TOLERANCE = 0.02


def flicker(masks: np.ndarray) -> float:
    """The mean absolute frame-to-frame mask change (every pixel of a still clip is unchanged)."""
    return float(np.abs(np.diff(masks, axis=0)).mean())


def smoothed(smoother: MaskSmoother, frames: list[np.ndarray], masks: np.ndarray) -> np.ndarray:
    return np.stack([smoother(f, m) for f, m in zip(frames, masks)])


@pytest.fixture(scope="module")
def still(photos, photo_dir, engine) -> tuple[list[np.ndarray], np.ndarray]:
    """8 frames of a still scene (the astronaut pasted on bricks) with new sensor noise in each, and their masks."""
    bricks = read_image(photo_dir / "brick.png")
    scene = moving_subject_frames(photos["astronaut.png"], bricks, frames=3, size=SIZE)[1]
    frames = add_noise([scene] * 8, sigma=3.0, seed=1)
    return frames, np.stack([engine(f) for f in frames])


@pytest.fixture(scope="module")
def moving(photos, photo_dir, engine) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """4 noisy frames of the cat sliding over grass, 12 px a frame; their masks; where the cat is in each."""
    grass = read_image(photo_dir / "grass.png")
    frames = add_noise(moving_subject_frames(photos["chelsea.png"], grass, frames=14, size=SIZE)[:4], sigma=3.0, seed=2)
    return frames, np.stack([engine(f) for f in frames]), np.stack(subject_regions(frames=14, size=SIZE)[:4])


def test_strength_zero_is_the_identity(still):
    frames, masks = still
    smoother = MaskSmoother(0.0)
    for frame, mask in zip(frames, masks):
        assert smoother(frame, mask) is mask


def test_flicker_falls_on_a_still_noisy_clip(still):
    frames, masks = still
    out = smoothed(MaskSmoother(), frames, masks)
    assert flicker(masks) > 1e-3  # the single-frame masks do flicker: there is something to steady
    assert flicker(out) < FLICKER_RATIO * flicker(masks), (flicker(out), flicker(masks))
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0


def test_a_moving_subject_leaves_no_ghost(moving):
    frames, masks, regions = moving
    out = smoothed(MaskSmoother(0.8), frames, masks)
    left = regions[:-1] & ~regions[1:]  # background now, the cat a frame ago: the image changed there
    assert left.sum() > 1000
    assert masks[:-1][left].mean() > 0.9  # the cat was there: a ghost would show
    np.testing.assert_allclose(out[1:][left], masks[1:][left], atol=GHOST_TOLERANCE)


def test_a_size_change_starts_again(still):
    frames, masks = still
    smoother = MaskSmoother()
    smoothed(smoother, frames[:3], masks[:3])
    small = [cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in frames[3:5]]
    small_masks = [cv2.resize(m, (160, 120), interpolation=cv2.INTER_AREA) for m in masks[3:5]]
    assert smoother(small[0], small_masks[0]) is small_masks[0]  # nothing before it at this size
    assert not np.array_equal(smoother(small[1], small_masks[1]), small_masks[1])  # and it smooths from there
    smoother.reset()
    mask = masks[5]
    assert smoother(frames[5], mask) is mask


def test_the_caller_may_draw_on_a_returned_mask(still):
    frames, masks = still
    clean = smoothed(MaskSmoother(), frames, masks)
    smoother, drawn = MaskSmoother(), []
    for frame, mask in zip(frames, masks.copy()):
        out = smoother(frame, mask)
        drawn.append(out.copy())
        out[:] = 1.0  # a renderer drawing on it must not change the next frame's result
    np.testing.assert_array_equal(np.stack(drawn), clean)


@pytest.mark.parametrize("strength", [-0.1, 1.0, 1.5, math.nan])
def test_a_bad_strength_says_what_to_give(strength):
    with pytest.raises(ValueError, match=r"smoothing strength .* out of range: give a value from 0 \(off\) up to"):
        MaskSmoother(strength)


@pytest.mark.parametrize("change", [0.0, -8.0, math.inf, math.nan])
def test_a_bad_change_says_what_to_give(change):
    with pytest.raises(ValueError, match=r"smoothing change .* out of range: give a positive number") as info:
        MaskSmoother(0.6, change)
    assert isinstance(info.value, U2EdgeError)  # the CLI prints it as one line


def test_the_pipeline_smooths_each_mask_in_frame_order(still, engine, tmp_path):
    frames, masks = still
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), frame)
    with open_source(str(tmp_path)) as source:
        out = np.stack([mask for _, mask in Pipeline(source, engine, smooth=0.6)])
    np.testing.assert_allclose(out, smoothed(MaskSmoother(0.6), frames, masks), atol=1e-5)
    assert not np.allclose(out, masks, atol=1e-3)
    assert flicker(out) < FLICKER_RATIO * flicker(masks)
