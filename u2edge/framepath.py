"""The frame path on the GPU: uint8 frames go up, frame-size masks come down, and the pre- and
post-processing in between run in u2edge's CUDA kernels (``u2edge._native``) on the network's
own device buffers.

A backend that keeps its network input and output in device memory (TensorRT, PyTorch on CUDA)
owns one ``GpuFrames`` per batch in flight and, on that batch's stream:

    frames.upload(chunk, rgb, network_input, stream)   # copy the frames up, preprocess into the input
    ...                                                 # run the network
    frames.download(network_output, stream)            # postprocess to frame size, copy the masks down
    cuda.synchronize(stream)
    masks = frames.masks()

Only the frames' bytes and the masks cross the bus; the 1080p resize, normalization and mask
resize never touch the CPU. Staging buffers (pinned host and device) grow to the largest batch of
frames seen and are reused; they must not grow while the stream still uses them, which the
owner guarantees by synchronizing before the next ``upload``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from .cuda import Cuda
from .native import load as load_native
from .processing import Preprocessing, check_frame

__all__ = ["GpuFrames", "usable_native"]

log = logging.getLogger("u2edge")


def usable_native() -> ModuleType | None:
    """``u2edge._native`` if it is built and its kernels run here, else None (logged once per
    engine): a module compiled against a newer CUDA than the driver's fails on its first kernel."""
    native = load_native()
    if native is None:
        return None
    try:
        native.postprocess(np.zeros((2, 2), np.float32), 2, 2)
    except RuntimeError as exc:
        log.warning("pre- and post-processing on the CPU: u2edge._native cannot run here (%s)", exc)
        return None
    return native


class _Staging:
    """A pinned host array and a device buffer of the same size, grown on demand."""

    def __init__(self, cuda: Cuda, dtype) -> None:
        self._cuda, self._dtype = cuda, np.dtype(dtype)
        self.host: np.ndarray = np.empty(0, self._dtype)
        self.device = 0
        self._pinned = 0

    def reserve(self, count: int) -> None:
        if count <= self.host.size:
            return
        self.release()
        self.host, self._pinned = self._cuda.pinned((count,), self._dtype)
        self.device = self._cuda.malloc(count * self._dtype.itemsize)

    def release(self) -> None:
        if self.device:
            self._cuda.free(self.device)
            self._cuda.free_pinned(self._pinned)
        self.host, self.device, self._pinned = np.empty(0, self._dtype), 0, 0


class GpuFrames:
    """Frames in, masks out, on one stream; ``half`` when the network input is FP16."""

    def __init__(self, cuda: Cuda, native: ModuleType, spec: Preprocessing, *, half: bool = False) -> None:
        self._cuda, self._native, self._spec, self._half = cuda, native, spec, half
        size = spec.imgsz
        self._scratch = cuda.malloc(3 * size * size + 16)  # the resized image and its max; the map's min and max
        self._frames = _Staging(cuda, np.uint8)
        self._masks = _Staging(cuda, np.float32)
        self._shapes: list[tuple[int, int]] = []

    def upload(self, frames: Sequence[np.ndarray], rgb: bool, network_input: int, stream) -> None:
        """Enqueue: copy HxWx3 uint8 frames (BGR, or RGB with ``rgb``) to the GPU and preprocess
        frame i into batch item i of ``network_input`` (N, 3, S, S)."""
        for frame in frames:
            check_frame(frame)
        spec, size = self._spec, self._spec.imgsz
        self._frames.reserve(sum(frame.size for frame in frames))
        item_bytes = 3 * size * size * (2 if self._half else 4)
        swap_rb = (spec.channel_order == "RGB") != rgb
        handle = self._cuda.handle(stream)
        offset = 0
        for frame in frames:
            self._frames.host[offset:offset + frame.size].reshape(frame.shape)[...] = frame
            offset += frame.size
        self._cuda.to_device(self._frames.device, self._frames.host[:offset], stream)
        offset = 0
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            self._native.preprocess_device(self._frames.device + offset, h, w, w * 3, size, spec.mean, spec.std,
                                           spec.max_normalize, swap_rb, network_input + i * item_bytes, self._half,
                                           self._scratch, handle)
            offset += frame.size
        self._shapes = [frame.shape[:2] for frame in frames]

    def download(self, network_output: int, stream) -> None:
        """Enqueue: postprocess the (N, 1, S, S) float32 maps to each frame's size, copy them down."""
        size = self._spec.imgsz
        self._masks.reserve(sum(h * w for h, w in self._shapes))
        handle = self._cuda.handle(stream)
        offset = 0
        for i, (h, w) in enumerate(self._shapes):
            self._native.postprocess_device(network_output + i * size * size * 4, size,
                                            self._masks.device + offset * 4, h, w, self._scratch, handle)
            offset += h * w
        self._cuda.to_host(self._masks.host[:offset], self._masks.device, stream)

    def masks(self) -> list[np.ndarray]:
        """The masks of the last ``download`` as new HxW float32 arrays; call it after the stream
        is synchronized."""
        out, offset = [], 0
        for h, w in self._shapes:
            out.append(self._masks.host[offset:offset + h * w].reshape(h, w).copy())
            offset += h * w
        return out

    def close(self) -> None:
        self._frames.release()
        self._masks.release()
        if self._scratch:
            self._cuda.free(self._scratch)
            self._scratch = 0
