"""The CPU fast path: the precision chosen per CPU feature set, the gate for every automatic
choice on photos that never calibrated, the shipped quantization files against the script that
makes them, and the cache's integrity paths."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from conftest import run_cli
from u2edge import U2EdgeEngine
from u2edge.cpu import CpuFeatures, choose_precision, cpu_features, int8_model, int8_params, params_path
from u2edge.errors import U2EdgeError
from u2edge.export.cpu_int8 import CALIBRATION_PHOTOS, HELD_OUT_PHOTOS, make_params
from u2edge.export.precision import Gate
from u2edge.images import read_image
from u2edge.metrics import agreement
from u2edge.precision import Precision
from u2edge.weights import WEIGHTS

pytest.importorskip("openvino", reason="the CPU fast path runs on OpenVINO: pip install openvino")

AMX = CpuFeatures("Intel Xeon (AMX)", 2, frozenset({"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}))
VNNI = CpuFeatures("AMD EPYC (VNNI)", 2, frozenset({"avx512_vnni", "avx512_bf16"}))
AVX2 = CpuFeatures("an AVX2 CPU", 2, frozenset({"avx2", "fma"}))
MODELS = [pytest.param("u2netp"), pytest.param("u2net", marks=pytest.mark.slow)]


@pytest.mark.parametrize("features", [AMX, VNNI, AVX2], ids=["amx", "vnni", "avx2"])
@pytest.mark.parametrize("model", sorted(WEIGHTS))
def test_auto_chooses_per_cpu_feature_set(model, features):
    """INT8 on VNNI and AMX where the shipped INT8 model passed the gate, else FP32; the reason
    carries the accuracy measured when the file was made."""
    measured = int8_params(model)["measured"]
    choice = choose_precision(model, "auto", openvino=True, features=features)
    int8 = bool(features.int8) and measured["passed"]
    assert choice.precision is (Precision.INT8 if int8 else Precision.FP32)
    reason = (f"auto: INT8 on {', '.join(features.int8)}, min mask IoU {measured['min_iou']:.3f}" if int8 else
              "auto: INT8 misses the accuracy gate" if features.int8 else
              f"auto: this CPU ({features.name}) has no VNNI or AMX")
    assert choice.reason.startswith(reason), choice.reason


def test_without_openvino_auto_is_fp32_and_says_why():
    choice = choose_precision("u2netp", "auto", openvino=False, features=AMX)
    assert choice.precision is Precision.FP32 and "OpenVINO is not installed" in choice.reason


def test_int8_without_vnni_or_amx_says_what_ran_instead(caplog):
    with caplog.at_level(logging.WARNING, logger="u2edge"):
        choice = choose_precision("u2netp", "int8", openvino=True, features=AVX2)
    assert choice.precision is Precision.FP32
    assert "--precision int8: this CPU (an AVX2 CPU) has no VNNI or AMX" in caplog.text
    assert "running fp32 instead" in caplog.text


def test_bf16_runs_only_where_native():
    assert choose_precision("u2netp", "bf16", openvino=True, features=AMX).precision is Precision.BF16
    with pytest.raises(U2EdgeError, match=r"bf16 cannot run here: this CPU \(an AVX2 CPU\) has no native BF16"):
        choose_precision("u2netp", "bf16", openvino=True, features=AVX2)
    with pytest.raises(U2EdgeError, match="OpenVINO is not installed"):
        choose_precision("u2netp", "bf16", openvino=False, features=AMX)


def test_unknown_names_and_precisions_are_one_line():
    with pytest.raises(U2EdgeError, match="unknown model 'u2nett'; known models: u2net, u2netp"):
        U2EdgeEngine(model="u2nett")
    with pytest.raises(U2EdgeError, match="precision 'fp16' is not one of auto, fp32, bf16, int8"):
        U2EdgeEngine(precision="fp16")
    proc = run_cli("image", "x.png", "-o", "out", "--model", "u2nett", check_rc=2)
    assert "invalid choice: 'u2nett'" in proc.stderr


def test_this_cpu_is_read():
    features = cpu_features()
    assert features.name and features.cores >= 1
    assert set(features.int8) <= {"AVX-512 VNNI", "AVX-VNNI", "AMX-INT8"}


@pytest.fixture(scope="module")
def held_out(photo_dir) -> dict[str, np.ndarray]:
    """Photos with a subject that never calibrated the shipped files."""
    assert not set(HELD_OUT_PHOTOS) & set(CALIBRATION_PHOTOS)
    return {name: read_image(photo_dir / name) for name in HELD_OUT_PHOTOS}


@pytest.mark.parametrize("model", MODELS)
def test_auto_passes_the_gate_on_photos_that_never_calibrated(model, held_out):
    """Whatever auto picks on this CPU (INT8 on VNNI/AMX, else FP32) agrees with FP32."""
    with U2EdgeEngine(model=model, precision="fp32") as reference, U2EdgeEngine(model=model) as auto:
        assert auto.choice.precision is choose_precision(model).precision
        assert auto.choice.reason in auto.describe()
        scores = {name: agreement(auto(frame), reference(frame)) for name, frame in held_out.items()}
    ious = [s["iou"] for s in scores.values() if s["subject"]]
    mae = float(np.mean([s["mae"] for s in scores.values()]))
    gate = Gate()
    assert len(ious) == len(HELD_OUT_PHOTOS)
    assert min(ious) >= gate.min_iou and mae <= gate.max_mae, \
        f"{model} auto ({auto.choice.precision.value}) on {cpu_features().name}: min IoU {min(ious):.4f}, MAE {mae:.4f}"


@pytest.mark.parametrize("model", MODELS)
def test_shipped_quantization_file_is_what_the_script_makes(model, photo_dir):
    """The ranges, the float layers and the scheme are reproduced here from the photos; the float
    layers the search chose are taken from the file (the search itself runs minutes), and the model
    they make passes the gate on this CPU wherever auto would run it."""
    shipped = int8_params(model)
    made = make_params(model, photos=photo_dir, keep_float=shipped["keep_float"])
    assert made["ranges"].keys() == shipped["ranges"].keys()
    for layer, value in shipped["ranges"].items():
        assert made["ranges"][layer] == pytest.approx(value, rel=1e-3), layer
    for key in set(shipped) - {"ranges", "measured"}:
        assert made[key] == shipped[key], key
    # auto runs INT8 on VNNI exactly where the model passed the gate when the file was made, and an
    # INT8 model that auto runs passes on the held-out photos here too
    auto_int8 = choose_precision(model, "auto", openvino=True, features=VNNI).precision is Precision.INT8
    assert auto_int8 is shipped["measured"]["passed"]
    gate, held_out = Gate(), made["measured"]
    passes = held_out["min_iou"] >= gate.min_iou and held_out["mean_mae"] <= gate.max_mae
    assert passes or not auto_int8, f"{model} INT8 on {cpu_features().name}: {held_out}"


@pytest.fixture
def private_cache(tmp_path, monkeypatch, official_onnx):
    """An empty user cache holding only the official U2-NetP."""
    monkeypatch.setenv("U2EDGE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    shutil.copy(official_onnx, tmp_path / "cache" / "u2netp.onnx")
    return tmp_path / "cache"


def test_the_int8_model_is_made_once_and_a_broken_one_is_made_again(private_cache, caplog):
    path = int8_model("u2netp")
    assert path.parent == private_cache / "cpu"
    first = path.read_bytes()
    assert int8_model("u2netp") == path and path.read_bytes() == first  # cached by identity
    path.write_bytes(first[: len(first) // 2])  # a truncated cache file
    with caplog.at_level(logging.WARNING, logger="u2edge"):
        assert int8_model("u2netp") == path
    assert "does not match its sidecar; making it again" in caplog.text
    assert path.read_bytes() == first


def test_a_quantization_file_for_another_onnx_is_refused(tmp_path):
    params = json.loads(params_path("u2netp").read_text())
    params["onnx_sha256"] = "0" * 64
    bad = tmp_path / "int8_u2netp.json"
    bad.write_text(json.dumps(params))
    with pytest.raises(U2EdgeError, match=r"was made for another u2netp ONNX \(sha256 0{64}\), not the official"):
        int8_model("u2netp", params=bad)
    bad.write_text("{not json")
    with pytest.raises(U2EdgeError, match="is unreadable"):
        int8_params("u2netp", bad)


@pytest.mark.skipif(not cpu_features().bf16, reason="this CPU has no native BF16 (AVX512-BF16 or AMX-BF16)")
def test_bf16_runs_where_the_cpu_has_it(photos):
    frame = photos["chelsea.png"]
    with U2EdgeEngine(precision="bf16") as engine:
        assert engine.choice.precision is Precision.BF16 and "BF16" in engine.describe()
        assert engine(frame).shape == frame.shape[:2]


def test_bf16_without_native_bf16_says_why():
    with pytest.raises(U2EdgeError, match=r"this CPU \(an AVX2 CPU\) has no native BF16"):
        choose_precision("u2netp", "bf16", openvino=True, features=AVX2)


def test_a_model_file_runs_at_its_own_precision(official_onnx):
    with pytest.raises(U2EdgeError, match="runs at the precision it was built with"):
        U2EdgeEngine(official_onnx, precision="int8")
    with pytest.raises(U2EdgeError, match="a model file or a model name, not both"):
        U2EdgeEngine(official_onnx, model="u2net")


def test_asking_for_u2net_offline_is_one_line(tmp_path, photo_paths):
    env = {"U2EDGE_CACHE": str(tmp_path / "empty"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "", "PIP_RETRIES": "0"}
    proc = run_cli("image", photo_paths[0], "-o", tmp_path / "out", "--model", "u2net", env=env, check_rc=1)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("u2edge: error:")]
    assert len(errors) == 1 and "cannot download the official u2net weights" in errors[0]
    assert "--python-version 3.10" in errors[0] and str(tmp_path / "empty" / "u2net.onnx") in errors[0]
