"""PyTorch backend for ``.pth``/``.pt`` weights (official checkpoints or u2edge ones).

On a CUDA GPU (the default where ``torch.cuda.is_available()``) the model runs in FP16 with
channels_last memory, and each batch size is captured once into a CUDA graph that replays with
static input and output buffers; on the CPU it runs in FP32, eagerly.
"""

from __future__ import annotations

import os

import numpy as np

from .._deps import require
from ..cuda import NoCudaDevice
from ..errors import U2EdgeError
from ..processing import Preprocessing
from .base import Backend

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    suffixes = (".pth", ".pt")
    name = "torch"
    requires = "torch"

    def __init__(self, path: str | os.PathLike, *, imgsz: int = 320, device: str | None = None,
                 half: bool | None = None, cuda_graph: bool = True) -> None:
        torch = self._torch = require("torch")
        from ..model import from_file

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise NoCudaDevice(f"device={device!r} but this torch ({torch.__version__}) sees no CUDA device; "
                               "use device='cpu', or install a CUDA build of torch on a GPU machine")
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise U2EdgeError(f"device={device!r}: use 'cpu', 'cuda' or 'cuda:N'")
        self._device = torch.device(device)
        self._gpu = self._device.type == "cuda"
        self._half = self._gpu if half is None else half
        if self._half and not self._gpu:
            raise U2EdgeError("half=True needs a CUDA device: FP16 on the CPU is slower than FP32")
        model = from_file(path, fused_only=True).eval().to(self._device)
        if self._gpu:
            model = model.to(memory_format=torch.channels_last)
        self._model = model.half() if self._half else model
        self._graphs: dict[int, tuple] = {}  # batch size -> (graph, static input, static output)
        self._use_graphs = cuda_graph and self._gpu
        self.preprocessing = Preprocessing(imgsz=imgsz)
        self.batch_size = None

    def _forward(self, x):
        with self._torch.inference_mode():
            return self._model(x)

    def _graph(self, n: int):
        """Capture the model for batch size ``n`` once (after a warm-up on a side stream)."""
        torch = self._torch
        size = self.preprocessing.imgsz
        static_in = torch.zeros((n, 3, size, size), device=self._device,
                                dtype=torch.float16 if self._half else torch.float32)
        static_in = static_in.contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        self._graphs[n] = (graph, static_in, static_out)
        return self._graphs[n]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
        if not self._gpu:
            return self._forward(x).numpy()[:, 0]
        x = x.to(self._device, non_blocking=True)
        x = (x.half() if self._half else x).contiguous(memory_format=torch.channels_last)
        if self._use_graphs:
            graph, static_in, static_out = self._graphs.get(x.shape[0]) or self._graph(x.shape[0])
            static_in.copy_(x)
            graph.replay()
            out = static_out
        else:
            out = self._forward(x)
        return out.float().cpu().numpy()[:, 0]

    def describe(self) -> str:
        where = f"{self._device}, {'fp16' if self._half else 'fp32'}"
        if self._gpu:
            where += f", {self._torch.cuda.get_device_name(self._device)}, channels_last"
            where += ", CUDA graphs" if self._use_graphs else ""
        return f"torch {self._torch.__version__} ({self._model.arch}, {where})"

    def close(self) -> None:
        self._graphs.clear()
        self._model = None
