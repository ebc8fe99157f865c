"""``build_engine``: U-2-Net -> FP32/FP16/INT8 graph -> accuracy gate -> TensorRT plan + sidecar.

A chain of small steps, each public and usable on its own:

    check_options                  the options alone, before anything is loaded
    split_calibration              calib_dir -> calibration and held-out images   (calibration)
    identity_inputs, EngineCache   identity, lock, reuse, atomic writes           (engine_cache)
    fp32_graph                     weights or ONNX -> the FP32 graph              (onnx_export)
    precision_graph                -> the FP16/INT8 graph, measured and gated     (precision)
    build_plan / cpu_model         -> a TensorRT plan, or a CPU model             (plan)
    build_sidecar                  -> what the sidecar says about it, stored with the model by EngineCache

An output named ``.onnx`` is a CPU model instead of a plan: the same graph, gate and sidecar, with
INT8 in the CPU scheme (unsigned activations) that OpenVINO runs on VNNI/AMX, and no TensorRT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable  # collections.abc.Callable cannot be subscripted on 3.8

from .. import __version__, trtcompat
from ..errors import OutputError, U2EdgeError
from ..onnxgraph import set_image_shape
from ..precision import BUILD_PRECISIONS, Precision
from ..processing import Preprocessing
from ..sidecar import ENGINE_FORMAT, Sidecar
from ..weights import default_onnx, sha256_file
from . import precision as prec
from .calibration import calibration_hash, split_calibration
from .engine_cache import EngineCache
from .onnx_export import check_imgsz, fp32_graph, preprocessing_of
from .plan import Plan, Target, build_plan, cpu_model
from .timing_cache import TimingCache

__all__ = ["BuildOptions", "BuildResult", "build_engine", "check_options", "shape_profile", "identity_inputs",
           "build_sidecar", "split_calibration"]

log = logging.getLogger("u2edge")

Progress = Callable[[str, int, int], None]


@dataclass
class BuildOptions:
    """What to build. Each field is a parameter of the build, named as errors name it."""

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
    timing_cache: Path | None = None  # None: one per TensorRT and GPU in the user cache
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
    sidecar: Sidecar
    reused: bool


def build_engine(options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Build ``options.output``, or reuse it when an identical build made it; see the module's steps."""
    progress = progress or (lambda stage, done, total: None)
    opts = dataclasses.replace(options, precision=Precision.parse(options.precision, BUILD_PRECISIONS))
    check_options(opts)
    output = Path(opts.output)
    trt = None if output.suffix.lower() == ".onnx" else trtcompat.load(opts.tensorrt)
    if trt is not None and opts.fp16_mode == "flag" and not trt.has_fp16_flag:
        raise U2EdgeError(lambda spell: f"{spell('fp16_mode')} flag needs BuilderFlag.FP16, which {trt.name} does "
                                        f"not have; use {spell('fp16_mode')} typed")
    source = Path(opts.onnx or opts.weights or default_onnx(opts.arch))
    if not source.is_file():
        raise U2EdgeError(lambda spell: f"{spell('onnx' if opts.onnx else 'weights')} {source}: no such file")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(lambda spell: f"cannot create the folder of {spell('output')} {output}: "
                                        f"{exc.strerror}") from exc
    calibration, held_out = split_calibration(Path(opts.calib_dir), opts.calib_count) if opts.calib_dir else ([], [])
    target = Target.of(trt, opts.targets)
    cache = EngineCache(output, identity_inputs(opts, target, source, calibration, held_out))
    with cache.locked():
        reusable = None if opts.force else cache.reusable()
        if reusable is not None:
            return BuildResult(output, reusable, reused=True)
        started = time.perf_counter()
        preprocessing = preprocessing_of(opts.arch, opts.imgsz)
        fp32 = fp32_graph(arch=opts.arch, weights=source, imgsz=opts.imgsz)
        stepped = prec.precision_graph(fp32, opts.precision, preprocessing=preprocessing, calibration=calibration,
                                       held_out=held_out, gate=opts.gate, no_gate=opts.no_gate,
                                       calib_method=opts.calib_method, fp16_mode=opts.fp16_mode,
                                       unsigned=trt is None, progress=progress)
        graph = stepped.proto
        if not opts.dynamic_batch:
            set_image_shape(graph.graph, opts.batch, opts.imgsz)
        progress("building engine", 0, 1)
        build_started = time.perf_counter()
        if trt is None:
            plan = cpu_model(graph, opts.precision)
        else:
            plan = build_plan(trt, graph, precision=opts.precision,
                              profile=shape_profile(opts) if opts.dynamic_batch else None,
                              targets=target.targets, workspace=opts.workspace, opt_level=opts.opt_level,
                              dla_core=opts.dla_core, gpu_fallback=opts.gpu_fallback, fp16_mode=opts.fp16_mode,
                              timing_cache=_timing_cache(opts, trt))
        progress("building engine", 1, 1)
        sidecar = build_sidecar(opts, plan, target, source=source, preprocessing=preprocessing,
                                accuracy=stepped.accuracy, build_seconds=time.perf_counter() - build_started,
                                total_seconds=time.perf_counter() - started)
        cache.store(plan.data, sidecar)
    return BuildResult(output, sidecar, reused=False)


def check_options(opts: BuildOptions) -> None:
    """Refuse options that cannot go together, before anything is loaded."""
    check_imgsz(opts.imgsz)
    if opts.precision is Precision.INT8 and opts.calib_dir is None:
        raise U2EdgeError(lambda spell: f"{spell('precision')} int8 needs {spell('calib_dir')} with real images from "
                                        "your scenes; u2edge never calibrates on random data")
    if opts.dynamic_batch:
        lo, mid, hi = opts.dynamic_batch
        if not 1 <= lo <= mid <= hi:
            raise U2EdgeError(lambda spell: f"{spell('dynamic_batch')} {lo}:{mid}:{hi} must satisfy "
                                            "1 <= MIN <= OPT <= MAX")
    elif opts.batch < 1:
        raise U2EdgeError(lambda spell: f"{spell('batch')} {opts.batch} must be at least 1")
    if opts.weights is not None and opts.onnx is not None:
        raise U2EdgeError(lambda spell: f"give {spell('weights')} or {spell('onnx')}, not both")
    if opts.calib_count < 1:
        raise U2EdgeError(lambda spell: f"{spell('calib_count')} {opts.calib_count} must be at least 1")
    if opts.workspace is not None and opts.workspace <= 0:
        raise U2EdgeError(lambda spell: f"{spell('workspace')} {opts.workspace} must be a positive number of GiB")
    if opts.gpu_fallback and opts.dla_core is None:
        raise U2EdgeError(lambda spell: f"{spell('gpu_fallback')} only applies with {spell('dla_core')} N")
    if opts.dla_core is not None:
        if opts.precision is Precision.FP32:
            raise U2EdgeError(lambda spell: f"DLA runs FP16 or INT8 only; use {spell('precision')} fp16 or int8 with "
                                            f"{spell('dla_core')}")
        if opts.dynamic_batch:
            raise U2EdgeError(lambda spell: f"DLA needs a static shape; use {spell('batch')} N instead of "
                                            f"{spell('dynamic_batch')} with {spell('dla_core')}")
    if Path(opts.output).suffix.lower() == ".onnx":
        _check_cpu_options(opts)


def _check_cpu_options(opts: BuildOptions) -> None:
    """A .onnx output is a CPU model: refuse the options that only mean something to TensorRT."""
    given = [name for name in ("workspace", "opt_level", "timing_cache", "dla_core", "targets", "tensorrt")
             if getattr(opts, name) is not None]
    if opts.fp16_mode != "typed":
        given.append("fp16_mode")
    if given:
        raise U2EdgeError(lambda spell: f"{', '.join(map(spell, given))} only apply to TensorRT engines, and "
                                        f"{spell('output')} {opts.output} names a .onnx CPU model; drop them, or name "
                                        "the output .engine")
    if opts.precision is Precision.FP16:
        raise U2EdgeError(lambda spell: f"{spell('output')} {opts.output} names a .onnx CPU model, which is int8 or "
                                        f"fp32; CPUs gain nothing from FP16: use {spell('precision')} int8, or name "
                                        "the output .engine for a GPU")


def shape_profile(opts: BuildOptions) -> dict:
    """The {"min", "opt", "max"} input shapes: the dynamic batch's, or the fixed batch's three times."""
    size = [3, opts.imgsz, opts.imgsz]
    if opts.dynamic_batch:
        return {name: [n] + size for name, n in zip(("min", "opt", "max"), opts.dynamic_batch)}
    return {name: [opts.batch] + size for name in ("min", "opt", "max")}


def identity_inputs(opts: BuildOptions, target: Target, source: Path, calibration: list[Path],
                    held_out: list[Path]) -> dict:
    """Everything that determines the built model, for its identity (``EngineCache``)."""
    return {
        "u2edge": __version__,
        "source_sha256": sha256_file(source),
        "arch": opts.arch,
        **target.identity(),
        "precision": opts.precision.value,
        "shapes": shape_profile(opts),
        "calibration": {"sha256": calibration_hash(calibration + held_out), "method": opts.calib_method,
                        "count": len(calibration)} if calibration else None,
        "options": {"workspace": opts.workspace, "opt_level": opts.opt_level, "dla_core": opts.dla_core,
                    "gpu_fallback": opts.gpu_fallback, "fp16_mode": opts.fp16_mode,
                    "gate": None if opts.no_gate else asdict(opts.gate)},
    }


def _timing_cache(opts: BuildOptions, trt: trtcompat.TensorRT) -> TimingCache | None:
    """The ``timing_cache`` file, else the user cache's for this TensorRT and GPU; None where TensorRT has none."""
    if not trt.has_timing_cache:
        return None
    return TimingCache(opts.timing_cache) if opts.timing_cache else TimingCache.default(trt)


def build_sidecar(opts: BuildOptions, plan: Plan, target: Target, *, source: Path, preprocessing: Preprocessing,
                  accuracy: dict, build_seconds: float, total_seconds: float) -> Sidecar:
    """The sidecar of a model built by ``opts`` (the engine cache stamps its identity on it)."""
    trt = target.trt
    options = {k: v for k, v in asdict(opts).items() if k not in ("output", "gate", "force")}
    return Sidecar(
        format=ENGINE_FORMAT, u2edge=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tensorrt={"flavour": trt.flavour, "version": trt.version} if trt else None,
        device=target.device, targets=target.targets, precision=opts.precision.value, arch=opts.arch,
        source=str(source), preprocessing=preprocessing.to_metadata(), inputs=plan.inputs, outputs=plan.outputs,
        profile=shape_profile(opts), build_options=_json(options), accuracy=_json(accuracy),
        build_seconds=round(build_seconds, 2), total_seconds=round(total_seconds, 2),
        engine_bytes=len(plan.data), engine_sha256=hashlib.sha256(plan.data).hexdigest())


def _json(value):
    """``value`` as it reads back from JSON (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))
