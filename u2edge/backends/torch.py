"""PyTorch backend for ``.pth``/``.pt`` weights (official checkpoints or u2edge ones), on the CPU."""

from __future__ import annotations

import os

import numpy as np

from .._deps import require
from ..processing import Preprocessing
from .base import Backend

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    suffixes = (".pth", ".pt")
    name = "torch"
    requires = "torch"

    def __init__(self, path: str | os.PathLike, *, imgsz: int = 320) -> None:
        self._torch = require("torch")
        from ..model import from_file

        self._model = from_file(path, fused_only=True)
        self.preprocessing = Preprocessing(imgsz=imgsz)
        self.batch_size = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self._model(self._torch.from_numpy(batch))
        return out.numpy()[:, 0]

    def describe(self) -> str:
        return f"torch {self._torch.__version__} ({self._model.arch}, cpu, fp32)"

    def close(self) -> None:
        self._model = None
