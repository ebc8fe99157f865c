"""Pre/post-processing follows the official recipe: checked against an independent PIL-based
implementation of rembg's pipeline on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PHOTOS, official_input
from u2edge.errors import ImageError
from u2edge.processing import Preprocessing, check_frame, postprocess, preprocess


def rembg_mask(session, frame: np.ndarray) -> np.ndarray:
    from PIL import Image

    d0 = session.run(None, {session.get_inputs()[0].name: official_input(frame)})[0][0, 0]
    d0 = (d0 - d0.min()) / (d0.max() - d0.min())
    resized = Image.fromarray((d0 * 255).astype(np.uint8)).resize(frame.shape[1::-1], Image.LANCZOS)
    return np.asarray(resized, np.float32) / 255


def test_masks_match_the_official_pipeline_and_a_channel_swap_does_not(engine, official_onnx, photos):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(official_onnx), providers=["CPUExecutionProvider"])
    right, swapped = [], []
    for name in PHOTOS:
        frame = photos[name]
        want = rembg_mask(session, frame)
        right.append(np.abs(engine(frame) - want).mean())
        swapped.append(np.abs(engine(frame, rgb=True) - want).mean())
    assert np.mean(right) < 0.026, right
    assert np.mean(swapped) > 0.05, swapped  # the test can tell a BGR/RGB mix-up


def test_input_tensor_matches_the_recipe(photos):
    frame = photos["astronaut.png"]
    spec = Preprocessing()
    x = preprocess(frame, spec)
    want = official_input(frame)[0]
    assert x.shape == (3, 320, 320) and x.dtype == np.float32
    # same recipe, different resampler (INTER_AREA vs LANCZOS): per-channel means agree closely
    assert np.allclose(x.mean(axis=(1, 2)), want.mean(axis=(1, 2)), atol=0.02)
    assert np.array_equal(preprocess(frame[:, :, ::-1].copy(), spec, rgb=True), x)


def test_max_normalization_makes_brightness_irrelevant(photos):
    frame = photos["coffee.png"]
    darker = (frame // 2).astype(np.uint8)
    spec = Preprocessing()
    assert np.abs(preprocess(frame, spec) - preprocess(darker, spec)).max() < 0.05
    black = np.zeros((10, 10, 3), np.uint8)
    assert np.isfinite(preprocess(black, spec)).all()


def test_postprocess_normalizes_and_guards_constant_maps():
    pred = np.linspace(0.2, 0.6, 320 * 320, dtype=np.float32).reshape(320, 320)
    same = postprocess(pred, 320, 320)
    assert same.min() == 0 and same.max() == pytest.approx(1, abs=1e-6)
    assert np.allclose(same, (pred - 0.2) / 0.4, atol=1e-5)
    for h, w in ((100, 50), (900, 1600), (1, 1)):
        mask = postprocess(pred, h, w)
        assert mask.shape == (h, w) and mask.dtype == np.float32
        assert 0 <= mask.min() and mask.max() <= 1
    flat = postprocess(np.full((320, 320), 0.7, np.float32), 5, 5)
    assert np.array_equal(flat, np.zeros((5, 5), np.float32))


def test_metadata_round_trip():
    spec = Preprocessing(imgsz=288)
    assert Preprocessing.from_metadata(spec.to_metadata()) == spec
    assert Preprocessing.from_metadata({}, imgsz=352) == Preprocessing(imgsz=352)


@pytest.mark.parametrize("frame", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((4, 4, 3), np.uint16), np.zeros((0, 4, 3), np.uint8), [[1, 2, 3]]])
def test_bad_frames_are_refused_with_the_fix(frame):
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        check_frame(frame)
