"""The native part: pip install builds the CUDA kernels and their Python module with nvcc
(setup.py runs CMakeLists.txt; CI compiles it). The kernels are held to the CPU reference on real
photos twice: their per-element code run on the CPU (``u2edge._native.cpu``, everywhere the
module is built, so CI checks the arithmetic), and the kernels themselves on a CUDA GPU."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import PHOTOS, HostMemory
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
    assert {"preprocess", "postprocess", "composite"} <= set(dir(native.cpu))
    # what U2EDGE_CUDA_ARCHITECTURES asked for at install time, else the default list: Orin, Ampere to Blackwell
    asked = os.environ.get("U2EDGE_CUDA_ARCHITECTURES")
    wanted = set(asked.replace(",", ";").split(";")) if asked else {"75", "80", "86", "87", "89", "90"}
    assert wanted <= set(native.CUDA_ARCHITECTURES.split())
    assert (native.CUTOUT, native.COLOR, native.IMAGE, native.BLUR) == (0, 1, 2, 3)


def _gpu_or_skip(native) -> None:
    try:
        native.postprocess(np.zeros((4, 4), np.float32), 4, 4)
    except RuntimeError as exc:
        pytest.skip(f"running the kernels needs a CUDA GPU: {exc}")


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def kernels(request, native):
    """The kernels' numpy entry points: their per-element code on the CPU, or the kernels on a GPU."""
    if request.param == "cpu":
        return native.cpu
    _gpu_or_skip(native)
    return native


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
    """The photos, and frames made from them for each of cv2.resize's paths: INTER_AREA with
    fractional and whole-number scales (2x2 has its own rounding), INTER_LINEAR growing and
    shrinking, and degenerate sizes."""
    frames = {name: photos[name] for name in PHOTOS}
    astronaut, chelsea = photos["astronaut.png"], photos["chelsea.png"]
    frames["1080p"] = cv2.resize(astronaut, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    frames["640x640 (2x2 cells)"] = cv2.resize(astronaut, (640, 640), interpolation=cv2.INTER_CUBIC)
    frames["1280x960 (4x3 cells)"] = cv2.resize(astronaut, (1280, 960), interpolation=cv2.INTER_CUBIC)
    frames["small"] = chelsea[:200, :250]  # smaller than 320: the INTER_LINEAR path
    frames["tall and thin"] = photos["coffee.png"][:, :100]
    frames["one row"] = chelsea[150:151]
    frames["one pixel"] = chelsea[150:151, 200:201]
    return frames


def test_preprocess_matches_the_cpu_reference(kernels, photos):
    spec = Preprocessing()
    for name, frame in _frames(photos).items():
        out = kernels.preprocess(frame, spec.imgsz, spec.mean, spec.std, True, True)
        cpu = preprocess(frame, spec)
        # on the CPU, the same operations as cv2.resize and numpy in the same order: the same numbers;
        # on a GPU, within one 8-bit level on the 0..1 pixel scale (before mean/std)
        exact = _on_cpu(kernels)
        err = np.abs(out - cpu) * np.asarray(spec.std, np.float32)[:, None, None]
        assert err.max() <= (0 if exact else 1 / 255 + 1e-5), (name, err.max())
        half = kernels.preprocess(frame, spec.imgsz, spec.mean, spec.std, True, True, half=True)
        assert half.dtype == np.float16
        assert np.abs(half.astype(np.float32) - cpu).max() <= 0.01, name  # FP16 rounding of values up to 2.7
        half_err = np.abs(half.astype(np.float32) - cpu.astype(np.float16).astype(np.float32)).max()
        assert half_err <= (0 if exact else 0.02), (name, half_err)


def _on_cpu(kernels) -> bool:
    return kernels.__name__.endswith(".cpu")


def test_preprocess_keeps_the_channel_order_and_the_spec(kernels, photos):
    frame = photos["rocket.jpg"]
    spec = Preprocessing(imgsz=288, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_normalize=False)
    rgb = np.ascontiguousarray(frame[:, :, ::-1])
    out = kernels.preprocess(rgb, 288, spec.mean, spec.std, False, False)  # an RGB frame, no swap
    assert out.shape == (3, 288, 288)
    assert np.abs(out - preprocess(rgb, spec, rgb=True)).max() <= 2 / 255 + 1e-5
    assert np.abs(out - preprocess(frame, spec)).max() <= 2 / 255 + 1e-5  # the BGR frame, swapped on the CPU


def test_postprocess_and_composites_match_the_cpu_reference(kernels, native, photos, engine):
    for name, frame in _frames(photos).items():
        x = preprocess(frame, engine.preprocessing)[None]
        pred = engine.backend.infer(x)[0]
        h, w = frame.shape[:2]
        mask = kernels.postprocess(pred, h, w)
        assert np.abs(mask - postprocess(pred, h, w)).max() <= 1 / 255, name
        cutout = kernels.composite(frame, mask, native.CUTOUT)
        green = kernels.composite(frame, mask, native.COLOR, color=(0, 255, 0))
        back = cv2.resize(photos["coffee.png"], (w, h))
        over = kernels.composite(frame, mask, native.IMAGE, background=back)
        tolerance = 0 if _on_cpu(kernels) else 1
        assert np.abs(cutout.astype(int) - render(frame, mask, "cutout")).max() <= tolerance, name
        assert np.abs(green.astype(int) - render(frame, mask, "background",
                                                   Background(color=(0, 255, 0)))).max() <= tolerance, name
        assert np.abs(over.astype(int) - render(frame, mask, "background",
                                                  Background(image=back))).max() <= tolerance, name
    frame = _frames(photos)["1080p"]
    mask = kernels.postprocess(engine.backend.infer(preprocess(frame, engine.preprocessing)[None])[0], 1080, 1920)
    for size in (5, 31):  # OpenCV's fixed 5-tap kernel, and a computed one
        blurred = kernels.composite(frame, mask, native.BLUR, blur=size)
        diff = np.abs(blurred.astype(int) - render(frame, mask, "background", Background(blur=size)))
        assert diff.max() <= 1 and diff.mean() < 0.1, (size, diff.max(), diff.mean())  # float vs OpenCV's fixed point


def test_bad_arrays_are_refused_with_a_message(kernels):
    frame = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="HxWx3"):
        kernels.preprocess(np.zeros((10, 10), np.uint8), 320, (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="SxS"):
        kernels.postprocess(np.zeros((4, 5), np.float32), 8, 8)
    with pytest.raises(ValueError, match="mask must be HxW"):
        kernels.composite(frame, np.zeros((9, 10), np.float32), 0)
    with pytest.raises(ValueError, match="background must be"):
        kernels.composite(frame, np.zeros((10, 10), np.float32), 2, background=np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="mode must be"):
        kernels.composite(frame, np.zeros((10, 10), np.float32), 7)


def test_the_frame_path_gives_the_cpu_paths_masks(native, photos, engine):
    """GpuFrames, as the TensorRT and PyTorch CUDA backends drive it, on host memory with the
    kernels' arithmetic: mixed-size batches, a batch larger than the last (the staging grows),
    RGB frames, and FP16 network inputs."""
    from u2edge.framepath import GpuFrames

    frames = _frames(photos)
    batches = [[frames["astronaut.png"], frames["1080p"], frames["small"]],
               [frames[name] for name in ("chelsea.png", "coffee.png", "rocket.jpg", "one row", "tall and thin")]]
    expected = {id(f): engine(f) for batch in batches for f in batch}
    size = engine.preprocessing.imgsz
    memory = HostMemory()
    for half in (False, True):
        path = GpuFrames(memory, native.cpu, engine.preprocessing, half=half)
        for rgb in (False, True):
            for batch in batches:
                n = len(batch)
                network_in = np.full((n + 1, 3, size, size), 7, np.float16 if half else np.float32)
                path.upload([f[:, :, ::-1].copy() if rgb else f for f in batch], rgb, network_in.ctypes.data, 0)
                assert (network_in[n] == 7).all()  # nothing written past the batch
                # the official model takes one image at a time
                network_out = np.stack([engine.backend.infer(x[None].astype(np.float32)) for x in network_in[:n]])
                path.download(network_out.ctypes.data, 0)
                masks = path.masks()
                for frame, mask in zip(batch, masks):
                    assert mask.shape == frame.shape[:2]
                    err = np.abs(mask - expected[id(frame)])
                    # the FP16 input rounds values up to 2.7 by up to 1e-3
                    mean_limit, max_limit = (2e-3, 0.1) if half else (1e-4, 1e-4)
                    assert err.mean() < mean_limit and err.max() < max_limit, (half, err.mean(), err.max())
        path.close()
    assert memory.buffers == {}  # close() freed every staging buffer
