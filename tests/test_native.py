"""The native part: pip install builds the CUDA kernels and their Python module with nvcc
(setup.py runs CMakeLists.txt; CI compiles it); on a CUDA GPU the kernels are held to the CPU
reference on real photos."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import PHOTOS
from u2edge.native import load
from u2edge.processing import Preprocessing, postprocess, preprocess
from u2edge.render import Background, render


def _nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def native():
    """The module ``pip install`` built (setup.py runs CMakeLists.txt where nvcc is found)."""
    module = load()
    if module is not None:
        return module
    if os.environ.get("U2EDGE_NATIVE", "auto") == "off" or _nvcc() is None:
        pytest.skip("the native part is not built here: no nvcc, or U2EDGE_NATIVE=off")
    pytest.fail("nvcc is here but pip install did not build u2edge._native; see why with: "
                "U2EDGE_NATIVE=on pip install -v -e .")


def test_pip_install_compiled_it_for_jetson_and_desktop_gpus(native):
    assert {"preprocess", "postprocess", "composite", "preprocess_device", "postprocess_device"} <= set(dir(native))
    if os.environ.get("U2EDGE_CUDA_ARCHITECTURES") is None:  # the default list: Orin, Ampere to Blackwell
        assert {"75", "80", "86", "87", "89", "90"} <= set(native.CUDA_ARCHITECTURES.split())
    assert (native.CUTOUT, native.COLOR, native.IMAGE, native.BLUR) == (0, 1, 2, 3)


def _gpu_or_skip(native) -> None:
    try:
        native.postprocess(np.zeros((4, 4), np.float32), 4, 4)
    except RuntimeError as exc:
        pytest.skip(f"running the kernels needs a CUDA GPU: {exc}")


def test_without_a_gpu_a_kernel_call_is_one_clear_error(native):
    try:
        native.postprocess(np.zeros((4, 4), np.float32), 4, 4)
    except RuntimeError as exc:
        assert str(exc).startswith("cudaMalloc: ") and "\n" not in str(exc)
    else:
        pytest.skip("a CUDA device is here: the GPU tests run instead")


def test_without_a_gpu_the_frame_path_falls_back_to_the_cpu_with_one_warning(native, caplog):
    from u2edge.framepath import usable_native

    try:
        native.postprocess(np.zeros((4, 4), np.float32), 4, 4)
    except RuntimeError:
        with caplog.at_level("WARNING", logger="u2edge"):
            assert usable_native() is None
        assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
            "pre- and post-processing on the CPU: u2edge._native cannot run here"]
    else:
        assert usable_native() is native


def _frames(photos) -> dict[str, np.ndarray]:
    frames = {name: photos[name] for name in PHOTOS}
    frames["1080p"] = cv2.resize(photos["astronaut.png"], (1920, 1080), interpolation=cv2.INTER_CUBIC)
    frames["small"] = photos["chelsea.png"][:200, :250]  # smaller than 320: the INTER_LINEAR path
    return frames


@pytest.mark.gpu
def test_preprocess_matches_the_cpu_reference(native, photos):
    _gpu_or_skip(native)
    spec = Preprocessing()
    for name, frame in _frames(photos).items():
        gpu = native.preprocess(frame, spec.imgsz, spec.mean, spec.std, True, True)
        cpu = preprocess(frame, spec)
        # on the 0..1 pixel scale (before mean/std), within one 8-bit level
        err = np.abs(gpu - cpu) * np.asarray(spec.std, np.float32)[:, None, None]
        assert err.max() <= 1 / 255 + 1e-5, (name, err.max())


@pytest.mark.gpu
def test_postprocess_and_composites_match_the_cpu_reference(native, photos, engine):
    _gpu_or_skip(native)
    for name, frame in _frames(photos).items():
        x = preprocess(frame, engine.preprocessing)[None]
        pred = engine.backend.infer(x)[0]
        h, w = frame.shape[:2]
        mask = native.postprocess(pred, h, w)
        assert np.abs(mask - postprocess(pred, h, w)).max() <= 1 / 255, name
        cutout = native.composite(frame, mask, native.CUTOUT)
        assert np.abs(cutout.astype(int) - render(frame, mask, "cutout")).max() <= 1, name
        green = native.composite(frame, mask, native.COLOR, color=(0, 255, 0))
        assert np.abs(green.astype(int) - render(frame, mask, "background", Background(color=(0, 255, 0)))).max() <= 1
        back = cv2.resize(photos["coffee.png"], (w, h))
        over = native.composite(frame, mask, native.IMAGE, background=back)
        assert np.abs(over.astype(int) - render(frame, mask, "background", Background(image=back))).max() <= 1
        blurred = native.composite(frame, mask, native.BLUR, blur=31)
        reference = render(frame, mask, "background", Background(blur=31))
        assert np.abs(blurred.astype(int) - reference).mean() < 1.0, name  # float Gaussian vs OpenCV's fixed point
