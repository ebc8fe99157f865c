"""The TensorRT backend with real TensorRT-RTX plans: what can be checked without a GPU (the sidecar
checks, the rebuild command, no CUDA device) runs everywhere; running a plan needs a GPU and skips."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import PHOTOS, run_cli
from u2edge import U2EdgeEngine
from u2edge.cuda import NoCudaDevice
from u2edge.errors import IncompatibleEngineError, MissingDependencyError
from u2edge.compatibility import check_device, rebuild_command
from u2edge.sidecar import Sidecar

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds plans without a GPU: pip install -e '.[rtx]'")
pytest.importorskip("onnx", reason="building needs the export extra: pip install -e '.[export]'")
pytestmark = pytest.mark.trt


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    from u2edge.export.build import BuildOptions, build_engine
    from u2edge.precision import Precision

    out = tmp_path_factory.mktemp("plans") / "u2netp.engine"
    return build_engine(BuildOptions(output=out, precision=Precision.FP32, tensorrt="tensorrt_rtx",
                                     targets=["sm86", "sm89"], dynamic_batch=(1, 2, 4))).path


def copy_plan(plan, tmp_path, edit=None):
    target = tmp_path / plan.name
    target.write_bytes(plan.read_bytes())
    side = Sidecar.read(plan).to_dict()
    if edit:
        edit(side)
    Sidecar.path_for(target).write_text(json.dumps(side))
    return target


def test_rebuild_command_comes_from_the_sidecar(plan):
    assert rebuild_command(plan, Sidecar.read(plan)) == \
        f"u2edge build --precision fp32 --dynamic-batch 1:2:4 -o {plan} --force"
    side = Sidecar(precision="int8", build_options={"precision": "int8", "arch": "u2net", "calib_dir": "my shots",
                                                    "imgsz": 288, "batch": 2, "dla_core": 0, "gpu_fallback": True})
    assert rebuild_command("m.engine", side) == ("u2edge build --precision int8 --model u2net --calib-dir 'my shots' "
                                                 "--dla-core 0 --imgsz 288 --batch 2 --gpu-fallback -o m.engine "
                                                 "--force")


def test_a_truncated_plan_is_refused_before_cuda(plan, tmp_path):
    target = copy_plan(plan, tmp_path)
    data = target.read_bytes()
    target.write_bytes(data[:-1000])
    with pytest.raises(IncompatibleEngineError, match=rf"is truncated or was replaced: {len(data) - 1000} bytes where "
                                                      rf"its sidecar says {len(data)}; rebuild it here: u2edge build"):
        U2EdgeEngine(target)
    target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(IncompatibleEngineError, match="does not match its sidecar"):
        U2EdgeEngine(target)


def test_a_plan_from_another_tensorrt_is_refused(plan, tmp_path):
    target = copy_plan(plan, tmp_path, lambda side: side["tensorrt"].update(version="1.0.0.1"))
    with pytest.raises(IncompatibleEngineError, match=r"was built with tensorrt_rtx 1\.0\.0\.1 and this machine has "
                                                      r"tensorrt_rtx 1\.\d.*rebuild it here: u2edge build "
                                                      r"--precision fp32"):
        U2EdgeEngine(target)


@pytest.mark.parametrize("corrupt, why", [
    ("{not json", "not JSON: Expecting property name"),
    ("[]", "a JSON array, not an object"),
    (json.dumps({"format": "u2edge-engine-sidecar/1", "tensorrt": "tensorrt_rtx 1.7"}),
     "tensorrt is a JSON string, not object"),
])
def test_a_corrupt_sidecar_is_refused_before_cuda(plan, tmp_path, photo_paths, corrupt, why):
    target = copy_plan(plan, tmp_path)
    Sidecar.path_for(target).write_text(corrupt)
    with pytest.raises(IncompatibleEngineError) as info:
        U2EdgeEngine(target)  # no CUDA here: this is refused before CUDA is needed
    assert str(info.value).startswith(f"the sidecar {target}.json is corrupt ({why}")
    assert f"rebuild it (u2edge build ... -o {target} --force), or delete {target}.json" in str(info.value)
    out = tmp_path / "out"
    proc = run_cli("image", photo_paths[0], "-o", out, "--engine", target, check_rc=1)
    assert proc.stderr.strip().splitlines() == [f"u2edge: error: {info.value}"]
    assert not out.exists() or list(out.iterdir()) == []


def test_a_plan_for_another_gpu_is_refused():
    side = Sidecar(tensorrt={"flavour": "tensorrt", "version": "10.3.0"},
                   device={"gpu": "Orin", "compute_capability": "8.7"}, build_options={"precision": "fp16"})
    check_device("m.engine", side, {"gpu": "Orin", "compute_capability": "8.7"})
    with pytest.raises(IncompatibleEngineError, match="was built for Orin and this GPU is NVIDIA H100 80GB HBM3; "
                                                      "plans do not move between GPUs"):
        check_device("m.engine", side, {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    rtx = dataclasses.replace(side, tensorrt={"flavour": "tensorrt_rtx", "version": "1.7"}, targets=["sm86", "sm89"])
    check_device("m.engine", rtx, {"gpu": "RTX 4090", "compute_capability": "8.9"})
    with pytest.raises(IncompatibleEngineError, match="was built for sm86, sm89 and this GPU .* is sm90"):
        check_device("m.engine", rtx, {"gpu": "H100", "compute_capability": "9.0"})


def test_without_a_gpu_the_plan_says_so_in_one_line(plan, photo_paths, tmp_path):
    from u2edge import cuda

    try:
        cuda.load()
    except (NoCudaDevice, MissingDependencyError) as exc:
        expected = str(exc)
    else:
        pytest.skip("a CUDA device is here: the GPU tests run instead")
    with pytest.raises((NoCudaDevice, MissingDependencyError)):
        U2EdgeEngine(plan)
    proc = run_cli("image", photo_paths[0], "-o", tmp_path, "--engine", plan, check_rc=1)
    assert proc.stderr.strip().splitlines() == [f"u2edge: error: {expected}"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu
def test_plan_on_a_gpu_matches_onnxruntime(plan, engine, photos):
    from u2edge import cuda

    try:
        cuda.load()
    except (NoCudaDevice, MissingDependencyError) as exc:
        pytest.skip(f"running a plan needs a CUDA GPU: {exc}")
    with U2EdgeEngine(plan) as gpu:
        assert gpu.max_batch == 4
        masks = gpu.batch([photos[n] for n in PHOTOS])  # batches of 4 and 1, then CUDA graphs
        again = gpu.batch([photos[n] for n in PHOTOS])
        for name, mask, repeat in zip(PHOTOS, masks, again):
            assert np.abs(mask - engine(photos[name])).max() < 1e-2, name
            assert np.array_equal(mask, repeat)
        tickets = [gpu.backend.submit(np.zeros((1, 3, 320, 320), np.float32)) for _ in range(2)]
        assert [gpu.backend.collect(t).shape for t in tickets] == [(1, 320, 320)] * 2
        if gpu.backend.gpu_frames:  # the native part is built: frames went through its kernels above
            with U2EdgeEngine(plan, gpu_frames=False) as cpu_frames:
                for name, mask, reference in zip(PHOTOS, masks, cpu_frames.batch([photos[n] for n in PHOTOS])):
                    assert np.abs(mask - reference).mean() < 1e-3 and np.abs(mask - reference).max() < 0.05, name
            frames = [photos[n] for n in PHOTOS[:2]]
            tickets = [gpu.backend.submit_frames([frame]) for frame in frames]  # two in flight
            assert [m[0].shape for m in map(gpu.backend.collect, tickets)] == [f.shape[:2] for f in frames]
