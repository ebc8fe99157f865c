"""TensorRTBackend's own logic, run on the CPU. TensorRT cannot run here (no GPU), so a stand-in
keeps TensorRT's documented contract for the calls the backend makes (every I/O tensor bound by
name before ``execute_async_v3``, the input shape set for a dynamic batch) and runs the real network with ONNX Runtime on the bound buffers. Memory is
``conftest.HostMemory``, and the frame path uses the kernels' arithmetic (``u2edge._native.cpu``).
What is checked is the backend: binding, slots and tickets, CUDA graph replay, the frame path,
its errors, and freeing everything on close. tests/test_tensorrt.py runs real plans on a GPU."""

from __future__ import annotations

import ctypes
import enum
import types
from contextlib import closing

import numpy as np
import onnxruntime as ort
import pytest

from conftest import PHOTOS, HostMemory
from u2edge import trtcompat
from u2edge.backends import tensorrt as backend_module
from u2edge.backends.tensorrt import TensorRTBackend
from u2edge.errors import U2EdgeError
from u2edge.native import load as load_native
from u2edge.processing import postprocess, preprocess


class _Severity(enum.IntEnum):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class _ILogger:
    Severity = _Severity


class _TensorIOMode(enum.Enum):
    INPUT, OUTPUT = 1, 2


class _DataType(enum.Enum):
    FLOAT = 0


def _dims(shape) -> list[int]:
    """An ONNX Runtime shape as TensorRT gives it: -1 for a symbolic dimension."""
    return [d if isinstance(d, int) else -1 for d in shape]


class _Engine:
    """An ICudaEngine whose plan is an ONNX file: its I/O tensors, with -1 for a dynamic batch and
    a (1, 2, max) batch profile."""

    def __init__(self, plan: bytes, max_batch: int) -> None:
        self.session = ort.InferenceSession(plan, providers=["CPUExecutionProvider"])
        self.tensors = {t.name: (_TensorIOMode.INPUT, _dims(t.shape)) for t in self.session.get_inputs()}
        self.tensors.update({t.name: (_TensorIOMode.OUTPUT, _dims(t.shape)) for t in self.session.get_outputs()})
        self.max_batch = max_batch

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return list(self.tensors)[index]

    def get_tensor_mode(self, name: str) -> _TensorIOMode:
        return self.tensors[name][0]

    def get_tensor_shape(self, name: str) -> list[int]:
        return self.tensors[name][1]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        shape = self.tensors[name][1]
        return [tuple(n if d == -1 else d for d in shape) for n in (1, 2, self.max_batch)]

    def get_tensor_dtype(self, name: str) -> _DataType:
        return _DataType.FLOAT

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Context:
    """An IExecutionContext: runs the network on the tensors at the bound addresses."""

    def __init__(self, engine: _Engine) -> None:
        self.engine, self.addresses, self.shapes = engine, {}, {}

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def set_input_shape(self, name: str, shape) -> None:
        self.shapes[name] = tuple(shape)

    def execute_async_v3(self, stream: int) -> bool:
        if set(self.addresses) != set(self.engine.tensors):  # TensorRT refuses to run with any unbound
            return False
        (name,) = [n for n, (mode, _) in self.engine.tensors.items() if mode is _TensorIOMode.INPUT]
        shape = self.shapes.get(name, tuple(self.engine.tensors[name][1]))
        if -1 in shape:
            return False
        count = int(np.prod(shape))
        x = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses[name])).reshape(shape)
        for out, value in zip(self.engine.session.get_outputs(), self.engine.session.run(None, {name: x.copy()})):
            value = np.ascontiguousarray(value, np.float32)
            ctypes.memmove(self.addresses[out.name], value.ctypes.data, value.nbytes)
        return True


def _stand_in(max_batch: int = 4) -> trtcompat.TensorRT:
    engines: list[_Engine] = []

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> _Engine:
            engines.append(_Engine(plan, max_batch))
            return engines[-1]

    module = types.SimpleNamespace(__version__="10.99.0", ILogger=_ILogger, Runtime=Runtime,
                                   TensorIOMode=_TensorIOMode, engines=engines)
    return trtcompat.TensorRT(module, "tensorrt")


@pytest.fixture
def host(monkeypatch):
    """The backend's TensorRT, CUDA layer and kernels, on the CPU."""
    native = load_native()
    if native is None:
        pytest.skip("the native part is not built here (no nvcc): the frame path needs its CPU entry points")
    memory, trt = HostMemory(), _stand_in()
    monkeypatch.setattr(backend_module.trtcompat, "load", lambda prefer=None: trt)
    monkeypatch.setattr(backend_module, "load_cuda", lambda: memory)
    monkeypatch.setattr(backend_module, "usable_native", lambda: native.cpu)
    return types.SimpleNamespace(memory=memory, engines=trt.module.engines)


@pytest.fixture(scope="module")
def dynamic_plan(tmp_path_factory, official_onnx):
    """The official U2-NetP with a dynamic batch and only the fused output, as u2edge build makes it."""
    pytest.importorskip("onnx", reason="exporting needs the export extra: pip install -e '.[export]'")
    from u2edge.export import export_onnx

    folder = tmp_path_factory.mktemp("plans")
    onnx_path = export_onnx(folder / "dynamic.onnx", weights=official_onnx, batch=None).path
    plan = folder / "dynamic.engine"
    plan.write_bytes(onnx_path.read_bytes())
    return plan


def test_an_engine_with_side_outputs_binds_them_all_and_gives_onnxruntimes_masks(host, tmp_path, official_onnx,
                                                                                  photos, engine):
    """trtexec on the official ONNX keeps its seven outputs; TensorRT runs only with all bound."""
    plan = tmp_path / "official.engine"
    plan.write_bytes(official_onnx.read_bytes())
    frames = [photos[name] for name in PHOTOS]
    with closing(TensorRTBackend(plan)) as trt:
        assert trt.gpu_frames and "GPU pre/post-processing" in trt.describe()
        assert trt.batch_size == 1 and len(host.engines[0].tensors) == 8
        for frame in frames:
            (mask,) = trt.infer_frames([frame])
            assert np.abs(mask - engine(frame)).max() < 1e-4
            pred = trt.infer(preprocess(frame, trt.preprocessing)[None])
            assert np.abs(postprocess(pred[0], *frame.shape[:2]) - engine(frame)).max() < 1e-4
        with pytest.raises(U2EdgeError, match=r"2 frames: this engine takes 1 to 1 at once"):
            trt.infer_frames(frames[:2])
    assert host.memory.buffers == {} and host.memory.streams == set()


def test_batches_in_flight_tickets_and_graph_replay(host, dynamic_plan, photos, engine):
    frames = [photos[name] for name in PHOTOS]
    x = np.stack([preprocess(f, engine.preprocessing) for f in frames])
    reference = np.stack([engine.backend.infer(item[None])[0] for item in x])
    with closing(TensorRTBackend(dynamic_plan, in_flight=2)) as trt:
        assert trt.batch_size is None and trt.max_batch == 4
        first, second = trt.submit(x[:3]), trt.submit(x[3:4])
        with pytest.raises(U2EdgeError, match="2 batches are already in flight; collect one first"):
            trt.submit(x[:1])
        assert np.abs(trt.collect(second) - reference[3:4]).max() < 1e-4
        assert np.abs(trt.collect(first) - reference[:3]).max() < 1e-4
        with pytest.raises(U2EdgeError, match=f"nothing in flight for ticket {first}"):
            trt.collect(first)
        with pytest.raises(U2EdgeError, match=r"this engine takes \(1..4, 3, 320, 320\)"):
            trt.submit(x.repeat(2, axis=0)[:5])
        # the same batch size again and again: captured into a graph on its second run, whose
        # replays read each new batch
        for start in (0, 1, 2, 0, 1, 2):
            assert np.abs(trt.infer(x[start:start + 3]) - reference[start:start + 3]).max() < 1e-4
        assert host.memory.launches >= 4
        masks = trt.infer_frames(frames[:4])
        assert all(np.abs(m - engine(f)).max() < 1e-4 for m, f in zip(masks, frames))
    assert host.memory.buffers == {} and host.memory.streams == set()


def test_without_graphs_or_gpu_frames(host, dynamic_plan, photos, engine):
    frame = photos["chelsea.png"]
    with closing(TensorRTBackend(dynamic_plan, cuda_graph=False, gpu_frames=False)) as trt:
        assert not trt.gpu_frames and "CPU pre/post-processing" in trt.describe()
        x = preprocess(frame, trt.preprocessing)[None]
        for _ in range(3):
            assert np.abs(trt.infer(x)[0] - engine.backend.infer(x)[0]).max() < 1e-4
        assert host.memory.launches == 0
        with pytest.raises(U2EdgeError, match="this engine pre- and post-processes on the CPU"):
            trt.submit_frames([frame])


class _SmallCard(HostMemory):
    """Room for ``budget`` allocations (device or pinned); the next one fails as the CUDA layer
    reports an out-of-memory cudaMalloc."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def _spend(self, nbytes: int) -> None:
        if self.budget == 0:
            raise U2EdgeError(f"out of GPU memory allocating {nbytes} bytes; close other GPU programs, "
                              "or use a smaller batch")
        self.budget -= 1

    def malloc(self, nbytes: int) -> int:
        self._spend(nbytes)
        return super().malloc(nbytes)

    def pinned(self, shape, dtype=np.float32) -> tuple[np.ndarray, int]:
        self._spend(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return super().pinned(shape, dtype)


def test_running_out_of_memory_at_open_frees_what_was_allocated(host, monkeypatch, tmp_path, official_onnx):
    """Out of GPU memory at each allocation in turn (two slots, side outputs, the frame path's
    scratch): the error reaches the caller as one line, and nothing is left allocated."""
    plan = tmp_path / "official.engine"
    plan.write_bytes(official_onnx.read_bytes())
    budget = 0
    while True:
        card = _SmallCard(budget)
        monkeypatch.setattr(backend_module, "load_cuda", lambda card=card: card)
        try:
            trt = TensorRTBackend(plan, in_flight=2)
        except U2EdgeError as exc:
            assert str(exc).startswith("out of GPU memory allocating") and "\n" not in str(exc)
            assert card.buffers == {} and card.streams == set(), budget
            budget += 1
            continue
        trt.close()
        break
    assert budget == 22  # per slot: 2 pinned, input, output, 6 side maps, the frame path's scratch


def test_the_pipeline_keeps_two_frames_in_flight(host, dynamic_plan, photo_paths, photos, engine):
    """While the pipeline hands out a frame's mask, the next frame is already on the "GPU"."""
    from u2edge import U2EdgeEngine
    from u2edge.video import ImageSequenceSource, Pipeline

    with U2EdgeEngine(dynamic_plan, max_batch=1, in_flight=2) as trt:
        assert trt.in_flight == 2
        in_flight, masks = [], []
        for frame, mask in Pipeline(ImageSequenceSource("photos", photo_paths), trt):
            in_flight.append(sum(slot.pending is not None for slot in trt.backend._slots))
            masks.append(mask)
    assert in_flight == [1, 1, 1, 1, 0]  # the next frame was submitted before this one was collected
    assert all(np.abs(mask - engine(photos[name])).max() < 1e-4 for mask, name in zip(masks, PHOTOS))
