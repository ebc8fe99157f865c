"""The native part: CMakeLists.txt builds the CUDA kernels and their Python module with nvcc here
(CI compiles it); on a CUDA GPU the kernels are held to the CPU reference on real photos."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PHOTOS
from u2edge.processing import Preprocessing, postprocess, preprocess
from u2edge.render import Background, render

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str, *extra: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""),
                                                     *extra]))


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    cmake, nvcc = _tool("cmake"), _tool("nvcc", "/usr/local/cuda/bin")
    if cmake is None or nvcc is None:
        pytest.skip(f"building the native part needs cmake and nvcc (found cmake={cmake}, nvcc={nvcc})")
    pybind11 = pytest.importorskip("pybind11", reason="the native module needs pybind11: pip install pybind11")
    build = tmp_path_factory.mktemp("native")
    configure = [cmake, "-S", str(ROOT), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={nvcc}",
                 f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
    for cmd in (configure, [cmake, "--build", str(build), "-j", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    module = next(build.glob("_native*.so"))
    spec = importlib.util.spec_from_file_location("_native", module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_the_native_part_compiles_for_jetson_and_desktop(native):
    assert {"preprocess", "postprocess", "composite", "preprocess_device", "postprocess_device"} <= set(dir(native))
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
