"""Session fixtures for the expensive things: the official weights, real photos, a PyTorch model
with the official weights, and exports of it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from u2edge import U2EdgeEngine
from u2edge.images import read_image
from u2edge.weights import default_onnx

DATA = Path(__file__).parent / "data"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def run_cli(*args: str, check_rc: int | None = 0, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m u2edge ARGS`` in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "u2edge", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, as OpenCV decodes it."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder``, to fill a disk for real; skips without root."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)])


class HostMemory:
    """The CUDA layer's calls (``u2edge.cuda.Cuda``) on host memory, to run the GPU backends' own
    logic on the CPU: "device" buffers are numpy arrays, copies are bounds-checked memmoves, a
    stream's work is done as it is enqueued, and a captured graph records its work without doing
    it, to do it on each launch (as CUDA graphs do). With ``u2edge._native.cpu`` the kernels'
    arithmetic runs too."""

    def __init__(self) -> None:
        self.device = {"gpu": "host memory", "compute_capability": None}
        self.buffers: dict[int, np.ndarray] = {}
        self.streams: set[int] = set()
        self.launches = 0
        self._made = 0

    def _keep(self, array: np.ndarray) -> int:
        self.buffers[array.ctypes.data] = array
        return array.ctypes.data

    def _check(self, ptr: int, nbytes: int) -> None:
        assert any(start <= ptr and ptr + nbytes <= start + b.nbytes for start, b in self.buffers.items()), \
            f"{nbytes} bytes at {ptr:#x} overrun every buffer"

    def malloc(self, nbytes: int) -> int:
        return self._keep(np.empty(nbytes, np.uint8))

    def free(self, ptr: int) -> None:
        del self.buffers[ptr]  # a double free, or a pointer never allocated, fails here

    def pinned(self, shape, dtype=np.float32) -> tuple[np.ndarray, int]:
        array = np.empty(shape, dtype)
        return array, self._keep(array)

    free_pinned = free

    def stream(self) -> int:
        self._made += 1
        self.streams.add(self._made)
        return self._made

    def destroy_stream(self, stream: int) -> None:
        self.streams.remove(stream)

    def handle(self, stream) -> int:
        return stream or 0

    def to_device(self, dst: int, src: np.ndarray, stream) -> None:
        self._check(dst, src.nbytes)
        ctypes.memmove(dst, src.ctypes.data, src.nbytes)

    def to_host(self, dst: np.ndarray, src: int, stream) -> None:
        self._check(src, dst.nbytes)
        ctypes.memmove(dst.ctypes.data, src, dst.nbytes)

    def synchronize(self, stream) -> None:
        """The work was done as it was enqueued."""

    def capture(self, stream, work):
        return work

    def launch(self, graph, stream) -> None:
        self.launches += 1
        graph()

    def destroy_graph(self, graph) -> None:
        """A recorded graph holds nothing to free."""


@pytest.fixture(scope="session")
def photo_dir() -> Path:
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos: pip install -e '.[dev]'")
    return Path(data.__file__).parent


@pytest.fixture(scope="session")
def photo_paths(photo_dir) -> list[Path]:
    return [photo_dir / name for name in PHOTOS]


@pytest.fixture(scope="session")
def photos(photo_paths) -> dict[str, np.ndarray]:
    """Real photos as HxWx3 uint8 BGR, by file name."""
    return {p.name: read_image(p) for p in photo_paths}


@pytest.fixture(scope="session")
def official_onnx() -> Path:
    return default_onnx("u2netp")


@pytest.fixture(scope="session")
def official_u2net_onnx() -> Path:
    """The official U-2-Net ONNX (176 MB, fetched once into the user cache)."""
    return default_onnx("u2net")


@pytest.fixture(scope="session")
def engine(official_onnx) -> U2EdgeEngine:
    """The official U2-NetP on ONNX Runtime: the FP32 reference every other backend is held to."""
    with U2EdgeEngine(official_onnx, backend="onnxruntime") as eng:
        yield eng


@pytest.fixture(scope="session")
def official_model(official_onnx):
    pytest.importorskip("torch", reason="PyTorch is needed: pip install torch==2.13.0 -e '.[export]'")
    from u2edge.model import u2netp

    return u2netp(weights=official_onnx)


@pytest.fixture(scope="session")
def official_checkpoint(official_model, tmp_path_factory) -> Path:
    """The official U2-NetP saved as a u2edge checkpoint (.pth)."""
    from u2edge.model import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "u2netp_official.pth"
    save_checkpoint(official_model, path)
    return path


@pytest.fixture(scope="session")
def torch_export(official_checkpoint, tmp_path_factory):
    """Our own torch.onnx export of the official U2-NetP, dynamic batch."""
    from u2edge.export import export_onnx

    return export_onnx(tmp_path_factory.mktemp("export") / "u2netp_torch.onnx",
                       weights=official_checkpoint, batch=None)


def official_input(frame_bgr: np.ndarray) -> np.ndarray:
    """The official recipe written out independently (PIL LANCZOS resize, as rembg does):
    RGB, 320x320, divide by max, ImageNet mean/std -> 1x3x320x320 float32."""
    from PIL import Image

    rgb = Image.fromarray(np.ascontiguousarray(frame_bgr[:, :, ::-1])).resize((320, 320), Image.LANCZOS)
    x = np.asarray(rgb, np.float32)
    x = x / x.max()
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


# every 4th image of a calibration folder is held out: these names put the five object photos there
CALIBRATION = ("astronaut.png", "camera.png", "coins.png", "ihc.png", "chelsea.png", "hubble_deep_field.jpg",
               "brick.png", "grass.png", "coffee.png", "gravel.png", "color.png", "logo.png", "rocket.jpg",
               "page.png", "moon.png", "horse.png", "motorcycle_left.png", "retina.jpg", "cell.png",
               "motorcycle_right.png")


@pytest.fixture(scope="session")
def calib_dir(photo_dir, tmp_path_factory) -> Path:
    """20 real photos; the build holds out astronaut, chelsea, coffee, rocket and motorcycle_left."""
    import shutil

    folder = tmp_path_factory.mktemp("calib")
    for i, name in enumerate(CALIBRATION):
        shutil.copy(photo_dir / name, folder / f"{i:02d}_{name}")
    return folder


@pytest.fixture(scope="session")
def cpu_int8(calib_dir, tmp_path_factory):
    """The official U2-NetP as a CPU INT8 model (``u2edge build -o NAME.onnx``), calibrated on
    15 photos; the 5 test photos are its held-out images."""
    pytest.importorskip("onnx", reason="building needs the export extra: pip install -e '.[export]'")
    from u2edge.export.build import BuildOptions, build_engine
    from u2edge.precision import Precision

    return build_engine(BuildOptions(output=tmp_path_factory.mktemp("cpu") / "u2netp_int8.onnx",
                                     precision=Precision.INT8, calib_dir=calib_dir))


def make_clip(path: Path, subject: np.ndarray, background: np.ndarray, *, frames: int, size: tuple[int, int],
              fps: float) -> Path:
    """A video of ``subject`` sliding left to right over ``background`` (real photos), one step a frame."""
    from u2edge.bench.clips import moving_subject_frames, write_clip

    return write_clip(path, moving_subject_frames(subject, background, frames=frames, size=size), fps)


@pytest.fixture(scope="session")
def clip(photos, photo_dir, tmp_path_factory) -> Path:
    """10 frames, 320x240 at 10 FPS: the cat walking over grass."""
    grass = read_image(photo_dir / "grass.png")
    return make_clip(tmp_path_factory.mktemp("clips") / "cat.mp4", photos["chelsea.png"], grass, frames=10,
                     size=(320, 240), fps=10)
