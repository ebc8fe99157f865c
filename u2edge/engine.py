"""``U2EdgeEngine``: one object, one call per frame, a mask back."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import cpu
from .backends import Backend, choose, is_address, open_backend
from .errors import U2EdgeError
from .processing import check_frame, postprocess, preprocess
from .precision import RUNTIME_PRECISIONS, Precision

__all__ = ["U2EdgeEngine", "Pending"]

log = logging.getLogger("u2edge")


STAGES = ("preprocess", "infer", "postprocess")


@dataclass
class Pending:
    """Frames on their way through an engine: ``submit`` starts them, ``collect`` returns their
    masks. ``seconds`` holds each stage's time as it runs: ``preprocess`` and ``postprocess`` (on
    the CPU; 0 where the GPU does them, inside ``infer``) and ``infer``."""

    sizes: list[tuple[int, int]]
    ticket: object = None
    gpu_frames: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


class U2EdgeEngine:
    """Salient-object masks from an official model by name, or from any U-2-Net model file.

    With no ``path``, ``model`` (``"u2netp"``, the default, or ``"u2net"``) is fetched once into the
    user cache and runs at ``precision``: ``"auto"`` (the default) picks the fastest precision that
    passes the accuracy gate on this CPU (INT8 on VNNI/AMX through OpenVINO, else FP32), ``"fp32"``
    is the reference, ``"int8"`` and ``"bf16"`` ask for those (see ``u2edge.cpu``); ``choice``
    records what ran and why. A ``path`` picks the backend by suffix (``.engine``/``.plan``
    TensorRT; ``.onnx`` OpenVINO if installed, else ONNX Runtime; ``.pth``/``.pt`` PyTorch), or
    ``backend="onnxruntime"`` names one, and the file runs at its own precision (``"bf16"`` lowers
    an ONNX's float layers on OpenVINO). A ``path`` may also be a model on a Triton server,
    ``"triton://HOST:PORT/MODEL"`` (gRPC) or ``"triton+http://..."``, which takes the frames.
    ``engine(frame)`` takes an HxWx3 uint8 BGR frame (RGB with ``rgb=True``) and returns a new HxW
    float32 mask in [0, 1].
    An engine may be shared between threads: its backend calls are serialised. For throughput, open
    one engine per thread, or keep ``in_flight`` batches going with ``submit``/``collect``
    (TensorRT overlaps the CPU's work on one batch with the GPU's on the other).

        with U2EdgeEngine() as engine:
            mask = engine(cv2.imread("photo.jpg"))
    """

    def __init__(self, path: str | os.PathLike | None = None, *, model: str | None = None,
                 precision: str | Precision = Precision.AUTO, max_batch: int = 8, **backend_options) -> None:
        if max_batch < 1:
            raise U2EdgeError(f"max_batch {max_batch} must be at least 1")
        precision = Precision.parse(precision, RUNTIME_PRECISIONS)
        self.choice: cpu.Choice | None = None
        if path is None:
            named = backend_options.get("backend")
            self.choice = cpu.choose_precision(model or "u2netp", precision,
                                               openvino=None if named in (None, "openvino") else False)
            path = cpu.model_file(self.choice)
            if self.choice.precision is Precision.BF16:
                backend_options["inference_precision"] = "bf16"
        elif model is not None:
            raise U2EdgeError(f"give a model file or a model name, not both (got {os.fspath(path)} and "
                              f"model {model!r})")
        elif is_address(path) and precision in (Precision.INT8, Precision.BF16):
            raise U2EdgeError(f"{path} runs at the precision of the repository it serves; for {precision.value}, "
                              f"serve one written by: u2edge triton repo --precision {precision.value}")
        elif precision is Precision.INT8:
            raise U2EdgeError(f"{os.fspath(path)} runs at the precision it was built with; for an INT8 model by "
                              "name drop the file, or build one: u2edge build --precision int8 -o MODEL.onnx")
        elif precision is Precision.BF16:
            cpu.check_bf16(openvino=choose(path, backend_options.get("backend")) == "openvino")
            backend_options["inference_precision"] = "bf16"
        self.path = path
        self.backend: Backend = open_backend(self.path, **backend_options)
        self.preprocessing = self.backend.preprocessing
        # a fixed-batch model runs exactly that many frames at once; a dynamic one up to max_batch
        self.max_batch = self.backend.batch_size or min(max_batch, self.backend.max_batch or max_batch)
        self.in_flight = self.backend.in_flight  # batches submit() can start before the first collect()
        self._lock = threading.Lock()
        log.debug("opened %s with %s", self.path, self.backend.describe())

    def __call__(self, frame: np.ndarray, *, rgb: bool = False) -> np.ndarray:
        return self.batch([frame], rgb=rgb)[0]

    def batch(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> list[np.ndarray]:
        """Masks for frames of any sizes, in order; frames run ``max_batch`` at a time, with up to
        ``in_flight`` batches under way."""
        masks: list[np.ndarray] = []
        pending: deque[Pending] = deque()
        try:
            for start in range(0, len(frames), self.max_batch):
                if len(pending) == self.in_flight:
                    masks.extend(self.collect(pending.popleft()))
                pending.append(self.submit(frames[start:start + self.max_batch], rgb=rgb))
            while pending:
                masks.extend(self.collect(pending.popleft()))
        finally:
            self.discard(pending)
        return masks

    def submit(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> Pending:
        """Start up to ``max_batch`` frames; ``collect`` returns their masks. At most ``in_flight``
        batches may be under way at once."""
        if not 1 <= len(frames) <= self.max_batch:
            raise U2EdgeError(f"{len(frames)} frames: this engine takes 1 to {self.max_batch} at once")
        for frame in frames:
            check_frame(frame)
        pending = Pending([frame.shape[:2] for frame in frames], gpu_frames=self.backend.gpu_frames)
        started = time.perf_counter()
        if pending.gpu_frames:  # the frames go up as uint8, the masks come down at frame size
            with self._lock:
                pending.ticket = self.backend.submit_frames(frames, rgb=rgb)
        else:
            inputs = self.inputs(frames, rgb=rgb)
            pending.seconds["preprocess"] = time.perf_counter() - started
            started = time.perf_counter()
            with self._lock:
                pending.ticket = self.backend.submit(inputs)
        pending.seconds["infer"] = time.perf_counter() - started
        return pending

    def collect(self, pending: Pending) -> list[np.ndarray]:
        """The masks of a submitted batch, in order: new HxW float32 arrays in [0, 1]."""
        started = time.perf_counter()
        with self._lock:
            out, pending.ticket = self.backend.collect(pending.ticket), None
        done = time.perf_counter()
        pending.seconds["infer"] += done - started
        if pending.gpu_frames:
            return out
        masks = [postprocess(pred, *size) for pred, size in zip(out, pending.sizes)]
        pending.seconds["postprocess"] = time.perf_counter() - done
        return masks

    def discard(self, pending: "Sequence[Pending]") -> None:
        """Wait for batches that will not be collected (after an error), so that their slots are free."""
        for item in pending:
            if item.ticket is not None:
                with contextlib.suppress(Exception):  # the error that left them behind is the one to report
                    self.collect(item)

    def inputs(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> np.ndarray:
        """The network input for up to ``max_batch`` frames; a fixed-batch model's is zero-padded."""
        size = self.preprocessing.imgsz
        inputs = np.zeros((self.backend.batch_size or len(frames), 3, size, size), np.float32)
        for i, frame in enumerate(frames):
            preprocess(frame, self.preprocessing, rgb=rgb, out=inputs[i])
        return inputs

    def describe(self) -> str:
        """The backend, the file and its input size; for a model by name, its precision and why."""
        line = f"{self.backend.describe()} on {os.fspath(self.path)} ({self.preprocessing.imgsz}px)"
        if self.choice is not None:
            line = f"{self.choice.model} {self.choice.precision.value} ({self.choice.reason}): {line}"
        return line

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "U2EdgeEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
