"""TensorRT backend for ``.engine``/``.plan`` files from ``u2edge build`` (or trtexec).

Opening an engine checks it against its sidecar first (truncated, another TensorRT, another GPU:
``IncompatibleEngineError`` with the command that rebuilds it), then deserializes it, binds its
tensors by name, and allocates device buffers and pinned host buffers once per in-flight slot.
Each slot has its own execution context and stream; ``submit``/``collect`` keep several batches
in flight, ``infer`` is one submit and collect. Where the native part is built, ``submit_frames``
takes uint8 frames instead and returns frame-size masks, pre- and post-processed on the GPU
(``u2edge.framepath``; ``gpu_frames=False`` keeps that on the CPU). A static shape is captured
into a CUDA graph on its second run (``cuda_graph=False`` turns that off). The same code drives
``tensorrt`` and ``tensorrt_rtx``; CUDA calls go through ``u2edge.cuda``.

An engine is safe to use from several threads: calls are serialised by a lock. For throughput,
open one engine per thread, or keep frames in flight with ``submit``/``collect``.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import trtcompat
from ..compatibility import check_device, check_engine, rebuild_command
from ..cuda import load as load_cuda
from ..errors import IncompatibleEngineError, ModelFormatError, U2EdgeError
from ..framepath import GpuFrames, usable_native
from ..native import BUILD_COMMAND
from ..sidecar import Sidecar
from .base import Backend

__all__ = ["TensorRTBackend"]

log = logging.getLogger("u2edge")


@dataclass
class _Slot:
    """One batch in flight: an execution context, a stream, and its buffers (filled in one by
    one, so that close() frees what a failed open had allocated)."""

    context: object
    stream: object = None
    device_in: int = 0
    device_out: int = 0
    host_in: np.ndarray | None = None
    host_out: np.ndarray | None = None
    pinned: list[int] = field(default_factory=list)
    side: list[int] = field(default_factory=list)  # the outputs u2edge does not read (d1..d6 in some engines)
    frames: GpuFrames | None = None  # the GPU frame path, where the native part is built
    graphs: dict[int, object] = field(default_factory=dict)  # batch size -> instantiated CUDA graph
    runs: dict[int, int] = field(default_factory=dict)  # batch size -> plain runs so far
    pending: int | None = None  # the batch size submitted and not yet collected
    pending_frames: bool = False  # whether that batch came from submit_frames


class TensorRTBackend(Backend):
    suffixes = (".engine", ".plan")
    name = "tensorrt"
    requires = "tensorrt"

    @classmethod
    def installed(cls) -> bool:
        return trtcompat.installed()

    def __init__(self, path: str | os.PathLike, *, cuda_graph: bool = True, in_flight: int = 2,
                 gpu_frames: bool = True, tensorrt: str | None = None) -> None:
        self._slots: list[_Slot] = []
        self._closed = False
        path = Path(path)
        if in_flight < 1:
            raise U2EdgeError(f"in_flight {in_flight} must be at least 1")
        self.in_flight = in_flight
        sidecar = Sidecar.read(path)  # a corrupt one is an error here, before CUDA
        plan = path.read_bytes()
        built = (sidecar.tensorrt if sidecar else None) or {}
        trt = self._trt = trtcompat.load(tensorrt or built.get("flavour"))
        check_engine(path, plan, sidecar, trt.name)  # before CUDA: the file and the TensorRT version
        cuda = self._cuda = load_cuda()
        check_device(path, sidecar, cuda.device)
        logger = trtcompat.make_logger(trt)
        self._runtime = trt.module.Runtime(logger)
        engine = self._engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            why = logger.errors[-1] if logger.errors else "no message from TensorRT"
            raise IncompatibleEngineError(f"{trt.name} cannot load {path} ({why}); rebuild it here: "
                                          f"{rebuild_command(path, sidecar)}")
        self._bind_io(path, trt.io_tensors(engine), (sidecar.preprocessing if sidecar else None) or {})
        self._use_graphs = cuda_graph
        self._native = usable_native() if gpu_frames else None
        self.gpu_frames = self._native is not None
        self._lock = threading.Lock()
        self._next = 0
        try:
            for _ in range(in_flight):
                self._new_slot()
        except BaseException:
            self.close()
            raise
        where = "GPU" if self.gpu_frames else "CPU"
        precision = (sidecar.precision if sidecar else None) or "unknown precision"
        self._describe = f"{trt.name} ({cuda.device['gpu']}, {precision}, {where} pre/post-processing)"

    def _bind_io(self, path: Path, tensors: list[dict], metadata: dict) -> None:
        inputs = [t for t in tensors if t["input"]]
        outputs = [t for t in tensors if not t["input"]]
        dims = lambda t: (t["name"], tuple(None if d == -1 else d for d in t["shape"]))  # noqa: E731
        self.bind(path, [dims(t) for t in inputs], [dims(t) for t in outputs], metadata)
        out = next(t for t in outputs if t["name"] == self.output_name)
        for tensor in (inputs[0], out):
            if tensor["dtype"] != "float":
                raise ModelFormatError(f"{path.name}: tensor {tensor['name']} is {tensor['dtype']}; u2edge engines "
                                       "keep FP32 inputs and outputs (rebuild with u2edge build)")
        self._input, self._output, self._size = self.input_name, self.output_name, self.preprocessing.imgsz
        if self.batch_size is None:
            self.max_batch = inputs[0]["profile"][2][0]
        else:
            self.max_batch = self.batch_size
        # TensorRT runs only with every output bound: an engine from the official 7-output ONNX
        # (trtexec) writes its side maps too, into buffers of up to 4 bytes an element
        self._side = [(t["name"], 4 * int(np.prod([self.max_batch if d == -1 else d for d in t["shape"]])))
                      for t in outputs if t is not out]

    def _new_slot(self) -> None:
        """Add a slot; it joins ``_slots`` before its first allocation, so close() frees it."""
        cuda, size, n = self._cuda, self._size, self.max_batch
        context = self._engine.create_execution_context()
        if context is None:
            raise U2EdgeError("out of GPU memory creating a TensorRT execution context; close other GPU programs")
        slot = _Slot(context)
        self._slots.append(slot)
        slot.stream = cuda.stream()
        slot.host_in, pinned = cuda.pinned((n, 3, size, size))
        slot.pinned.append(pinned)
        slot.host_out, pinned = cuda.pinned((n, size, size))
        slot.pinned.append(pinned)
        slot.device_in = cuda.malloc(slot.host_in.nbytes)
        context.set_tensor_address(self._input, slot.device_in)
        slot.device_out = cuda.malloc(slot.host_out.nbytes)
        context.set_tensor_address(self._output, slot.device_out)
        for name, nbytes in self._side:
            slot.side.append(cuda.malloc(nbytes))
            context.set_tensor_address(name, slot.side[-1])
        if self._native is not None:
            slot.frames = GpuFrames(cuda, self._native, self.preprocessing)

    # --- running -------------------------------------------------------------------------------
    def submit(self, batch: np.ndarray) -> int:
        """Start ``batch`` (N, 3, S, S) float32 on the GPU; returns a ticket for ``collect``."""
        n = batch.shape[0]
        if batch.shape[1:] != (3, self._size, self._size) or not 1 <= n <= self.max_batch:
            raise U2EdgeError(f"batch of shape {batch.shape}: this engine takes (1..{self.max_batch}, 3, "
                              f"{self._size}, {self._size})")
        with self._lock:
            ticket, slot = self._take(n)
            slot.host_in[:n] = batch
            self._cuda.to_device(slot.device_in, slot.host_in[:n], slot.stream)
            self._execute(slot, n)
            self._cuda.to_host(slot.host_out[:n], slot.device_out, slot.stream)
            slot.pending, slot.pending_frames = n, False
            return ticket

    def submit_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> int:
        """Start up to ``max_batch`` HxWx3 uint8 frames of any sizes, pre- and post-processed on
        the GPU; ``collect`` then returns their masks."""
        if not self.gpu_frames:
            raise U2EdgeError("this engine pre- and post-processes on the CPU (gpu_frames=False, or u2edge._native "
                              f"is not built or cannot run here; build: {BUILD_COMMAND}); use submit() with "
                              "preprocessed batches")
        if not 1 <= len(frames) <= self.max_batch:
            raise U2EdgeError(f"{len(frames)} frames: this engine takes 1 to {self.max_batch} at once")
        with self._lock:  # GpuFrames.upload checks every frame before it enqueues anything
            ticket, slot = self._take(len(frames))
            slot.frames.upload(frames, rgb, slot.device_in, slot.stream)
            self._execute(slot, self.batch_size or len(frames))
            slot.frames.download(slot.device_out, slot.stream)
            slot.pending, slot.pending_frames = len(frames), True
            return ticket

    def _take(self, n: int) -> tuple[int, _Slot]:
        """The next free slot, set up for a batch of ``n``; called with the lock held."""
        ticket = self._next
        slot = self._slots[ticket % len(self._slots)]
        if slot.pending is not None:
            raise U2EdgeError(f"{len(self._slots)} batches are already in flight; collect one first")
        self._next += 1
        if self.batch_size is None:
            slot.context.set_input_shape(self._input, (n, 3, self._size, self._size))
        return ticket, slot

    def _execute(self, slot: _Slot, n: int) -> None:
        handle = self._cuda.handle(slot.stream)
        graph = slot.graphs.get(n)
        if graph is not None:
            self._cuda.launch(graph, slot.stream)
            return
        runs = slot.runs.get(n, 0)
        if self._use_graphs and runs >= 1:  # TensorRT sets itself up on the first run; capture the next
            try:
                slot.graphs[n] = self._cuda.capture(slot.stream, lambda: self._enqueue(slot, handle))
                self._cuda.launch(slot.graphs[n], slot.stream)
                return
            except U2EdgeError as exc:
                log.info("running without CUDA graphs: %s", exc)
                self._use_graphs = False
        self._enqueue(slot, handle)
        slot.runs[n] = runs + 1

    def _enqueue(self, slot: _Slot, handle: int) -> None:
        if not slot.context.execute_async_v3(handle):
            raise U2EdgeError(f"{self._trt.name} failed to run the engine")

    def collect(self, ticket: int) -> np.ndarray | list[np.ndarray]:
        """Wait for a submitted batch: ``submit``'s (N, S, S) maps as a new array, or
        ``submit_frames``' masks as new HxW arrays."""
        with self._lock:
            slot = self._slots[ticket % len(self._slots)]
            if slot.pending is None:
                raise U2EdgeError(f"nothing in flight for ticket {ticket}")
            self._cuda.synchronize(slot.stream)
            n, slot.pending = slot.pending, None
            return slot.frames.masks() if slot.pending_frames else slot.host_out[:n].copy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.collect(self.submit(np.ascontiguousarray(batch, np.float32)))

    def infer_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> list[np.ndarray]:
        return self.collect(self.submit_frames(frames, rgb=rgb))

    def describe(self) -> str:
        return self._describe

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        cuda = getattr(self, "_cuda", None)
        for slot in self._slots:  # the last one may be partly allocated, when opening failed
            for graph in slot.graphs.values():
                cuda.destroy_graph(graph)
            if slot.stream is not None:
                cuda.synchronize(slot.stream)
            if slot.frames is not None:
                slot.frames.close()
            for ptr in (slot.device_in, slot.device_out, *slot.side):
                if ptr:
                    cuda.free(ptr)
            for ptr in slot.pinned:
                cuda.free_pinned(ptr)
            if slot.stream is not None:
                cuda.destroy_stream(slot.stream)
        self._slots = []
        self._engine = self._runtime = None

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_slots", None):
            warnings.warn("a TensorRT engine was never closed; use it as a context manager or call close()",
                          ResourceWarning, stacklevel=1)
            self.close()
