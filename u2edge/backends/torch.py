"""PyTorch backend for ``.pth``/``.pt`` weights (official checkpoints or u2edge ones).

On a CUDA GPU (the default where ``torch.cuda.is_available()``) the model runs in FP16 with
channels_last memory, and each batch size is captured once into a CUDA graph that replays with
static input and output buffers; where the native part is built, ``infer_frames`` pre- and
post-processes on the GPU too (``u2edge.framepath``). On the CPU it runs in FP32, eagerly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np

from .._deps import available, require
from ..cuda import Cuda, NoCudaDevice
from ..errors import U2EdgeError
from ..framepath import GpuFrames, usable_native
from ..weights import WEIGHTS
from .base import Backend

__all__ = ["TorchBackend"]

log = logging.getLogger("u2edge")


class TorchBackend(Backend):
    suffixes = (".pth", ".pt", ".onnx")  # an ONNX's weights, imported into the PyTorch model
    name = "torch"
    requires = "torch"

    def __init__(self, path: str | os.PathLike, *, imgsz: int = 320, device: str | None = None,
                 half: bool | None = None, cuda_graph: bool = True, gpu_frames: bool = True) -> None:
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
        # a .pth carries no metadata: its architecture's row of the weights table says how to preprocess
        self.preprocessing = dataclasses.replace(WEIGHTS[self._model.arch].preprocessing, imgsz=imgsz)
        self.batch_size = None
        self._frames = None
        # the kernels run on the CUDA runtime's current device, which is torch's default one
        if gpu_frames and self._gpu and self._device.index in (None, 0) and \
                (available("cuda.bindings") or available("cuda.cudart")):
            native = usable_native()
            try:
                if native is not None:
                    self._frames = GpuFrames(Cuda(), native, self.preprocessing, half=self._half)
            except NoCudaDevice as exc:  # cuda-python built for a newer driver than this one
                log.warning("pre- and post-processing on the CPU: %s", exc)
        self.gpu_frames = self._frames is not None

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
        return self._run(x.half() if self._half else x).float().cpu().numpy()[:, 0]

    def infer_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> list[np.ndarray]:
        if self._frames is None:
            return super().infer_frames(frames, rgb=rgb)
        torch, size = self._torch, self.preprocessing.imgsz
        stream = torch.cuda.current_stream(self._device)
        x = torch.empty((len(frames), 3, size, size), device=self._device,
                        dtype=torch.float16 if self._half else torch.float32)
        self._frames.upload(frames, rgb, x.data_ptr(), stream.cuda_stream)
        pred = self._run(x).float().contiguous()
        self._frames.download(pred.data_ptr(), stream.cuda_stream)
        stream.synchronize()
        return self._frames.masks()

    def _run(self, x):
        """The model on a batch already on the GPU, in the model's dtype; the output may be a
        CUDA graph's static buffer, overwritten by the next run."""
        x = x.contiguous(memory_format=self._torch.channels_last)
        if not self._use_graphs:
            return self._forward(x)
        graph, static_in, static_out = self._graphs.get(x.shape[0]) or self._graph(x.shape[0])
        static_in.copy_(x)
        graph.replay()
        return static_out

    def describe(self) -> str:
        where = f"{self._device}, {'fp16' if self._half else 'fp32'}"
        if self._gpu:
            where += f", {self._torch.cuda.get_device_name(self._device)}, channels_last"
            where += ", CUDA graphs" if self._use_graphs else ""
            where += f", {'GPU' if self.gpu_frames else 'CPU'} pre/post-processing"
        return f"torch {self._torch.__version__} ({self._model.arch}, {where})"

    def close(self) -> None:
        self._graphs.clear()
        self._model = None
        if self._frames is not None:
            self._frames.close()
            self._frames = None
