"""OpenVINO backend for ``.onnx`` on x86 CPUs: the CPU fast path.

A U-2-Net INT8 graph from ``u2edge build --precision int8 -o MODEL.onnx`` runs here in INT8 on
AVX-512 VNNI or AMX; any other U-2-Net ONNX runs in FP32. The inference precision is pinned to
FP32, because OpenVINO would otherwise run float layers in BF16 on CPUs that have it, and BF16
costs U-2-NetP mask accuracy (min IoU 0.92 against FP32 on the scikit-image photos);
``inference_precision="bf16"`` asks for BF16 all the same (``--precision bf16``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import ModelFormatError
from ..weights import cache_dir
from .base import Backend

__all__ = ["OpenVinoBackend"]

log = logging.getLogger("u2edge")


class OpenVinoBackend(Backend):
    suffixes = (".onnx",)
    name = "openvino"
    requires = "openvino"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 inference_precision: str = "f32") -> None:
        if inference_precision not in ("f32", "bf16"):
            raise ModelFormatError(f"OpenVINO inference precision {inference_precision!r}; use f32 or bf16")
        ov = require("openvino")
        from openvino.frontend import FrontEndManager

        core = ov.Core()
        # the models u2edge keeps in its cache (the official ones and their INT8 versions) are compiled
        # once and cached by OpenVINO (keyed by content, settings and CPU): a second open takes about
        # 0.15 s instead of 0.7 s for U2-NetP. Other files are not: every new file would add a blob of
        # up to 176 MB that nothing ever removes.
        blobs = cache_dir() / "openvino"
        if cache_dir().resolve() in Path(path).resolve().parents:
            try:
                blobs.mkdir(parents=True, exist_ok=True)
                core.set_property({"CACHE_DIR": str(blobs)})
            except OSError as exc:
                log.debug("no OpenVINO model cache in %s (%s)", blobs, exc.strerror)
        # the ONNX frontend alone: Core.read_model would also try TensorFlow's on a bad file, which
        # writes its parse errors straight to stderr
        onnx_frontend = FrontEndManager().load_by_framework("onnx")
        try:
            model = onnx_frontend.convert(onnx_frontend.load(str(path)))
        except Exception as exc:  # OpenVINO raises its own GeneralFailure/OpConversionFailure types
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            raise ModelFormatError(f"cannot load {path} with OpenVINO ({lines[-1] if lines else type(exc).__name__}); "
                                   "the file is corrupt or not an ONNX model") from exc
        def tensor(port) -> tuple:
            return port.get_any_name(), tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())

        meta = {}
        if model.has_rt_info(["framework"]):  # the ONNX metadata_props
            meta = {k: v.astype(str) for k, v in model.get_rt_info(["framework"]).astype(dict).items()}
        self.bind(path, [tensor(p) for p in model.inputs], [tensor(p) for p in model.outputs], meta)
        self.precision = meta.get("u2edge.precision", "fp32")
        self.inference_precision = inference_precision
        self._output = [o.get_any_name() for o in model.outputs].index(self.output_name)
        config = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._version = ov.__version__.split("-")[0]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self._request.infer({0: batch})[self._compiled.outputs[self._output]]
        return np.array(out.reshape(out.shape[0], out.shape[-2], out.shape[-1]))

    def describe(self) -> str:
        floats = ", float layers in BF16" if self.inference_precision == "bf16" else ""
        return f"openvino {self._version} (CPU, {self.precision}{floats})"

    def close(self) -> None:
        self._request = self._compiled = None
