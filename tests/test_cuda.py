"""The CUDA layer (cuda-python or pycuda) the GPU backends share: on a CUDA GPU, real copies and a
real CUDA graph; without one, one clear line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from u2edge import cuda
from u2edge.errors import MissingDependencyError, U2EdgeError


def gpu_or_skip() -> cuda.Cuda:
    try:
        return cuda.load()
    except (cuda.NoCudaDevice, MissingDependencyError) as exc:
        pytest.skip(f"needs a CUDA GPU: {exc}")


def test_no_device_is_one_line_naming_the_fallback():
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python 12.6 or newer")
    if int(runtime.cudaGetDeviceCount()[0]) == 0:
        pytest.skip("a CUDA device is here: the GPU tests use it")
    with pytest.raises(cuda.NoCudaDevice) as caught:
        cuda.load()
    message = str(caught.value)
    assert message.startswith("no usable CUDA device (") and "\n" not in message
    assert "run .onnx or .pth models on the CPU instead" in message


def test_without_cuda_python_or_pycuda_the_error_says_what_to_install():
    """In a process where neither cuda-python nor pycuda can be imported, as after a base install."""
    code = ("import sys\nfor m in ('cuda', 'pycuda'): sys.modules[m] = None\n"
            "from u2edge import cuda\nfrom u2edge.errors import MissingDependencyError\n"
            "try:\n    cuda.load()\nexcept MissingDependencyError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("the GPU backends need cuda-python or pycuda: pip install cuda-python "
                                   "(Jetson: pip3 install cuda-python, or pycuda)")


def test_without_a_driver_each_call_reaches_the_runtime_and_fails_in_one_line():
    """The layer's calls match the installed cuda-python's API: each reaches the CUDA runtime (a
    wrong argument would raise TypeError first) and its failure is one U2EdgeError line."""
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python 12.6 or newer")
    if int(runtime.cudaGetDeviceCount()[0]) == 0:
        pytest.skip("a CUDA device is here: the GPU tests make these calls for real")
    layer = cuda.Cuda.__new__(cuda.Cuda)  # past the device check, which this machine fails
    layer.rt = runtime
    host = np.zeros(16, np.float32)
    calls = {
        "allocating 64 bytes": lambda: layer.malloc(64),
        "allocating 64 pinned bytes": lambda: layer.pinned((16,)),
        "creating a stream": layer.stream,
        "copying to the GPU": lambda: layer.to_device(0, host, 0),
        "copying from the GPU": lambda: layer.to_host(host, 0, 0),
        "running on the GPU": lambda: layer.synchronize(0),
        "starting a CUDA graph capture": lambda: layer.capture(0, lambda: None),
        "launching a CUDA graph": lambda: layer.launch(runtime.cudaGraphExec_t(), 0),
    }
    for what, call in calls.items():
        with pytest.raises(U2EdgeError) as caught:
            call()
        assert str(caught.value).startswith(f"CUDA failed {what}: cudaError"), str(caught.value)
        assert "\n" not in str(caught.value)
    # releasing never raises: close() runs it on the way out of errors
    for release in (layer.free, layer.free_pinned, layer.destroy_stream):
        release(0)
    layer.destroy_graph(runtime.cudaGraphExec_t())


@pytest.mark.gpu
def test_round_trip_through_pinned_and_device_memory(photos):
    gpu = gpu_or_skip()
    frame = photos["astronaut.png"].astype(np.float32)
    host, host_ptr = gpu.pinned(frame.shape)
    back, back_ptr = gpu.pinned(frame.shape)
    device = gpu.malloc(frame.nbytes)
    stream = gpu.stream()
    try:
        host[:] = frame
        gpu.to_device(device, host, stream)
        gpu.to_host(back, device, stream)
        gpu.synchronize(stream)
        assert np.array_equal(back, frame)
        assert gpu.device["compute_capability"] and gpu.device["gpu"]
    finally:
        gpu.free(device)
        gpu.free_pinned(host_ptr)
        gpu.free_pinned(back_ptr)
        gpu.destroy_stream(stream)


@pytest.mark.gpu
def test_a_captured_graph_replays_its_copies():
    gpu = gpu_or_skip()
    if gpu.flavour != "cuda-python":
        pytest.skip("CUDA graphs go through cuda-python")
    src, src_ptr = gpu.pinned((1024,))
    dst, dst_ptr = gpu.pinned((1024,))
    device = gpu.malloc(src.nbytes)
    stream = gpu.stream()
    try:
        graph = gpu.capture(stream, lambda: (gpu.to_device(device, src, stream), gpu.to_host(dst, device, stream)))
        for value in (1.0, 7.5):
            src[:] = value
            gpu.launch(graph, stream)
            gpu.synchronize(stream)
            assert np.all(dst == value)  # the graph reads the pinned buffer anew each launch
        gpu.destroy_graph(graph)
    finally:
        gpu.free(device)
        gpu.free_pinned(src_ptr)
        gpu.free_pinned(dst_ptr)
        gpu.destroy_stream(stream)
