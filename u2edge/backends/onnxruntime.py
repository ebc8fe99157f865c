"""ONNX Runtime backend: any U-2-Net ONNX, the official one included.

With onnxruntime-gpu installed it asks for the TensorRT and CUDA execution providers first; one
that fails to load (missing CUDA or TensorRT libraries) costs one warning line, and the session
runs on what did load, down to the CPU.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .._deps import require
from ..errors import ModelFormatError
from .base import Backend

__all__ = ["OnnxRuntimeBackend"]

log = logging.getLogger("u2edge")

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeBackend(Backend):
    suffixes = (".onnx",)
    name = "onnxruntime"
    requires = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: a provider that fails to load is reported below, once
        if threads:
            options.intra_op_num_threads = threads
        if providers is None:
            providers = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFormatError(f"cannot load {path} with ONNX Runtime ({first}); "
                                   "the file is corrupt or not an ONNX model") from exc
        def dims(shape) -> tuple:  # a symbolic dimension is a string or None
            return tuple(d if isinstance(d, int) else None for d in shape)

        self.bind(path, [(t.name, dims(t.shape)) for t in self._session.get_inputs()],
                  [(t.name, dims(t.shape)) for t in self._session.get_outputs()],
                  self._session.get_modelmeta().custom_metadata_map)
        self.providers = self._session.get_providers()
        missing = [p for p in providers if p not in self.providers]
        if missing:
            log.warning("ONNX Runtime could not load %s (CUDA/TensorRT libraries missing?); running on %s",
                        ", ".join(missing), ", ".join(self.providers))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run([self.output_name], {self.input_name: batch})[0]
        return out.reshape(out.shape[0], out.shape[-2], out.shape[-1])

    def describe(self) -> str:
        return f"onnxruntime ({', '.join(self.providers)})"

    def close(self) -> None:
        self._session = None
