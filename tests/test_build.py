"""``u2edge build`` with TensorRT-RTX on a CPU-only machine: real plans from the real U2-NetP at
fp32, fp16 and int8, the accuracy gate on held-out photos, engine identity and the bad inputs."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import run_cli, small_disk

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds plans without a GPU: "
                                                 "pip install -e '.[rtx]'")
pytest.importorskip("onnx", reason="building needs the export extra: pip install -e '.[export]'")
from u2edge.errors import EngineBuildError, U2EdgeError  # noqa: E402
from u2edge.export.build import BuildOptions, build_engine, split_calibration  # noqa: E402
from u2edge.precision import Precision  # noqa: E402
from u2edge.sidecar import Sidecar  # noqa: E402

pytestmark = pytest.mark.trt
HELD_OUT = ["00_astronaut.png", "04_chelsea.png", "08_coffee.png", "12_rocket.jpg", "16_motorcycle_left.png"]


def build(tmp, precision, name=None, **kw):
    return build_engine(BuildOptions(output=tmp / (name or f"{precision}.engine"), precision=Precision(precision),
                                     tensorrt="tensorrt_rtx", **kw))


@pytest.fixture(scope="module")
def engines(tmp_path_factory, calib_dir):
    tmp = tmp_path_factory.mktemp("engines")
    return {
        "fp32": build(tmp, "fp32"),
        "fp16": build(tmp, "fp16", calib_dir=calib_dir),
        "int8": build(tmp, "int8", calib_dir=calib_dir, targets=["sm86", "sm89"]),
    }


def test_calibration_split_holds_out_every_fourth_image(calib_dir):
    calibration, held_out = split_calibration(calib_dir, 32)
    assert [p.name for p in held_out] == HELD_OUT
    assert len(calibration) == 15 and not set(calibration) & set(held_out)
    assert len(split_calibration(calib_dir, 4)[0]) == 4


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_plans_and_sidecars(engines, precision):
    result = engines[precision]
    plan = result.path.read_bytes()
    assert len(plan) > 1_000_000 and not result.reused
    side = Sidecar.read(result.path)
    assert side == result.sidecar  # what the build returned is what it wrote
    assert side.precision == precision and side.tensorrt["flavour"] == "tensorrt_rtx"
    assert side.engine_bytes == len(plan) and len(side.identity) == 20
    assert side.inputs == [{"name": "input", "shape": [1, 3, 320, 320], "dtype": "float"}]
    assert side.outputs == [{"name": "mask", "shape": [1, 1, 320, 320], "dtype": "float"}]
    assert side.preprocessing["u2edge.mean"] == "0.485,0.456,0.406"
    assert side.targets == (["sm86", "sm89"] if precision == "int8" else
                            sorted(n.lower() for n in dir(trt.ComputeCapability) if n.startswith("SM")))


def test_fp16_and_int8_pass_the_gate_on_held_out_photos(engines):
    for precision in ("fp16", "int8"):
        acc = engines[precision].sidecar.accuracy
        assert acc["held_out"] == HELD_OUT and acc["calibration_images"] == 15
        measured = acc["measured"]
        assert measured["min_iou"] >= 0.97 and measured["mean_mae"] <= 0.01, (precision, measured)
        assert set(measured["per_image"]) == set(HELD_OUT)
    int8 = engines["int8"].sidecar.accuracy["int8"]
    assert int8["passed"] and int8["int8_convs"] + len(int8["kept_float"]) == 112
    assert int8["naive"]["min_iou"] < 0.97  # the gate did real work: all-INT8 fails it
    assert all(name.startswith("stage") for name in int8["kept_float"])
    print(f"\nINT8 gate: {engines['int8'].sidecar.accuracy['measured']}; kept float {int8['kept_float']}")


def test_same_build_is_reused_and_changes_rebuild(tmp_path):
    first = build(tmp_path, "fp32")
    plan = tmp_path / "fp32.engine"
    stamp = plan.stat().st_mtime_ns, plan.stat().st_ino
    again = build(tmp_path, "fp32")
    assert again.reused and again.sidecar.identity == first.sidecar.identity
    assert (plan.stat().st_mtime_ns, plan.stat().st_ino) == stamp  # not rewritten
    other = build(tmp_path, "fp32", imgsz=288)
    assert not other.reused and other.sidecar.identity != first.sidecar.identity
    assert other.sidecar.inputs[0]["shape"] == [1, 3, 288, 288]
    forced = build(tmp_path, "fp32", imgsz=288, force=True)
    assert not forced.reused and forced.sidecar.identity == other.sidecar.identity
    (tmp_path / "fp32.engine.json").unlink()
    unknown = build(tmp_path, "fp32", imgsz=288)  # no sidecar: an unknown engine, rebuilt
    assert not unknown.reused and Sidecar.read(tmp_path / "fp32.engine").identity == other.sidecar.identity


def test_dynamic_batch_profile(tmp_path):
    result = build(tmp_path, "fp32", dynamic_batch=(1, 2, 4), targets=["sm86"])
    side = result.sidecar
    assert side.inputs[0]["shape"] == [-1, 3, 320, 320]
    assert side.profile == {"min": [1, 3, 320, 320], "opt": [2, 3, 320, 320], "max": [4, 3, 320, 320]}


def read_until(proc, text: str, hang: float = 300) -> str:
    """Read ``proc``'s stderr until it says ``text``; ``hang`` only ends a test that would wait forever."""
    fd, seen = proc.stderr.fileno(), b""
    while text.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], hang)
        assert ready, f"no {text!r} after {hang} s: {seen!r}"
        chunk = os.read(fd, 1 << 16)
        assert chunk, f"the process ended without {text!r}: {seen!r}"
        seen += chunk
    return seen.decode()


def test_concurrent_builds_of_one_engine_are_safe(tmp_path):
    import fcntl

    code = ("import sys\nfrom u2edge.cli import main\n"
            f"sys.exit(main(['build', '--precision', 'fp32', '--target', 'sm86', '--json', "
            f"'-o', {str(tmp_path / 'same.engine')!r}]))\n")
    with open(tmp_path / ".same.engine.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # both builds start while the engine is locked, so they must queue
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        for proc in procs:  # each says so when it finds the lock held, then waits for it
            read_until(proc, "waiting for another build of")
        assert all(p.poll() is None for p in procs)
        assert not (tmp_path / "same.engine").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reports = [json.loads(out) for out, _ in outs]
    assert sorted(r["reused"] for r in reports) == [False, True]
    assert len({r["identity"] for r in reports}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.engine", "same.engine.json"]  # the lock went too


def test_a_corrupt_sidecar_is_named_and_its_engine_rebuilt(tmp_path, caplog):
    first = build(tmp_path, "fp32", targets=["sm86"])
    side = tmp_path / "fp32.engine.json"
    for corrupt in ("{not json", "[1, 2]", json.dumps({**first.sidecar.to_dict(), "engine_bytes": "many"})):
        side.write_text(corrupt)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="u2edge"):
            again = build(tmp_path, "fp32", targets=["sm86"])
        assert not again.reused
        assert f"the sidecar {side} is corrupt (" in caplog.text and "rebuilding" in caplog.text
        assert Sidecar.read(tmp_path / "fp32.engine") == again.sidecar
        assert again.sidecar.identity == first.sidecar.identity


def test_a_plan_that_does_not_match_its_sidecar_is_rebuilt(tmp_path):
    first = build(tmp_path, "fp32", targets=["sm86"])
    plan = tmp_path / "fp32.engine"
    plan.write_bytes(plan.read_bytes()[:-10])  # as if another build replaced the plan and died
    again = build(tmp_path, "fp32", targets=["sm86"])
    assert not again.reused
    assert again.sidecar.engine_sha256 == first.sidecar.engine_sha256
    assert Sidecar.read(plan).engine_bytes == plan.stat().st_size


def test_fixed_batch_with_held_out_images(tmp_path, calib_dir):
    result = build(tmp_path, "fp16", batch=2, calib_dir=calib_dir, targets=["sm86"])
    assert result.sidecar.inputs[0]["shape"] == [2, 3, 320, 320]
    assert result.sidecar.outputs[0]["shape"] == [2, 1, 320, 320]
    assert result.sidecar.accuracy["measured"]["min_iou"] >= 0.97


def test_cli_build_report_and_json(tmp_path, calib_dir):
    proc = run_cli("build", "--precision", "fp16", "--calib-dir", calib_dir, "--target", "sm86",
                   "-o", tmp_path / "m.engine")
    for field in ("precision", "accuracy", "build time", "engine size", "sidecar"):
        assert field in proc.stdout
    assert "min IoU" in proc.stdout and "held-out images" in proc.stdout
    again = json.loads(run_cli("build", "--precision", "fp16", "--calib-dir", calib_dir, "--target", "sm86",
                               "-o", tmp_path / "m.engine", "--json").stdout)
    assert again["reused"] is True


def test_cli_builder_options_from_a_checkpoint(tmp_path, official_checkpoint):
    args = ["build", "--precision", "fp32", "--weights", official_checkpoint, "--opt-level", "2", "--workspace", "1",
            "--timing-cache", tmp_path / "timing.cache", "--target", "sm86,sm89", "-o", tmp_path / "m.engine", "--json"]
    first = json.loads(run_cli(*args).stdout)
    options = first["build_options"]
    assert options["opt_level"] == 2 and options["workspace"] == 1.0 and options["weights"] == str(official_checkpoint)
    assert first["targets"] == ["sm86", "sm89"] and first["arch"] == "u2netp"
    assert json.loads(run_cli(*args).stdout)["reused"] is True
    forced = json.loads(run_cli(*args, "--force").stdout)
    assert forced["reused"] is False and forced["identity"] == first["identity"]


def test_int8_with_a_clipping_calibrator_and_no_gate(tmp_path, calib_dir):
    proc = run_cli("build", "--precision", "int8", "--calib-dir", calib_dir, "--calib-method", "entropy",
                   "--calib-count", "6", "--no-gate", "--target", "sm86", "-o", tmp_path / "e.engine", "--json")
    report = json.loads(proc.stdout)
    int8 = report["accuracy"]["int8"]
    assert report["accuracy"]["method"] == "entropy" and report["accuracy"]["calibration_images"] == 6
    assert int8["kept_float"] == [] and not int8["passed"]  # no search without the gate
    assert report["accuracy"]["measured"]["min_iou"] < 0.97  # clipping ruins U-2-Net's masks, as documented


def one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("libpng")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--precision", "int8"], "needs --calib-dir with real images"),
    (["--imgsz", "300"], "multiple of 32"),
    (["--target", "sm99"], "unknown --target sm99"),
    (["--dla-core", "0"], "has no DLA"),
    (["--precision", "fp32", "--dla-core", "0"], "DLA runs FP16 or INT8 only"),
    (["--dla-core", "0", "--dynamic-batch", "1:2:4"], "DLA needs a static shape"),
    (["--calib-count", "0"], "--calib-count 0 must be at least 1"),
    (["--workspace", "-1"], "--workspace -1.0 must be a positive number"),
    (["--gpu-fallback"], "only applies with --dla-core"),
    (["--fp16-mode", "flag"], "--fp16-mode flag needs BuilderFlag.FP16"),
    (["--dynamic-batch", "4:2:8"], "1 <= MIN <= OPT <= MAX"),
    (["--dynamic-batch", "1-4"], "not MIN:OPT:MAX"),
])
def test_bad_options_give_one_line_and_no_engine(tmp_path, args, message):
    proc = run_cli("build", *args, "-o", tmp_path / "x.engine", check_rc=1)
    assert message in one_line_error(proc)
    assert not (tmp_path / "x.engine").exists()


def test_bad_calibration_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"{i}.jpg").write_bytes(b"not an image")
    for folder, message in ((tmp_path / "missing", "is not a folder"), (empty, "holds no images"),
                            (junk, "has 0 readable image(s) of 3")):
        proc = run_cli("build", "--precision", "int8", "--calib-dir", folder, "-o", tmp_path / "x.engine",
                       check_rc=1)
        assert message in proc.stderr.splitlines()[-1]
        assert not (tmp_path / "x.engine").exists()


def test_bad_onnx_files(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage" * 50)
    proc = run_cli("build", "--onnx", corrupt, "-o", tmp_path / "x.engine", check_rc=1)
    assert "corrupt" in one_line_error(proc)
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 320])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 320, 320])
    relu = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), relu)
    proc = run_cli("build", "--onnx", relu, "-o", tmp_path / "x.engine", check_rc=1)
    assert "not a U-2-Net ONNX" in one_line_error(proc)
    assert not (tmp_path / "x.engine").exists()


def test_every_parser_error_is_reported():
    from onnx import TensorProto, helper

    from u2edge import trtcompat
    from u2edge.export.plan import build_plan

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [helper.make_node("NoSuchOp", ["x"], ["t"], domain="acme"), helper.make_node("Relu", ["t"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    with pytest.raises(EngineBuildError, match="cannot parse the ONNX graph: .*NoSuchOp") as info:
        build_plan(trtcompat.load("tensorrt_rtx"), model, targets=["sm86"])
    assert info.value.details and "\n" not in str(info.value)


def test_the_build_steps_run_on_their_own():
    from u2edge import trtcompat
    from u2edge.export.onnx_export import fp32_graph, preprocessing_of
    from u2edge.export.plan import build_plan
    from u2edge.export.precision import precision_graph

    fp32 = fp32_graph(imgsz=288)
    step = precision_graph(fp32, Precision.FP32, preprocessing=preprocessing_of("u2netp", 288))
    assert step.proto is not fp32 and step.accuracy["note"] == "FP32 is the reference"
    profile = {name: [n, 3, 288, 288] for name, n in (("min", 1), ("opt", 2), ("max", 4))}
    plan = build_plan(trtcompat.load("tensorrt_rtx"), step.proto, profile=profile, targets=["sm86"])
    assert plan.inputs == [{"name": "input", "shape": [-1, 3, 288, 288], "dtype": "float"}]
    assert plan.outputs == [{"name": "mask", "shape": [-1, 1, 288, 288], "dtype": "float"}]
    assert len(plan.data) > 1_000_000


def test_the_timing_cache_is_written_under_its_lock(tmp_path):
    """Concurrent builds share one timing cache: a build saves its timings only under the cache's
    lock, merging the file as it is then. TensorRT-RTX keeps the timing-cache API but its
    operations are no-ops (it has no timings to merge), so here the lock and the write are checked;
    the merge itself is checked with NVIDIA TensorRT on a GPU below."""
    import fcntl

    from u2edge import trtcompat
    from u2edge.export.timing_cache import TimingCache

    rtx = trtcompat.load("tensorrt_rtx")
    builder = rtx.module.Builder(trtcompat.make_logger(rtx))
    config = builder.create_builder_config()
    cache = TimingCache(tmp_path / "timing.cache")
    cache.load(rtx, config)
    theirs = bytes(builder.create_builder_config().create_timing_cache(b"").serialize())
    waiting, failures = threading.Event(), []

    class Waiting(logging.Handler):
        def emit(self, record):
            if "waiting for another build to write the timing cache" in record.getMessage():
                waiting.set()

    def save():
        try:
            cache.save(rtx, config)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)
        finally:
            waiting.set()  # a save that did not wait ends the wait too, and fails below

    logger, handler = logging.getLogger("u2edge"), Waiting(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with open(cache.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another build is merging its timings
            cache.path.write_bytes(theirs)
            saver = threading.Thread(target=save)
            saver.start()
            waiting.wait()
            assert saver.is_alive() and cache.path.read_bytes() == theirs  # it waits and has written nothing
            fcntl.flock(lock, fcntl.LOCK_UN)
        saver.join()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert failures == []
    assert cache.path.read_bytes() == bytes(config.get_timing_cache().serialize())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timing.cache"]  # no lock, no temp file left


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="NVIDIA TensorRT (tensorrt) is not installed here; TensorRT-RTX has no timing caches")
def test_builds_that_ran_at_once_merge_their_timings(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from u2edge import trtcompat
    from u2edge.export.timing_cache import TimingCache

    trt = trtcompat.load("tensorrt")
    logger = trtcompat.make_logger(trt)
    builder = trt.module.Builder(logger)
    cache = TimingCache(tmp_path / "timing.cache")
    configs, sizes = [], []
    for channels in (8, 24):  # two different convs: two sets of timings
        weight = numpy_helper.from_array(np.ones((channels, 3, 3, 3), np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 64, 64])],
                                  [weight])
        network = trt.create_network(builder, strongly_typed=False)
        parser = trt.module.OnnxParser(network, logger)
        assert parser.parse(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
        config = builder.create_builder_config()
        cache.load(trt, config)  # both start from the same empty file, as two concurrent builds do
        assert builder.build_serialized_network(network, config) is not None
        configs.append(config)
        sizes.append(len(bytes(config.get_timing_cache().serialize())))
    for config in configs:
        cache.save(trt, config)
    assert cache.path.stat().st_size > max(sizes)  # the second did not overwrite the first's timings


def test_gate_failure_reports_the_numbers_and_writes_nothing(tmp_path, calib_dir):
    proc = run_cli("build", "--precision", "fp16", "--calib-dir", calib_dir, "--min-iou", "0.99999",
                   "-o", tmp_path / "x.engine", check_rc=1)
    line = one_line_error(proc)
    assert "FP16 misses the accuracy gate: min IoU 0.9" in line and "--no-gate" in line
    assert not (tmp_path / "x.engine").exists()
    run_cli("build", "--precision", "fp16", "--calib-dir", calib_dir, "--min-iou", "0.99999", "--no-gate",
            "--target", "sm86", "-o", tmp_path / "x.engine")
    assert (tmp_path / "x.engine").exists()


def test_full_disk_leaves_no_partial_engine(tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        proc = run_cli("build", "--precision", "fp32", "--target", "sm86", "-o", disk / "x.engine", check_rc=1)
        assert "the disk is full" in one_line_error(proc)
        assert [p.name for p in disk.iterdir() if not p.name.endswith(".lock")] == []


def test_api_errors_are_u2edge_errors(tmp_path):
    with pytest.raises(U2EdgeError, match="give weights or onnx, not both"):
        build(tmp_path, "fp32", weights=tmp_path / "a.pth", onnx=tmp_path / "b.onnx")
    with pytest.raises(U2EdgeError, match="^onnx .*missing.onnx: no such file"):
        build(tmp_path, "fp32", onnx=tmp_path / "missing.onnx")


@pytest.mark.parametrize("options, args, api, cli", [
    ({"precision": "int8"}, ["--precision", "int8"],
     "precision int8 needs calib_dir with real images", "--precision int8 needs --calib-dir with real images"),
    ({"precision": "int8", "calib_dir": "{tmp}/none"}, ["--precision", "int8", "--calib-dir", "{tmp}/none"],
     "calib_dir {tmp}/none is not a folder", "--calib-dir {tmp}/none is not a folder"),
    ({"precision": "fp32", "targets": ["sm99"]}, ["--precision", "fp32", "--target", "sm99"],
     "unknown targets sm99", "unknown --target sm99"),
    ({"precision": "fp32", "dynamic_batch": (4, 2, 8)}, ["--precision", "fp32", "--dynamic-batch", "4:2:8"],
     "dynamic_batch 4:2:8 must satisfy", "--dynamic-batch 4:2:8 must satisfy"),
])
def test_an_api_caller_reads_parameters_and_the_cli_its_flags(tmp_path, options, args, api, cli):
    """The library names its parameters (calib_dir); the CLI renders them as its flags (--calib-dir)."""
    def here(text):
        return text.format(tmp=tmp_path)

    options = {k: Path(here(v)) if k == "calib_dir" else v for k, v in options.items()}
    with pytest.raises(U2EdgeError) as info:
        build(tmp_path, name="x.engine", **options)
    assert str(info.value).startswith(here(api)), str(info.value)
    proc = run_cli("build", *map(here, args), "-o", tmp_path / "x.engine", check_rc=1)
    assert one_line_error(proc).startswith("u2edge: error: " + here(cli)), proc.stderr
    assert not (tmp_path / "x.engine").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="NVIDIA TensorRT (tensorrt) is not installed here; this runs where it is")
def test_tensorrt_builds_fp16_typed_and_by_flag_for_its_gpu(tmp_path, calib_dir):
    from u2edge import trtcompat

    flavour = trtcompat.load("tensorrt")
    typed = build_engine(BuildOptions(output=tmp_path / "typed.engine", precision=Precision.FP16,
                                      calib_dir=calib_dir, tensorrt="tensorrt"))
    side = typed.sidecar
    assert side.tensorrt == {"flavour": "tensorrt", "version": flavour.version}
    assert side.device["gpu"] and side.targets is None
    assert side.accuracy["measured"]["min_iou"] >= 0.97
    if flavour.has_fp16_flag:
        flag = build_engine(BuildOptions(output=tmp_path / "flag.engine", precision=Precision.FP16,
                                         fp16_mode="flag", tensorrt="tensorrt"))
        assert flag.path.stat().st_size > 1_000_000 and flag.sidecar.build_options["fp16_mode"] == "flag"
