"""The CPU fast path: the OpenVINO backend, and the CPU INT8 model ``u2edge build -o NAME.onnx`` makes,
on real photos against the FP32 reference (the official ONNX on ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PHOTOS, run_cli
from u2edge import U2EdgeEngine
from u2edge.backends import choose
from u2edge.errors import ModelFormatError, U2EdgeError
from u2edge.metrics import agreement

pytest.importorskip("openvino", reason="the CPU fast path needs OpenVINO: pip install openvino")


def test_openvino_runs_dot_onnx_by_default_and_onnxruntime_on_request(official_onnx):
    assert choose(official_onnx) == "openvino"
    assert choose(official_onnx, "onnxruntime") == "onnxruntime"
    assert choose(official_onnx, "torch") == "torch"  # PyTorch imports an ONNX's weights
    with pytest.raises(ModelFormatError, match="backend 'tensorrt' cannot run .onnx files; use one of openvino, "
                                               "onnxruntime, torch"):
        choose(official_onnx, "tensorrt")


def test_openvino_fp32_gives_onnxruntime_masks(official_onnx, engine, photos):
    with U2EdgeEngine(official_onnx, backend="openvino") as fast:
        assert fast.describe().startswith("openvino ") and "fp32" in fast.describe()
        assert fast.preprocessing == engine.preprocessing
        for name in PHOTOS:
            assert np.abs(fast(photos[name]) - engine(photos[name])).max() < 2e-3, name


def test_cpu_int8_model(cpu_int8):
    import onnx
    from onnx import numpy_helper

    side = cpu_int8.sidecar
    assert side.tensorrt is None and side.precision == "int8"
    assert side.accuracy["held_out"] == ["00_astronaut.png", "04_chelsea.png", "08_coffee.png", "12_rocket.jpg",
                                            "16_motorcycle_left.png"]
    assert side.accuracy["measured"]["min_iou"] >= 0.97
    model = onnx.load(str(cpu_int8.path))
    assert {p.key: p.value for p in model.metadata_props}["u2edge.precision"] == "int8"
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zeros = {n.input[0]: inits[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"}
    # every quantized activation follows a ReLU, so it is unsigned; the first conv, fed by the
    # signed image, stays float
    assert len(zeros) > 100 and all(dtype == np.uint8 for dtype in zeros.values())
    assert model.graph.input[0].name not in zeros
    assert side.accuracy["int8"]["kept_float"][0] == "stage1.rebnconvin"


def test_cpu_int8_on_openvino_holds_the_gate_on_held_out_photos(cpu_int8, engine, photos):
    with U2EdgeEngine(cpu_int8.path) as fast, U2EdgeEngine(cpu_int8.path, backend="onnxruntime") as simulated:
        assert fast.backend.name == "openvino" and "int8" in fast.describe()
        scores = {name: agreement(fast(photos[name]), engine(photos[name])) for name in PHOTOS}
        # ONNX Runtime runs the same Q/DQ graph as a float simulation; the gate was measured with it
        sim = {name: agreement(simulated(photos[name]), engine(photos[name])) for name in PHOTOS}
    assert min(s["iou"] for s in scores.values()) >= 0.96, scores  # real INT8 kernels, 0.01 below the gate
    assert np.mean([s["mae"] for s in scores.values()]) <= 0.01, scores
    assert min(s["iou"] for s in sim.values()) >= 0.97, sim


def test_cpu_model_refuses_tensorrt_options(tmp_path):
    from u2edge.export.build import BuildOptions, build_engine
    from u2edge.precision import Precision

    with pytest.raises(U2EdgeError, match=r"^workspace, targets only apply to TensorRT engines.*\.onnx CPU model"):
        build_engine(BuildOptions(output=tmp_path / "m.onnx", precision=Precision.FP32, workspace=1.0,
                                  targets=["sm86"]))
    with pytest.raises(U2EdgeError, match="a .onnx CPU model, which is int8 or fp32"):
        build_engine(BuildOptions(output=tmp_path / "m.onnx", precision=Precision.FP16))
    assert not list(tmp_path.iterdir())


def test_cli_reuses_the_cpu_model_and_runs_it(cpu_int8, calib_dir, photo_paths, tmp_path):
    proc = run_cli("build", "--precision", "int8", "--calib-dir", calib_dir, "-o", cpu_int8.path)
    assert "reused, identical identity" in proc.stdout and "for                CPU" in proc.stdout
    proc = run_cli("image", photo_paths[0], "--engine", cpu_int8.path, "-o", tmp_path, "-v")
    assert "openvino" in proc.stderr and (tmp_path / f"{photo_paths[0].stem}.png").is_file()


def test_info_names_the_fast_path_and_what_auto_chose():
    from u2edge.cpu import choose_precision, cpu_features

    out = run_cli("info").stdout
    assert ".onnx -> openvino" in out
    units = cpu_features().int8
    assert (f"cpu fast path   on: OpenVINO INT8 on {', '.join(units)}" if units else
            "cpu fast path   OpenVINO, but this CPU has no VNNI/AMX: INT8 gains little") in out
    for model in ("u2netp", "u2net"):
        choice = choose_precision(model)
        assert f"{model} auto".ljust(14) + f"  {choice.reason}" in out


def test_openvino_refuses_a_corrupt_or_foreign_model(tmp_path, official_onnx):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(official_onnx.read_bytes()[:5000])
    with pytest.raises(ModelFormatError, match=r"cannot load .*corrupt.onnx with OpenVINO .*corrupt or not an ONNX"):
        U2EdgeEngine(corrupt, backend="openvino")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(tmp_path / "relu.onnx"))
    with pytest.raises(ModelFormatError, match=r"relu.onnx is not a U-2-Net graph: inputs \[\('x', \[1, 4\]\)\]"):
        U2EdgeEngine(tmp_path / "relu.onnx", backend="openvino")
