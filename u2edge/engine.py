"""``U2EdgeEngine``: one object, one call per frame, a mask back."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

import numpy as np

from . import cpu
from .backends import Backend, choose, open_backend
from .errors import U2EdgeError
from .processing import postprocess, preprocess
from .sidecar import RUNTIME_PRECISIONS, Precision

__all__ = ["U2EdgeEngine"]

log = logging.getLogger("u2edge")


class U2EdgeEngine:
    """Salient-object masks from an official model by name, or from any U-2-Net model file.

    With no ``path``, ``model`` (``"u2netp"``, the default, or ``"u2net"``) is fetched once into the
    user cache and runs at ``precision``: ``"auto"`` (the default) picks the fastest precision that
    passes the accuracy gate on this CPU (INT8 on VNNI/AMX through OpenVINO, else FP32), ``"fp32"``
    is the reference, ``"int8"`` and ``"bf16"`` ask for those (see ``u2edge.cpu``); ``choice``
    records what ran and why. A ``path`` picks the backend by suffix (``.engine``/``.plan``
    TensorRT; ``.onnx`` OpenVINO if installed, else ONNX Runtime; ``.pth``/``.pt`` PyTorch), or
    ``backend="onnxruntime"`` names one, and the file runs at its own precision (``"bf16"`` lowers
    an ONNX's float layers on OpenVINO). ``engine(frame)`` takes an HxWx3 uint8 BGR frame (RGB
    with ``rgb=True``) and returns a new HxW float32 mask in [0, 1].
    An engine may be shared between threads: ``lock`` serialises its backend calls (hold it to call
    ``engine.backend`` directly). For throughput, open one engine per thread instead.

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
        self.lock = threading.Lock()
        log.debug("opened %s with %s", self.path, self.backend.describe())

    def __call__(self, frame: np.ndarray, *, rgb: bool = False) -> np.ndarray:
        return self.batch([frame], rgb=rgb)[0]

    def batch(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> list[np.ndarray]:
        """Masks for frames of any sizes, in order; frames run ``max_batch`` at a time."""
        masks: list[np.ndarray] = []
        for start in range(0, len(frames), self.max_batch):
            chunk = frames[start:start + self.max_batch]
            if self.backend.gpu_frames:  # the frames go up as uint8, the masks come down at frame size
                with self.lock:
                    masks.extend(self.backend.infer_frames(chunk, rgb=rgb))
                continue
            inputs = self.inputs(chunk, rgb=rgb)
            with self.lock:
                preds = self.backend.infer(inputs)
            masks.extend(postprocess(pred, *frame.shape[:2]) for pred, frame in zip(preds, chunk))
        return masks

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
