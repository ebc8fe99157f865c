"""The one tiny layer over CUDA that the GPU backends use: device and pinned host memory, streams,
copies and CUDA graphs, from cuda-python (preferred) or pycuda, whichever is installed.

Pointers are plain ints, so TensorRT's ``set_tensor_address`` takes them as they are. Also here:
``device_identity()``, the GPU an engine is built for or runs on (from nvidia-smi, or the board on
a Jetson), which needs no CUDA import.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np

from ._deps import available
from .errors import MissingDependencyError, U2EdgeError

__all__ = ["Cuda", "load", "device_identity", "NoCudaDevice"]


class NoCudaDevice(U2EdgeError):
    """No usable CUDA device or driver."""


def device_identity() -> dict | None:
    """Name and compute capability of the CUDA device work runs on (the first one
    CUDA_VISIBLE_DEVICES shows), from nvidia-smi; on a Jetson without it, the board's model."""
    if shutil.which("nvidia-smi") is not None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        cmd = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
        try:
            out = subprocess.run(cmd + (["-i", visible] if visible else []), capture_output=True, text=True,
                                 timeout=20).stdout.strip().splitlines()
        except (OSError, subprocess.TimeoutExpired):
            out = []
        if out and "," in out[0]:
            name, cc = (part.strip() for part in out[0].rsplit(",", 1))
            return {"gpu": name, "compute_capability": cc}
    try:
        with open("/proc/device-tree/model") as f:  # Jetson
            model = f.read().strip("\x00\n ")
    except OSError:
        return None
    return {"gpu": model, "compute_capability": None} if "jetson" in model.lower() else None


class Cuda:
    """CUDA runtime calls through cuda-python; every failure is one ``U2EdgeError`` line."""

    flavour = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:  # cuda-python before 12.6
            from cuda import cudart as rt
        self.rt = rt
        err, count = rt.cudaGetDeviceCount()
        if int(err) != 0 or not count:
            raise NoCudaDevice(f"no usable CUDA device ({self._name(err)}); the GPU backends need an NVIDIA GPU "
                               "and its driver: run .onnx or .pth models on the CPU instead")
        err, props = rt.cudaGetDeviceProperties(0)
        self._check(err, "reading the device")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        self.device = {"gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}

    def _name(self, err) -> str:
        return getattr(err, "name", str(err))

    def _check(self, err, what: str):
        if int(err) != 0:
            if "MemoryAllocation" in self._name(err):
                raise U2EdgeError(f"out of GPU memory {what}; close other GPU programs, or use a smaller batch")
            raise U2EdgeError(f"CUDA failed {what}: {self._name(err)}")

    def malloc(self, nbytes: int) -> int:
        err, ptr = self.rt.cudaMalloc(nbytes)
        self._check(err, f"allocating {nbytes} bytes")
        return int(ptr)

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def pinned(self, shape: tuple[int, ...], dtype=np.float32) -> tuple[np.ndarray, int]:
        """A page-locked host array (copies from it run asynchronously) and its pointer."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        err, ptr = self.rt.cudaMallocHost(nbytes)
        self._check(err, f"allocating {nbytes} pinned bytes")
        buffer = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(buffer, dtype).reshape(shape), int(ptr)

    def free_pinned(self, ptr: int) -> None:
        self.rt.cudaFreeHost(ptr)

    def stream(self) -> int:
        err, stream = self.rt.cudaStreamCreate()
        self._check(err, "creating a stream")
        return stream

    def destroy_stream(self, stream) -> None:
        self.rt.cudaStreamDestroy(stream)

    def handle(self, stream) -> int:
        """The raw cudaStream_t that TensorRT's execute_async_v3 takes."""
        return int(stream)

    def to_device(self, dst: int, src: np.ndarray, stream) -> None:
        (err,) = self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
        self._check(err, "copying to the GPU")

    def to_host(self, dst: np.ndarray, src: int, stream) -> None:
        (err,) = self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)
        self._check(err, "copying from the GPU")

    def synchronize(self, stream) -> None:
        (err,) = self.rt.cudaStreamSynchronize(stream)
        self._check(err, "running on the GPU")

    def capture(self, stream, work) -> object:
        """Record what ``work()`` enqueues on ``stream`` as a CUDA graph; return it instantiated."""
        rt = self.rt
        (err,) = rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        self._check(err, "starting a CUDA graph capture")
        try:
            work()
        finally:
            err, graph = rt.cudaStreamEndCapture(stream)
        self._check(err, "capturing a CUDA graph")
        err, instance = rt.cudaGraphInstantiate(graph, 0)
        rt.cudaGraphDestroy(graph)
        self._check(err, "instantiating a CUDA graph")
        return instance

    def launch(self, graph, stream) -> None:
        (err,) = self.rt.cudaGraphLaunch(graph, stream)
        self._check(err, "launching a CUDA graph")

    def destroy_graph(self, graph) -> None:
        self.rt.cudaGraphExecDestroy(graph)


class PyCuda(Cuda):
    """The same calls through pycuda (common on Jetson); CUDA graphs are left to cuda-python."""

    flavour = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as drv

        self.drv = drv
        try:
            drv.init()
            if drv.Device.count() == 0:
                raise drv.Error("no devices")
            device = drv.Device(0)
            self._context = device.retain_primary_context()
            self._context.push()
        except drv.Error as exc:
            raise NoCudaDevice(f"no usable CUDA device ({exc}); the GPU backends need an NVIDIA GPU and its "
                               "driver: run .onnx or .pth models on the CPU instead") from exc
        major, minor = device.compute_capability()
        self.device = {"gpu": device.name(), "compute_capability": f"{major}.{minor}"}
        self._allocations: dict[int, object] = {}

    def malloc(self, nbytes: int) -> int:
        try:
            allocation = self.drv.mem_alloc(nbytes)
        except self.drv.MemoryError as exc:
            raise U2EdgeError("out of GPU memory; close other GPU programs, or use a smaller batch") from exc
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def pinned(self, shape: tuple[int, ...], dtype=np.float32) -> tuple[np.ndarray, int]:
        array = self.drv.pagelocked_empty(shape, dtype)
        return array, array.ctypes.data

    def free_pinned(self, ptr: int) -> None:
        """pycuda frees page-locked arrays with the array."""

    def stream(self):
        return self.drv.Stream()

    def destroy_stream(self, stream) -> None:
        """pycuda destroys a stream with its object."""

    def handle(self, stream) -> int:
        return stream.handle

    def to_device(self, dst: int, src: np.ndarray, stream) -> None:
        self.drv.memcpy_htod_async(dst, src, stream)

    def to_host(self, dst: np.ndarray, src: int, stream) -> None:
        self.drv.memcpy_dtoh_async(dst, src, stream)

    def synchronize(self, stream) -> None:
        stream.synchronize()

    def capture(self, stream, work):
        raise U2EdgeError("CUDA graphs need cuda-python (pip install cuda-python); pycuda runs without them")


def load() -> Cuda:
    """cuda-python if installed, else pycuda; ``NoCudaDevice`` without a GPU."""
    if available("cuda.bindings") or available("cuda.cudart"):
        return Cuda()
    if available("pycuda"):
        return PyCuda()
    raise MissingDependencyError("the GPU backends need cuda-python or pycuda: pip install cuda-python "
                                 "(Jetson: pip3 install cuda-python, or pycuda)")
