"""``u2edge bench`` through the CLI on real photos: each model's rows (its FP32 reference, OpenVINO,
the default ``auto``), the peers in the same run, accuracy against the model's own reference, the
JSON, the table and the plot. Speed is reported, never asserted."""

from __future__ import annotations

import json
import sys

import cv2
import pytest

from conftest import run_cli
from u2edge.bench.report import table
from u2edge.bench.run import BenchOptions, add_ratios, configurations, rembg_python, score
from u2edge.cpu import CpuFeatures, choose_precision

pytest.importorskip("openvino", reason="the bench's CPU fast-path rows need OpenVINO: pip install -e '.[cpu]'")

VNNI = CpuFeatures("AMD EPYC (VNNI)", 2, frozenset({"avx512_vnni", "avx512_bf16"}))
AVX2 = CpuFeatures("an AVX2 CPU", 2, frozenset({"avx2", "fma"}))
REFERENCE_ROWS = ["u2edge u2netp onnxruntime fp32", "u2edge u2netp openvino fp32"]


@pytest.fixture(scope="module")
def own_int8(tmp_path_factory):
    """A user's CPU INT8 model of u2netp, as --int8-model takes it, with a dynamic batch: the one auto
    makes (seconds), its batch loosened by a graph edit (its metadata names the model)."""
    import onnx

    from u2edge.cpu import int8_model
    from u2edge.onnxgraph import set_image_shape

    proto = onnx.load(str(int8_model("u2netp")))
    set_image_shape(proto.graph, "batch", 320)
    path = tmp_path_factory.mktemp("int8") / "u2netp_int8_dynamic.onnx"
    onnx.save(proto, str(path))
    return path


def auto_row(model: str) -> str:
    """The name of the default row: what auto picks on this CPU."""
    return f"u2edge {model} auto ({choose_precision(model).precision.value})"


def test_bench_u2netp_rows_json_table_and_plot(own_int8, photo_paths, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--model", "u2netp", "--no-peers", "--repeats", "1", "--images", *photo_paths[:2],
                   "--int8-model", own_int8, "--batch", "1,2", "--json-out", out, "--plot", tmp_path / "bench.png")
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["u2edge u2netp onnxruntime fp32", "u2edge u2netp openvino fp32", auto_row("u2netp"),
                          f"u2edge u2netp openvino int8 ({own_int8.name})"]
    assert result["models"] == ["u2netp"] and result["reference"] == {"u2netp": "u2edge u2netp onnxruntime fp32"}
    assert result["images"] == [p.name for p in photo_paths[:2]]
    ref, fp32, auto, int8 = rows.values()
    assert ref["accuracy"]["min_iou"] == 1.0 and ref["accuracy"]["mean_mae"] == 0.0
    assert fp32["accuracy"]["min_iou"] > 0.995 and int8["accuracy"]["min_iou"] > 0.96
    assert auto["accuracy"]["min_iou"] > 0.96 and auto["precision"] == choose_precision("u2netp").precision.value
    assert auto["describe"].startswith(f"u2netp {auto['precision']} (auto: ")  # what auto picked, and why
    assert int8["model_mb"] < fp32["model_mb"] / 2  # INT8 weights
    assert (auto["model_mb"] < fp32["model_mb"] / 2) is (auto["precision"] == "int8")
    for row in rows.values():
        assert row["model"] == "u2netp" and len(row["accuracy"]["per_image"]) == 2
        inf, e2e = row["inference"], row["end_to_end"]
        assert 0 < inf["p50_ms"] <= inf["p90_ms"] <= inf["p99_ms"] and e2e["images_per_s"] > 0
        assert row["peak_rss_mb"] > 50 and row["vs"] == {}
    # the official ONNX and the INT8 model auto makes have a fixed batch of 1, so batch 2 cannot run on
    # them (the table says so); a model from u2edge build has a dynamic batch
    assert ref["fixed_batch"] == fp32["fixed_batch"] == auto["fixed_batch"] == 1 and int8["fixed_batch"] is None
    fixed = [row for row in rows.values() if row["fixed_batch"] == 1]
    assert all(row["batches"] == {} for row in fixed)
    assert all(list(row["batches"]) == ["2"] for row in rows.values() if row not in fixed)
    assert proc.stdout.count("(its model has a fixed batch of 1: no other batch size runs)") == len(fixed)
    assert "u2netp: accuracy against u2edge u2netp onnxruntime fp32" in proc.stdout
    assert all(name in proc.stdout for name in rows) and "min IoU" in proc.stdout
    plot = cv2.imread(str(tmp_path / "bench.png"))
    assert plot is not None and plot.shape[1] > 600


@pytest.mark.slow
def test_bench_u2net_rows(photo_paths, tmp_path):
    """U2-Net on one photo: its own reference, and the default row scored against it."""
    out = tmp_path / "bench.json"
    run_cli("bench", "--model", "u2net", "--no-peers", "--repeats", "1", "--images", photo_paths[0], "--json-out", out)
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["u2edge u2net onnxruntime fp32", "u2edge u2net openvino fp32", auto_row("u2net")]
    assert result["reference"] == {"u2net": "u2edge u2net onnxruntime fp32"}
    ref, fp32, auto = rows.values()
    assert ref["model_mb"] > 170 and ref["accuracy"]["mean_mae"] == 0.0
    assert fp32["accuracy"]["min_iou"] > 0.995 and auto["accuracy"]["min_iou"] > 0.96
    assert "PyTorch eager u2net: not run" not in " ".join(result["skipped"])  # --no-peers: no peer is skipped


def test_bench_peers_in_the_same_run(photo_paths, tmp_path):
    if not rembg_python().exists():
        pytest.skip(f"no rembg environment at {rembg_python()}: run benchmarks/setup_rembg.sh")
    pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install torch==2.13.0")
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--model", "u2netp", "--repeats", "1", "--images", *photo_paths[:2], "--json-out", out)
    rows = {row["kind"] if row["peer"] else row["name"]: row for row in json.loads(out.read_text())["rows"]}
    assert {"rembg", "torch"} <= set(rows)
    for kind in ("rembg", "torch"):
        # the same weights through another pipeline (rembg: LANCZOS, the official script: bilinear)
        assert rows[kind]["accuracy"]["mean_mae"] < 0.026 and rows[kind]["accuracy"]["min_iou"] > 0.9
        assert rows[kind]["vs"][kind] == 1.0 and rows[kind]["model"] == "u2netp"
    assert rows["rembg"]["describe"].startswith("rembg ") and " u2netp " in rows["rembg"]["describe"]
    auto = rows[auto_row("u2netp")]["vs"]
    assert set(auto) == {"rembg", "torch"} and all(v > 0 for v in auto.values())
    assert "vs rembg" in proc.stdout and "vs torch" in proc.stdout


def test_bench_bad_input(tmp_path):
    proc = run_cli("bench", "--batch", "0,2", check_rc=1)
    assert proc.stderr.strip().splitlines() == ["u2edge: error: --batch '0,2': sizes must be at least 1"]
    proc = run_cli("bench", "--images", tmp_path / "missing.png", check_rc=1)
    assert len(proc.stderr.strip().splitlines()) == 1 and "missing.png" in proc.stderr
    proc = run_cli("bench", "--int8-model", tmp_path / "none.onnx", check_rc=1)
    assert proc.stderr.strip().splitlines() == [f"u2edge: error: --int8-model {tmp_path / 'none.onnx'}: no such file"]
    proc = run_cli("bench", "--model", "u2netp,u2netq", check_rc=1)
    assert proc.stderr.strip().splitlines() == ["u2edge: error: --model u2netp,u2netq: unknown model 'u2netq'; "
                                                "known models: u2netp, u2net"]


def test_bench_configurations_per_model(own_int8, photo_paths, tmp_path, monkeypatch):
    """Both models by default, each with its reference first; --int8-model beside its own model;
    what cannot run is named with the reason (here rembg's environment and torch are missing)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # torch cannot be imported
    nowhere = tmp_path / "nowhere" / "python"
    opts = BenchOptions(images=photo_paths[:1], int8_model=own_int8, rembg_python=nowhere)
    configs = configurations(opts)
    names = [c.name for c in configs]
    assert names[:4] == ["u2edge u2netp onnxruntime fp32", "u2edge u2netp openvino fp32", auto_row("u2netp"),
                         f"u2edge u2netp openvino int8 ({own_int8.name})"]
    u2net = [c.name for c in configs if c.model == "u2net"]
    assert u2net[:3] == ["u2edge u2net onnxruntime fp32", "u2edge u2net openvino fp32", auto_row("u2net")]
    assert not any(c.kind in ("rembg", "torch") for c in configs)
    for model in ("u2netp", "u2net"):
        assert (f"rembg {model}: no rembg environment at {nowhere}; run benchmarks/setup_rembg.sh "
                "(or give --rembg-python)") in opts.skipped
    assert "PyTorch eager u2netp: torch is not installed; pip install 'u2edge[export]'" in opts.skipped
    assert any(s.startswith("PyTorch eager u2net: not run; u2net in eager PyTorch takes seconds") for s in opts.skipped)
    # an INT8 model of u2netp is not measured when only u2net is
    opts = BenchOptions(images=photo_paths[:1], models=("u2net",), int8_model=own_int8, peers=False)
    assert [c.model for c in configurations(opts)] == ["u2net"] * 3
    assert opts.skipped[0] == (f"--int8-model {own_int8}: it is a u2netp model and u2netp is not measured; "
                               "add --model u2netp")


@pytest.mark.torch
def test_bench_torch_rows(photo_paths):
    """With torch: the official-style eager pipeline as a peer, and the CUDA rows where torch sees a GPU."""
    torch = pytest.importorskip("torch", reason="the PyTorch rows need torch: pip install torch==2.13.0")
    opts = BenchOptions(images=photo_paths[:1], models=("u2netp",))
    names = [c.name for c in configurations(opts)]
    assert "PyTorch eager u2netp fp32 (official pipeline)" in names
    gpu_rows = ["u2edge u2netp torch cuda fp32 eager", "u2edge u2netp torch cuda fp16 + CUDA graphs"]
    no_gpu = "GPU rows (PyTorch CUDA fp16 + CUDA graphs, eager fp32): no CUDA device"
    cuda = torch.cuda.is_available()
    assert [name for name in names if name in gpu_rows] == (gpu_rows if cuda else [])
    assert (no_gpu in opts.skipped) is not cuda


@pytest.mark.parametrize("features, rows, file_named", [
    pytest.param(VNNI, REFERENCE_ROWS, True, id="vnni"),
    pytest.param(AVX2, REFERENCE_ROWS + ["u2edge u2netp auto (fp32)"], False, id="avx2")])
def test_bench_auto_without_its_quantization_file(monkeypatch, photo_paths, tmp_path, features, rows, file_named):
    """A missing INT8 quantization file drops the auto row with the reason where auto needs it (a CPU
    with VNNI), and does not matter where auto runs FP32 (AVX2 only)."""
    monkeypatch.setattr("u2edge.cpu.DATA", tmp_path)
    monkeypatch.setattr("u2edge.cpu.cpu_features", lambda: features)
    opts = BenchOptions(images=photo_paths[:1], models=("u2netp",), peers=False)
    assert [c.name for c in configurations(opts)] == rows
    missing = (f"u2edge u2netp auto: the INT8 quantization file for u2netp is missing "
               f"({tmp_path / 'int8_u2netp.json'}); reinstall u2edge, or regenerate it: "
               "python -m u2edge.export.cpu_int8 --model u2netp")
    assert [s for s in opts.skipped if s.startswith("u2edge u2netp auto")] == ([missing] if file_named else [])


def _row(name, model, speed, *, kind="u2edge", peer=False, mask=1.0):
    import numpy as np

    timed = {"p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "images_per_s": speed, "spread": 0.0}
    return {"name": name, "model": model, "kind": kind, "peer": peer, "describe": name, "inference": timed,
            "end_to_end": timed, "batches": {}, "fixed_batch": 1, "peak_rss_mb": 100, "gpu_memory_mb": None,
            "model_mb": 1.0, "_masks": {"a.png": np.full((4, 4), mask, np.float32)}}


def test_bench_scores_and_ratios_within_each_model():
    rows = [_row("p ref", "u2netp", 4.0), _row("p auto", "u2netp", 8.0),
            _row("p rembg", "u2netp", 2.0, kind="rembg", peer=True),
            _row("n ref", "u2net", 1.0, mask=0.0), _row("n auto", "u2net", 3.0, mask=0.0),
            _row("n rembg", "u2net", 0.5, kind="rembg", peer=True, mask=0.0)]
    assert score(rows) == {"u2netp": "p ref", "u2net": "n ref"}
    # U2-Net's rows agree with U2-Net's reference (all background), not with U2-NetP's (all subject)
    assert all(row["accuracy"]["mean_mae"] == 0.0 and row["accuracy"]["min_iou"] == 1.0 for row in rows)
    add_ratios(rows)
    assert [row["vs"] for row in rows] == [{"rembg": 2.0}, {"rembg": 4.0}, {"rembg": 1.0},
                                           {"rembg": 2.0}, {"rembg": 6.0}, {"rembg": 1.0}]
    result = {"u2edge": "x", "date": "d", "machine": {"cpu": "c", "cores": 2, "gpus": []}, "images": ["a.png"],
              "repeats": 1, "batch_sizes": [1], "models": ["u2netp", "u2net"],
              "reference": {"u2netp": "p ref", "u2net": "n ref"}, "rows": rows, "skipped": ["rembg u2net: why"]}
    text = table(result)
    assert text.index("u2netp: accuracy against p ref") < text.index("p auto") < \
        text.index("u2net: accuracy against n ref") < text.index("n auto")
    assert "not measured: rembg u2net: why" in text
