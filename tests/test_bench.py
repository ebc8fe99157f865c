"""``u2edge bench`` through the CLI on real photos: every configuration this machine has, the peers
in the same run, accuracy against the FP32 reference, the JSON, the table and the plot. Speed is
reported, never asserted."""

from __future__ import annotations

import json

import cv2
import pytest

from conftest import run_cli
from u2edge.bench.report import table
from u2edge.bench.run import BenchOptions, configurations, rembg_python

pytest.importorskip("openvino", reason="the bench's CPU fast-path rows need OpenVINO: pip install -e '.[cpu]'")


def test_bench_u2edge_rows_json_table_and_plot(cpu_int8, photo_paths, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--no-peers", "--repeats", "1", "--images", *photo_paths[:2], "--int8-model",
                   cpu_int8.path, "--batch", "1,2", "--json-out", out, "--plot", tmp_path / "bench.png")
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["u2edge onnxruntime fp32", "u2edge openvino fp32", "u2edge openvino int8"]
    assert result["reference"] == "u2edge onnxruntime fp32" and result["images"] == [p.name for p in photo_paths[:2]]
    ref, fp32, int8 = rows.values()
    assert ref["accuracy"]["min_iou"] == 1.0 and ref["accuracy"]["mean_mae"] == 0.0
    assert fp32["accuracy"]["min_iou"] > 0.995 and int8["accuracy"]["min_iou"] > 0.96
    assert int8["model_mb"] < fp32["model_mb"] / 2  # INT8 weights
    for row in rows.values():
        assert len(row["accuracy"]["per_image"]) == 2
        inf, e2e = row["inference"], row["end_to_end"]
        assert 0 < inf["p50_ms"] <= inf["p90_ms"] <= inf["p99_ms"] and e2e["images_per_s"] > 0
        assert row["peak_rss_mb"] > 50 and row["vs"] == {}
    # the official ONNX and the INT8 model have a fixed batch of 1, so batch 2 cannot run; the table says so
    assert all(row["batches"] == {} and row["fixed_batch"] == 1 for row in rows.values())
    assert proc.stdout.count("(its model has a fixed batch of 1: no other batch size runs)") == 3
    assert all(name in proc.stdout for name in rows) and "min IoU" in proc.stdout
    plot = cv2.imread(str(tmp_path / "bench.png"))
    assert plot is not None and plot.shape[1] > 600


def test_bench_peers_in_the_same_run(cpu_int8, photo_paths, tmp_path):
    if not rembg_python().exists():
        pytest.skip(f"no rembg environment at {rembg_python()}: run benchmarks/setup_rembg.sh")
    pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install torch==2.13.0")
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--repeats", "1", "--images", *photo_paths[:2], "--int8-model", cpu_int8.path,
                   "--json-out", out)
    rows = {row["kind"] if row["peer"] else row["name"]: row for row in json.loads(out.read_text())["rows"]}
    assert {"rembg", "torch"} <= set(rows)
    for kind in ("rembg", "torch"):
        # the same weights through another pipeline (rembg: LANCZOS, the official script: bilinear)
        assert rows[kind]["accuracy"]["mean_mae"] < 0.026 and rows[kind]["accuracy"]["min_iou"] > 0.9
        assert rows[kind]["vs"][kind] == 1.0
    assert rows["rembg"]["describe"].startswith("rembg ")
    int8 = rows["u2edge openvino int8"]["vs"]
    assert set(int8) == {"rembg", "torch"} and all(v > 0 for v in int8.values())
    assert "vs rembg" in proc.stdout and "vs torch" in proc.stdout


def test_bench_bad_input(tmp_path):
    proc = run_cli("bench", "--batch", "0,2", check_rc=1)
    assert proc.stderr.strip().splitlines() == ["u2edge: error: --batch '0,2': sizes must be at least 1"]
    proc = run_cli("bench", "--images", tmp_path / "missing.png", check_rc=1)
    assert len(proc.stderr.strip().splitlines()) == 1 and "missing.png" in proc.stderr
    proc = run_cli("bench", "--int8-model", tmp_path / "none.onnx", check_rc=1)
    assert proc.stderr.strip().splitlines() == [f"u2edge: error: --int8-model {tmp_path / 'none.onnx'}: no such file"]


def test_bench_says_what_it_could_not_measure(cpu_int8, photo_paths, tmp_path):
    nowhere = tmp_path / "nowhere" / "python"
    opts = BenchOptions(images=photo_paths[:1], int8_model=cpu_int8.path, rembg_python=nowhere)
    names = [c.name for c in configurations(opts)]
    assert names[:3] == ["u2edge onnxruntime fp32", "u2edge openvino fp32", "u2edge openvino int8"]
    assert "rembg u2netp (same weights)" not in names
    assert opts.skipped[-1] == (f"rembg: no rembg environment at {nowhere}; run benchmarks/setup_rembg.sh "
                                "(or give --rembg-python)")
    import torch

    if not torch.cuda.is_available():
        assert "GPU rows (PyTorch CUDA fp16 + CUDA graphs, eager fp32): no CUDA device" in opts.skipped
    result = {"u2edge": "x", "date": "d", "machine": {"cpu": "c", "cores": 2, "gpus": []}, "images": ["a.png"],
              "repeats": 1, "reference": "r", "rows": [], "skipped": opts.skipped}
    assert f"not measured: rembg: no rembg environment at {nowhere}" in table(result)
