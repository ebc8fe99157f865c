"""``build_engine``: U-2-Net -> FP32/FP16/INT8 graph -> accuracy gate -> TensorRT plan + sidecar.

An output named ``.onnx`` is a CPU model instead of a plan: the same graph, gate and sidecar, with
INT8 in the CPU scheme (unsigned activations) that OpenVINO runs on VNNI/AMX, and no TensorRT.

The identity of an engine hashes everything that determines it (source weights, export options,
TensorRT flavour and version, GPU or targets, precision, shapes, calibration data, build options);
the same build twice reuses the engine, and any change rebuilds it. A lock file serialises
concurrent builds of one engine; every file is written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable  # collections.abc.Callable cannot be subscripted on 3.8

from .. import __version__, trtcompat
from .._deps import require
from .._files import write_bytes_atomic
from ..cuda import device_identity
from ..errors import EngineBuildError, ImageError, OutputError, U2EdgeError
from ..images import IMAGE_SUFFIXES, read_image
from ..processing import Preprocessing, preprocess
from ..sidecar import Precision, identity_hash, read_sidecar, sidecar_path, write_sidecar
from ..weights import cache_dir, default_onnx, sha256_file
from . import precision as prec
from ..onnxgraph import set_image_shape, set_metadata
from .onnx_export import check_imgsz, export_onnx

__all__ = ["BuildOptions", "BuildResult", "build_engine", "split_calibration"]

log = logging.getLogger("u2edge")

Progress = Callable[[str, int, int], None]


@dataclass
class BuildOptions:
    output: Path
    precision: Precision = Precision.FP16
    arch: str = "u2netp"
    weights: Path | None = None  # .pth / ONNX weights; None: the official ones
    onnx: Path | None = None  # a U-2-Net ONNX to build from instead of weights
    imgsz: int = 320
    batch: int = 1
    dynamic_batch: tuple[int, int, int] | None = None  # (min, opt, max)
    calib_dir: Path | None = None
    calib_count: int = 32
    calib_method: str = "minmax"
    workspace: float | None = None  # GiB
    opt_level: int | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    targets: list[str] | None = None  # TensorRT-RTX compute capabilities, e.g. ["sm86"]
    fp16_mode: str = "typed"  # "typed": FP16 graph, strongly typed; "flag": FP32 graph + BuilderFlag.FP16
    gate: prec.Gate = field(default_factory=prec.Gate)
    no_gate: bool = False
    force: bool = False
    tensorrt: str | None = None  # "tensorrt" or "tensorrt_rtx"; default: whichever imports


@dataclass
class BuildResult:
    path: Path
    sidecar: dict
    reused: bool


def split_calibration(folder: Path, count: int) -> tuple[list[Path], list[Path]]:
    """(calibration images, held-out images) from a folder: every 4th image is held out.

    Unreadable files are skipped with a warning; the held-out ones never calibrate.
    """
    if not folder.is_dir():
        raise U2EdgeError(f"--calib-dir {folder} is not a folder; give a folder of real images from your scenes")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise U2EdgeError(f"--calib-dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    readable = []
    for path in files:
        try:
            read_image(path)
        except ImageError as exc:
            log.warning("skipping calibration image: %s", exc)
            continue
        readable.append(path)
    if len(readable) < 2:
        raise U2EdgeError(f"--calib-dir {folder} has {len(readable)} readable image(s) of {len(files)}; at "
                          "least 2 are needed (some calibrate, the others check accuracy), 20 or more is better")
    held_out = readable[::4]
    calibration = [p for p in readable if p not in held_out][:count]
    return calibration, held_out


def _files_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(output: Path):
    lock_path = output.with_name(f".{output.name}.lock")
    try:
        lock = open(lock_path, "a")
    except OSError as exc:
        raise OutputError(f"cannot create the build lock {lock_path}: {exc.strerror}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_engine(options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    progress = progress or (lambda stage, done, total: None)
    opts = options
    check_imgsz(opts.imgsz)
    if opts.precision is Precision.INT8 and opts.calib_dir is None:
        raise U2EdgeError("--precision int8 needs --calib-dir with real images from your scenes; "
                          "u2edge never calibrates on random data")
    if opts.dynamic_batch:
        lo, mid, hi = opts.dynamic_batch
        if not 1 <= lo <= mid <= hi:
            raise U2EdgeError(f"--dynamic-batch {lo}:{mid}:{hi} must satisfy 1 <= MIN <= OPT <= MAX")
    elif opts.batch < 1:
        raise U2EdgeError(f"--batch {opts.batch} must be at least 1")
    if opts.weights is not None and opts.onnx is not None:
        raise U2EdgeError("give --weights or --onnx, not both")
    if opts.calib_count < 1:
        raise U2EdgeError(f"--calib-count {opts.calib_count} must be at least 1")
    if opts.workspace is not None and opts.workspace <= 0:
        raise U2EdgeError(f"--workspace {opts.workspace} must be a positive number of GiB")
    if opts.dla_core is not None:
        if opts.precision is Precision.FP32:
            raise U2EdgeError("DLA runs FP16 or INT8 only; use --precision fp16 or int8 with --dla-core")
        if opts.dynamic_batch:
            raise U2EdgeError("DLA needs a static shape; use --batch N instead of --dynamic-batch with --dla-core")
    output = Path(opts.output)
    cpu = output.suffix.lower() == ".onnx"
    if cpu:
        _check_cpu_options(opts)
        trt = None
    else:
        trt = trtcompat.load(opts.tensorrt)
    if trt is not None and opts.fp16_mode == "flag" and not trt.has_fp16_flag:
        raise U2EdgeError(f"--fp16-mode flag needs BuilderFlag.FP16, which {trt.name} does not have; "
                          "use --fp16-mode typed")
    source = Path(opts.onnx or opts.weights or default_onnx(opts.arch))
    if not source.is_file():
        raise U2EdgeError(f"{'--onnx' if opts.onnx else '--weights'} {source}: no such file")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder of -o {output}: {exc.strerror}") from exc
    calibration, held_out = split_calibration(Path(opts.calib_dir), opts.calib_count) if opts.calib_dir else ([], [])

    device = device_identity() if trt is not None and trt.flavour == "tensorrt" else None
    targets = None
    if trt is not None and trt.has_compute_capabilities:
        targets = opts.targets or trt.compute_capabilities()
    elif trt is not None and opts.targets:
        trt.set_targets(None, opts.targets)  # raises: this TensorRT builds for its own GPU
    shapes = _shapes(opts)
    identity_inputs = {
        "u2edge": __version__,
        "source_sha256": sha256_file(source),
        "arch": opts.arch,
        "tensorrt": trt.name if trt else None,
        "device": device or ({"targets": targets} if trt else "cpu"),
        "precision": opts.precision.value,
        "shapes": shapes,
        "calibration": {"sha256": _files_hash(calibration + held_out), "method": opts.calib_method,
                        "count": len(calibration)} if calibration else None,
        "options": {"workspace": opts.workspace, "opt_level": opts.opt_level, "dla_core": opts.dla_core,
                    "gpu_fallback": opts.gpu_fallback, "fp16_mode": opts.fp16_mode,
                    "gate": None if opts.no_gate else asdict(opts.gate)},
    }
    identity = identity_hash(identity_inputs)
    with _locked(output):
        existing = read_sidecar(output)
        if output.exists() and not opts.force:
            if existing and existing.get("identity") == identity and \
                    existing.get("engine_sha256") == sha256_file(output):
                log.info("%s is up to date (identity %s); --force rebuilds it", output, identity)
                return BuildResult(output, existing, reused=True)
            if existing is None:
                log.info("%s has no sidecar, so it is an unknown engine: rebuilding it", output)
        sidecar = _build(opts, trt, source, calibration, held_out, shapes, targets, device, progress)
        sidecar.update(identity=identity, identity_inputs=identity_inputs)
        plan = sidecar.pop("_plan")
        # the old sidecar goes first: a plan and a sidecar that disagree are never left together
        sidecar_path(output).unlink(missing_ok=True)
        write_bytes_atomic(output, plan)
        write_sidecar(output, sidecar)
    return BuildResult(output, sidecar, reused=False)


def _check_cpu_options(opts: BuildOptions) -> None:
    """A .onnx output is a CPU model: refuse the options that only mean something to TensorRT."""
    given = [flag for flag, value in (("--workspace", opts.workspace), ("--opt-level", opts.opt_level),
                                      ("--timing-cache", opts.timing_cache), ("--dla-core", opts.dla_core),
                                      ("--target", opts.targets), ("--tensorrt", opts.tensorrt))
             if value is not None]
    if opts.fp16_mode != "typed":
        given.append("--fp16-mode")
    if given:
        raise U2EdgeError(f"{', '.join(given)} only apply to TensorRT engines, and -o {opts.output} names a .onnx "
                          "CPU model; drop them, or name the output .engine")
    if opts.precision is Precision.FP16:
        raise U2EdgeError(f"-o {opts.output} names a .onnx CPU model, which is int8 or fp32; CPUs gain nothing "
                          "from FP16: use --precision int8, or name the output .engine for a GPU")


def _shapes(opts: BuildOptions) -> dict:
    size = [3, opts.imgsz, opts.imgsz]
    if opts.dynamic_batch:
        return {name: [n] + size for name, n in zip(("min", "opt", "max"), opts.dynamic_batch)}
    return {name: [opts.batch] + size for name in ("min", "opt", "max")}


def _build(opts: BuildOptions, trt, source: Path, calibration, held_out, shapes, targets, device,
           progress: Progress) -> dict:
    onnx = require("onnx")
    spec = Preprocessing(imgsz=opts.imgsz)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="u2edge-build-") as tmp:
        # dynamic batch, so that held-out and calibration images run one at a time; a fixed batch
        # is set on the final graph
        exported = export_onnx(Path(tmp) / "fp32.onnx", arch=opts.arch, weights=source, imgsz=opts.imgsz,
                               batch=None)
        fp32 = onnx.load(str(exported.path))
    evaluator = None
    if held_out:
        evaluator = prec.Evaluator(fp32, {p.name: read_image(p) for p in held_out}, spec)
    accuracy: dict = {"reference": "FP32 graph under ONNX Runtime (CPU)",
                      "held_out": [p.name for p in held_out], "calibration_images": len(calibration),
                      "gate": None if opts.no_gate else asdict(opts.gate)}
    graph = fp32
    if opts.precision is Precision.FP16 and opts.fp16_mode == "typed":
        graph, acc, note = prec.to_fp16(fp32, evaluator)
        accuracy.update(measured=asdict(acc) if acc else None, note=note)
        if acc and not opts.no_gate:
            prec.require_gate("FP16", acc, opts.gate)
    elif opts.precision is Precision.INT8:
        batches = (preprocess(read_image(p), spec)[None] for p in calibration)
        result = prec.to_int8(fp32, batches, evaluator, method=opts.calib_method, gate=opts.gate,
                              search=not opts.no_gate, unsigned=trt is None, progress=progress)
        accuracy.update(measured=asdict(result.accuracy), int8=result.report(), method=opts.calib_method)
        if not opts.no_gate and not result.passed:
            prec.require_gate("INT8", result.accuracy, opts.gate,
                              f" (even with {len(result.kept_float)} convs kept in float; "
                              f"all-INT8 gave {result.naive.line()})")
        graph = result.proto
    else:
        accuracy.update(measured=None, note="FP32 is the reference" if opts.precision is Precision.FP32
                        else "FP16 by builder flag: TensorRT picks layer precisions, not measurable on the CPU")
    graph = copy.deepcopy(graph) if graph is fp32 else graph
    if not opts.dynamic_batch:
        set_image_shape(graph.graph, opts.batch, opts.imgsz)
    progress("building engine", 0, 1)
    build_started = time.perf_counter()
    if trt is None:
        plan, io = _cpu_model(opts, graph)
    else:
        plan, io = _trt_build(opts, trt, graph, shapes, targets)
    progress("building engine", 1, 1)
    return {
        "_plan": plan,
        "format": "u2edge-engine-sidecar/1",
        "u2edge": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tensorrt": {"flavour": trt.flavour, "version": trt.version} if trt else None,
        "device": device, "targets": targets,
        "precision": opts.precision.value,
        "arch": opts.arch,
        "source": str(source),
        "preprocessing": spec.to_metadata(),
        "inputs": io["inputs"], "outputs": io["outputs"], "profile": shapes,
        "build_options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()
                          if k not in ("output", "gate", "force")},
        "accuracy": accuracy,
        "build_seconds": round(time.perf_counter() - build_started, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "engine_bytes": len(plan),
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
    }


def _trt_build(opts: BuildOptions, trt, graph, shapes: dict, targets) -> tuple[bytes, dict]:
    module = trt.module
    logger = trtcompat.make_logger(trt)
    try:
        builder = module.Builder(logger)
    except TypeError as exc:  # the bindings return a null builder when CUDA cannot start
        raise EngineBuildError(f"{trt.name} cannot create a builder: no usable CUDA GPU or driver; without a GPU, "
                               "build with TensorRT-RTX: --tensorrt tensorrt_rtx --target sm86", logger.errors) from exc
    flag_path = opts.precision is Precision.FP16 and opts.fp16_mode == "flag"
    strongly_typed = trt.has_strongly_typed and not flag_path
    network = trt.create_network(builder, strongly_typed=strongly_typed)
    parser = module.OnnxParser(network, logger)
    if not parser.parse(graph.SerializeToString()):
        raise EngineBuildError(f"{trt.name} cannot parse the ONNX graph", trt.parser_errors(parser) or logger.errors)
    config = builder.create_builder_config()
    if opts.precision is Precision.FP16 and not strongly_typed:
        # TensorRT 8.x parses the FP16 graph weakly typed and would pick FP32 kernels without the flag
        config.set_flag(module.BuilderFlag.FP16)
    elif opts.precision is Precision.INT8 and not strongly_typed and trt.has_int8_flag:
        config.set_flag(module.BuilderFlag.INT8)  # TensorRT 8.x needs it to honour Q/DQ
    if targets:
        trt.set_targets(config, targets)
    if opts.workspace:
        trt.set_workspace(config, opts.workspace)
    if opts.opt_level is not None:
        trt.set_opt_level(config, opts.opt_level)
    if opts.dla_core is not None:
        trt.use_dla(builder, config, opts.dla_core, opts.gpu_fallback)
    inp = network.get_input(0)
    if opts.dynamic_batch:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
    cache_file = None
    if trt.has_timing_cache:
        cache_file = Path(opts.timing_cache) if opts.timing_cache else _default_timing_cache(trt)
        try:
            blob = cache_file.read_bytes() if cache_file.exists() else b""
        except OSError as exc:
            raise OutputError(f"cannot read the timing cache {cache_file}: {exc.strerror}") from exc
        if not config.set_timing_cache(config.create_timing_cache(blob), False):
            log.warning("timing cache %s does not fit %s; starting a new one", cache_file, trt.name)
            config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = logger.errors or ["no error message from TensorRT"]
        if any(re.search(r"out of memory|insufficient memory|cudaErrorMemoryAllocation", e, re.I) for e in errors):
            raise EngineBuildError(f"{trt.name} ran out of memory building the engine; lower --workspace, use a "
                                   "smaller --batch or --dynamic-batch MAX, or close other GPU programs", errors)
        raise EngineBuildError(f"{trt.name} failed to build the engine", errors)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cache_file, bytes(config.get_timing_cache().serialize()))
    io = {"inputs": [_tensor_info(network.get_input(i)) for i in range(network.num_inputs)],
          "outputs": [_tensor_info(network.get_output(i)) for i in range(network.num_outputs)]}
    return bytes(plan), io


def _cpu_model(opts: BuildOptions, graph) -> tuple[bytes, dict]:
    """The graph itself is the CPU model; its metadata names its precision for the runtime."""
    set_metadata(graph, {"u2edge.precision": opts.precision.value})
    require("onnx").checker.check_model(graph)

    def info(value) -> dict:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        return {"name": value.name, "shape": dims, "dtype": "float"}

    return graph.SerializeToString(), {"inputs": [info(v) for v in graph.graph.input],
                                       "outputs": [info(v) for v in graph.graph.output]}


def _tensor_info(tensor) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1].lower()}


def _default_timing_cache(trt) -> Path:
    gpu = device_identity() or {"gpu": "unknown", "compute_capability": "x"}
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{trt.flavour}-{trt.version}-{gpu['gpu']}-sm{gpu['compute_capability']}")
    return cache_dir() / "timing" / f"{key}.cache"
