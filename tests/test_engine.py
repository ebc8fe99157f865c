"""U2EdgeEngine on the ONNX Runtime CPU backend (and PyTorch for .pth), on real photos."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import PHOTOS
from u2edge import U2EdgeEngine, to_bgr8
from u2edge.errors import ImageError, ModelFormatError

TORCH = "PyTorch runs .pth models: pip install torch==2.13.0 -e '.[export]'"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_mask_shape_range_and_content(engine, photos):
    for name in PHOTOS:
        frame = photos[name]
        mask = engine(frame)
        assert mask.shape == frame.shape[:2] and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        assert 0.01 < (mask > 0.5).mean() < 0.95, name  # a subject (the rocket covers 2%), not empty or full


def test_default_engine_is_the_official_u2netp_at_auto(official_onnx):
    from u2edge.cpu import choose_precision, model_file

    with U2EdgeEngine() as eng:
        assert eng.choice == choose_precision("u2netp")  # INT8 on VNNI/AMX, else FP32
        assert eng.path == model_file(eng.choice)
        assert eng.preprocessing.imgsz == 320
    with U2EdgeEngine(precision="fp32") as eng:
        assert eng.path == official_onnx


def test_batch_of_mixed_sizes_equals_single_calls(engine, photos):
    frames = [photos[n] for n in PHOTOS]
    for single, batched in zip((engine(f) for f in frames), engine.batch(frames)):
        assert np.array_equal(single, batched)


def test_rgb_flag(engine, photos):
    frame = photos["rocket.jpg"]
    assert np.array_equal(engine(frame), engine(np.ascontiguousarray(frame[:, :, ::-1]), rgb=True))


def test_gray_rgba_16bit_and_tiny_images(engine, photos):
    frame = photos["astronaut.png"]
    reference = engine(frame)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert engine(to_bgr8(gray)).shape == gray.shape
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(engine(to_bgr8(bgra)), reference)
    deep = frame.astype(np.uint16) * 257
    assert np.array_equal(engine(to_bgr8(deep)), reference)
    assert engine(np.full((1, 1, 3), 128, np.uint8)).shape == (1, 1)
    with pytest.raises(ImageError, match="u2edge.to_bgr8"):
        engine(bgra)


def test_fixed_batch_models_pad_and_dynamic_ones_stack(tmp_path, photos):
    pytest.importorskip("onnx", reason="export needs onnx: pip install -e '.[export]'")
    from u2edge.export import export_onnx

    frames = [photos[n] for n in PHOTOS[:3]]
    with U2EdgeEngine(export_onnx(tmp_path / "b1.onnx").path) as one:
        want = [one(f) for f in frames]
    for batch in (2, None):
        path = export_onnx(tmp_path / f"b{batch}.onnx", batch=batch).path
        with U2EdgeEngine(path) as eng:
            assert eng.max_batch == (batch or 8)
            for a, b in zip(eng.batch(frames), want):
                assert np.abs(a - b).max() < 1e-4


@pytest.mark.torch
def test_pth_backend_gives_the_same_masks(official_checkpoint, engine, photos):
    with U2EdgeEngine(official_checkpoint) as eng:
        assert eng.backend.name == "torch"
        for name in PHOTOS[:2]:
            assert np.abs(eng(photos[name]) - engine(photos[name])).max() < 1e-3


def test_model_files_are_checked(tmp_path):
    with pytest.raises(ModelFormatError, match="no backend for '.tflite'"):
        U2EdgeEngine(tmp_path / "model.tflite")
    with pytest.raises(ModelFormatError, match="model file not found"):
        U2EdgeEngine(tmp_path / "model.engine")
    with pytest.raises(ModelFormatError, match="not found"):
        U2EdgeEngine(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelFormatError, match="corrupt or not an ONNX model"):
        U2EdgeEngine(corrupt, backend="onnxruntime")


def test_a_graph_that_is_not_u2net_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelFormatError, match="not a U-2-Net graph"):
        U2EdgeEngine(path)


def test_the_runtime_never_imports_torch(official_onnx, photo_paths):
    code = (
        "import sys, u2edge, u2edge.cli\n"
        f"eng = u2edge.U2EdgeEngine({str(official_onnx)!r})\n"
        f"eng(u2edge.read_image({str(photo_paths[0])!r}))\n"
        "heavy = [m for m in ('torch', 'onnx', 'tensorrt') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_max_batch_and_stale_metadata(tmp_path, official_onnx):
    from u2edge.errors import U2EdgeError

    with pytest.raises(U2EdgeError, match="max_batch 0 must be at least 1"):
        U2EdgeEngine(official_onnx, max_batch=0)
    onnx = pytest.importorskip("onnx")
    from u2edge.export import export_onnx

    model = onnx.load(str(export_onnx(tmp_path / "288.onnx", imgsz=288).path))
    for prop in model.metadata_props:
        if prop.key == "u2edge.imgsz":
            prop.value = "320"  # as if a tool resized the input and kept the metadata
    onnx.save(model, tmp_path / "stale.onnx")
    with pytest.raises(ModelFormatError, match="metadata says 320px but its input is 288px"):
        U2EdgeEngine(tmp_path / "stale.onnx")


@pytest.mark.torch
def test_torch_backend_refuses_an_unknown_device(official_checkpoint):
    pytest.importorskip("torch", reason=TORCH)
    from u2edge.errors import U2EdgeError

    with pytest.raises(U2EdgeError, match="device=.tpu.: use .cpu., .cuda. or .cuda:N."):
        U2EdgeEngine(official_checkpoint, device="tpu")


@pytest.mark.torch
def test_torch_backend_without_cuda_says_to_use_the_cpu(official_checkpoint):
    torch = pytest.importorskip("torch", reason=TORCH)
    if torch.cuda.is_available():
        pytest.skip("this torch sees a CUDA device: the GPU tests run it")
    from u2edge.cuda import NoCudaDevice
    from u2edge.errors import U2EdgeError

    with pytest.raises(NoCudaDevice, match=r"device='cuda' but this torch .* sees no CUDA device; use device='cpu'"):
        U2EdgeEngine(official_checkpoint, device="cuda")
    with pytest.raises(U2EdgeError, match="half=True needs a CUDA device"):
        U2EdgeEngine(official_checkpoint, half=True)


@pytest.mark.gpu
@pytest.mark.torch
def test_torch_cuda_fp16_with_cuda_graphs_matches_onnxruntime(official_checkpoint, engine, photos):
    torch = pytest.importorskip("torch", reason=TORCH)
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of torch on a GPU machine")
    with U2EdgeEngine(official_checkpoint, device="cuda") as gpu, \
            U2EdgeEngine(official_checkpoint, device="cuda", half=False, cuda_graph=False) as eager:
        assert "fp16" in gpu.describe() and "CUDA graphs" in gpu.describe()
        frames = [photos[n] for n in PHOTOS]
        first, again = gpu.batch(frames), gpu.batch(frames)  # the second batch replays the graphs
        for name, a, b, c in zip(PHOTOS, first, again, eager.batch(frames)):
            ref = engine(photos[name])
            assert np.array_equal(a, b), name
            assert iou(a, ref) > 0.98 and np.abs(a - ref).mean() < 0.01, name  # FP16 tolerance
            assert np.abs(c - ref).max() < 1e-3, name  # FP32 on the GPU


@pytest.mark.gpu
@pytest.mark.torch
def test_the_gpu_frame_path_matches_the_cpu_one(official_checkpoint, photos):
    """u2edge._native pre- and post-processes on the network's device buffers (u2edge.framepath),
    here through PyTorch on CUDA in FP32, against the same model with CPU pre/post-processing."""
    torch = pytest.importorskip("torch", reason=TORCH)
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of torch on a GPU machine")
    from u2edge.native import load

    if load() is None:
        pytest.skip("the native part is not built (pip install -e . with nvcc)")
    frames = [photos[n] for n in PHOTOS]
    frames += [cv2.resize(photos["astronaut.png"], (1920, 1080)), photos["chelsea.png"][:200, :250]]
    with U2EdgeEngine(official_checkpoint, device="cuda", half=False) as gpu, \
            U2EdgeEngine(official_checkpoint, device="cuda") as half, \
            U2EdgeEngine(official_checkpoint, device="cuda", half=False, gpu_frames=False) as cpu:
        assert gpu.backend.gpu_frames and "GPU pre/post-processing" in gpu.describe()
        assert not cpu.backend.gpu_frames
        references = cpu.batch(frames)
        # one batch of mixed sizes; FP32 and FP16 (the kernel writes the FP16 input itself)
        for i, (a, h, b) in enumerate(zip(gpu.batch(frames), half.batch(frames), references)):
            assert a.shape == h.shape == b.shape == frames[i].shape[:2]
            assert np.abs(a - b).mean() < 1e-3 and np.abs(a - b).max() < 0.05, i
            assert iou(h, b) > 0.98 and np.abs(h - b).mean() < 0.01, i
        with pytest.raises(ImageError, match="expected an HxWx3 uint8 frame"):
            gpu(frames[0].astype(np.float32))


def test_one_engine_shared_by_threads_gives_each_its_own_masks(official_onnx, photos, engine):
    """OpenVINO (where installed) runs one infer request: without the engine's lock, threads would
    read each other's outputs."""
    from concurrent.futures import ThreadPoolExecutor

    frames = [photos[n] for n in PHOTOS] * 3
    with U2EdgeEngine(official_onnx) as shared, ThreadPoolExecutor(4) as pool:
        masks = list(pool.map(shared, frames))
    for frame, mask in zip(frames, masks):
        assert np.abs(mask - engine(frame)).max() < 1e-3
