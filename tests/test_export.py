"""ONNX export: graph edits of the official ONNX (no torch) and torch.onnx from a checkpoint."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import PHOTOS, official_input, run_cli
from u2edge.errors import U2EdgeError, WeightsError

onnx = pytest.importorskip("onnx", reason="export needs onnx: pip install -e '.[export]'")
ort = pytest.importorskip("onnxruntime")
from u2edge.export import export_onnx  # noqa: E402


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def official_d0(official_onnx, photos) -> dict[str, np.ndarray]:
    sess = session(official_onnx)
    return {n: sess.run(None, {"input.1": official_input(photos[n])})[0] for n in PHOTOS}


def test_graph_export_of_the_official_onnx(tmp_path, official_onnx, photos):
    result = export_onnx(tmp_path / "u2netp.onnx")
    assert result.via == "graph" and result.max_error == 0.0
    model = onnx.load(str(result.path))
    assert model.opset_import[0].version >= 17
    assert [o.name for o in model.graph.output] == ["mask"] and model.graph.input[0].name == "input"
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops
    assert sum(n.op_type == "Sigmoid" for n in model.graph.node) == 1  # side maps pruned
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["u2edge.imgsz"] == "320" and meta["u2edge.mean"] == "0.485,0.456,0.406"
    assert meta["u2edge.std"] == "0.229,0.224,0.225" and meta["u2edge.max_normalize"] == "1"
    assert meta["u2edge.channel_order"] == "RGB" and meta["u2edge.arch"] == "u2netp"
    want = official_d0(official_onnx, photos)
    sess = session(result.path)
    for name in PHOTOS:
        assert np.array_equal(sess.run(None, {"input": official_input(photos[name])})[0], want[name])


def test_graph_export_dynamic_batch_all_outputs_other_size(tmp_path):
    result = export_onnx(tmp_path / "dyn.onnx", batch=None, all_outputs=True, imgsz=288)
    assert result.max_error == 0.0
    sess = session(result.path)
    assert [o.name for o in sess.get_outputs()] == ["mask", "d1", "d2", "d3", "d4", "d5", "d6"]
    outs = sess.run(None, {"input": np.zeros((3, 3, 288, 288), np.float32)})
    assert all(o.shape == (3, 1, 288, 288) for o in outs)


def test_torch_export_golden_against_the_official_onnx(torch_export, official_onnx, photos):
    assert torch_export.via == "torch" and torch_export.max_error <= 1e-4
    want = official_d0(official_onnx, photos)
    sess = session(torch_export.path)
    batch = np.concatenate([official_input(photos[n]) for n in PHOTOS])
    got = sess.run(None, {"input": batch})[0]
    worst = max(float(np.abs(got[i] - want[n][0]).max()) for i, n in enumerate(PHOTOS))
    assert worst <= 1e-4, f"max abs error {worst:.2e}"
    model = onnx.load(str(torch_export.path))
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


@pytest.mark.slow
def test_cli_export_of_the_official_u2net_golden(tmp_path, official_u2net_onnx, photos):
    out = tmp_path / "u2net.onnx"
    proc = run_cli("export", "--model", "u2net", "-o", out)  # by name: the cached official ONNX
    assert f"wrote {out} (u2net, opset 17, batch 1" in proc.stdout and "via graph edits" in proc.stdout
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["mask"] and model.graph.input[0].name == "input"
    assert {p.key: p.value for p in model.metadata_props}["u2edge.arch"] == "u2net"
    want = official_d0(official_u2net_onnx, photos)  # both graphs have a fixed batch of 1
    sess = session(out)
    worst = max(float(np.abs(sess.run(None, {"input": official_input(photos[n])})[0] - want[n]).max())
                for n in PHOTOS)
    assert worst <= 1e-4, f"max abs error {worst:.2e}"


@pytest.mark.parametrize("imgsz", [0, 300, 330])
def test_imgsz_must_be_a_multiple_of_32(tmp_path, imgsz):
    with pytest.raises(U2EdgeError, match="multiple of 32"):
        export_onnx(tmp_path / "x.onnx", imgsz=imgsz)
    assert not (tmp_path / "x.onnx").exists()


def test_wrong_and_missing_weights(tmp_path, official_onnx):
    with pytest.raises(WeightsError, match="this is a U2NETP ONNX, you asked for u2net"):
        export_onnx(tmp_path / "x.onnx", arch="u2net", weights=official_onnx)
    with pytest.raises(WeightsError, match="unknown model 'u2nett'"):
        export_onnx(tmp_path / "x.onnx", arch="u2nett")
    with pytest.raises(U2EdgeError, match="refusing to overwrite the source"):
        export_onnx(official_onnx, weights=official_onnx)
    assert list(tmp_path.iterdir()) == []


def test_export_from_onnx_needs_no_torch(tmp_path):
    # an import hook that makes torch unimportable, as on a runtime-only install
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from u2edge.cli import main\n"
        f"rc = main(['export', '--dynamic-batch', '-o', {str(tmp_path / 'nt.onnx')!r}])\n"
        "assert rc == 0 and 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "max abs error" in proc.stdout
    assert (tmp_path / "nt.onnx").exists()


def test_export_from_pth_without_torch_says_how_to_install(tmp_path, official_checkpoint):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from u2edge.cli import main\n"
        f"sys.exit(main(['export', '--weights', {str(official_checkpoint)!r}, '-o', {str(tmp_path / 'x.onnx')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "pip install" in proc.stderr and "torch" in proc.stderr
