"""Build a TensorRT engine (FP32, FP16 or INT8) with an accuracy gate, plus a sidecar .json.

Examples:
  u2edge build --precision fp16 -o u2netp_fp16.engine
  u2edge build --precision int8 --calib-dir shots/ -o u2netp_int8.engine
  u2edge build --precision fp16 --dynamic-batch 1:4:8 --workspace 2 -o u2netp_dyn.engine
  u2edge build --precision fp16 --dla-core 0 --gpu-fallback -o u2netp_dla.engine   # Jetson Xavier/Orin
  u2edge build --precision int8 --calib-dir shots/ --target sm86,sm89 -o u2netp.engine  # TensorRT-RTX, no GPU
  u2edge build --precision int8 --calib-dir shots/ -o u2netp_int8.onnx   # CPU model (OpenVINO), no TensorRT

Build on the device that will run the engine: plans do not move between TensorRT versions or GPUs.
INT8 is calibrated on --calib-dir (every 4th image is held out to measure accuracy) and must pass
the gate (min mask IoU >= 0.97, mean MAE <= 0.01 against FP32); convs that hurt it most stay in
float. The same build twice reuses the engine; --force rebuilds it. An output named .onnx is a CPU
model rather than a plan: the INT8 graph that `u2edge image --engine` runs on OpenVINO (VNNI/AMX).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import U2EdgeError
from ..export.quantize import CALIB_METHODS
from ..precision import BUILD_PRECISIONS, Precision
from ..sidecar import Sidecar
from .options import add_json_option, add_model_option, print_json, print_table
from .progress import Progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=[p.value for p in BUILD_PRECISIONS], default=Precision.FP16.value,
                        help="engine precision (default: fp16)")
    add_model_option(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", metavar="W", help=".pth or ONNX weights (default: the official ONNX of --model)")
    source.add_argument("--onnx", metavar="MODEL.onnx", help="a U-2-Net ONNX to build from")
    parser.add_argument("--imgsz", type=int, default=320, help="input side, a multiple of 32 (default: 320)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default: 1)")
    batch.add_argument("--dynamic-batch", metavar="MIN:OPT:MAX", help="dynamic batch profile, e.g. 1:4:8")
    calib = parser.add_argument_group("INT8 calibration and the accuracy gate")
    calib.add_argument("--calib-dir", metavar="DIR", help="real images from your scenes (needed for int8; "
                                                          "also measures fp16)")
    calib.add_argument("--calib-count", type=int, default=32, metavar="N",
                       help="calibration images to use (default: 32)")
    calib.add_argument("--calib-method", choices=CALIB_METHODS, default="minmax",
                       help="activation ranges (default: minmax; on U-2-Net, clipping by entropy or "
                            "percentile destroys the masks and is caught by the gate)")
    calib.add_argument("--min-iou", type=float, default=0.97, help="gate: min mask IoU against FP32 (default: 0.97)")
    calib.add_argument("--max-mae", type=float, default=0.01, help="gate: max mean MAE against FP32 (default: 0.01)")
    calib.add_argument("--no-gate", action="store_true", help="build even if the accuracy gate fails")
    trt = parser.add_argument_group("TensorRT")
    trt.add_argument("--workspace", type=float, metavar="GiB", help="builder workspace limit")
    trt.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5", help="builder optimization level")
    trt.add_argument("--timing-cache", metavar="PATH", help="timing cache file (default: one per TensorRT and GPU "
                                                            "in the user cache)")
    trt.add_argument("--dla-core", type=int, metavar="N", help="run on this DLA core (Jetson Xavier/Orin)")
    trt.add_argument("--gpu-fallback", action="store_true", help="with --dla-core: layers DLA cannot run go to the GPU")
    trt.add_argument("--target", dest="targets", metavar="sm86,...",
                     help="TensorRT-RTX: compute capabilities to build for (default: all it knows)")
    trt.add_argument("--fp16-mode", choices=("typed", "flag"), default="typed",
                     help="typed: an FP16 graph built strongly typed (default); flag: the FP32 graph with "
                          "BuilderFlag.FP16 (TensorRT 8.5-10.x only)")
    trt.add_argument("--tensorrt", choices=("tensorrt", "tensorrt_rtx"), help="which TensorRT to use "
                                                                              "(default: tensorrt if installed)")
    parser.add_argument("--force", action="store_true", help="rebuild even if an identical engine exists")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.engine",
                        help="where to write the engine (.engine or .plan); a .onnx name writes a CPU model")
    add_json_option(parser)


def parse_dynamic(text: str) -> tuple[int, int, int]:
    try:
        lo, mid, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise U2EdgeError(f"--dynamic-batch {text!r} is not MIN:OPT:MAX, e.g. 1:4:8") from None
    return lo, mid, hi


def run(args: argparse.Namespace) -> int:
    from ..export.build import BuildOptions, build_engine
    from ..export.precision import Gate

    options = BuildOptions(
        output=Path(args.output), precision=Precision(args.precision), arch=args.model,
        weights=Path(args.weights) if args.weights else None, onnx=Path(args.onnx) if args.onnx else None,
        imgsz=args.imgsz, batch=args.batch,
        dynamic_batch=parse_dynamic(args.dynamic_batch) if args.dynamic_batch else None,
        calib_dir=Path(args.calib_dir) if args.calib_dir else None, calib_count=args.calib_count,
        calib_method=args.calib_method, workspace=args.workspace, opt_level=args.opt_level,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None, dla_core=args.dla_core,
        gpu_fallback=args.gpu_fallback, targets=args.targets.lower().split(",") if args.targets else None,
        fp16_mode=args.fp16_mode, gate=Gate(args.min_iou, args.max_mae), no_gate=args.no_gate, force=args.force,
        tensorrt=args.tensorrt)
    bars: dict[str, Progress] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for earlier in bars.values():  # a stage that ended early (the gate passed) is done
                earlier.close()
            bars.clear()
            bar = bars[stage] = Progress(total, stage, enabled=not args.quiet)
        if done > bar.done:
            bar.step()

    result = build_engine(options, progress)
    for bar in bars.values():
        bar.close()
    sidecar = result.sidecar
    if args.json:
        print_json({"engine": str(result.path), "reused": result.reused, **sidecar.to_dict()})
        return 0
    print_table(report_rows(result.path, sidecar, result.reused))
    return 0


def report_rows(path: Path, sidecar: Sidecar, reused: bool) -> list[tuple[str, str]]:
    acc = sidecar.accuracy or {}
    measured = acc.get("measured")
    accuracy = (f"min IoU {measured['min_iou']:.4f}, mean MAE {measured['mean_mae']:.4f} vs FP32 on "
                f"{len(acc.get('held_out', []))} held-out images" if measured else acc.get("note", "not measured"))
    rows = [("engine", f"{path} ({'reused, identical identity' if reused else 'built'})"),
            ("precision", sidecar.precision),
            ("tensorrt", f"{sidecar.tensorrt['flavour']} {sidecar.tensorrt['version']}" if sidecar.tensorrt
             else "none (a CPU model for OpenVINO or ONNX Runtime)"),
            ("for", ", ".join(sidecar.targets) if sidecar.targets
             else "CPU" if not sidecar.tensorrt else (sidecar.device or {}).get("gpu", "this GPU")),
            ("accuracy", accuracy)]
    int8 = acc.get("int8")
    if int8:
        kept = int8["kept_float"]
        rows.append(("int8 layers", f"{int8['int8_convs']} convs INT8; kept in float: {', '.join(kept) or 'none'} "
                                    f"({int8['float_mac_fraction'] * 100:.1f}% of conv MACs)"))
        naive = int8["naive"]
        rows.append(("all-int8 would be", f"min IoU {naive['min_iou']:.4f}, mean MAE {naive['mean_mae']:.4f}"))
    rows += [("build time", f"{sidecar.build_seconds:.1f} s {'TensorRT' if sidecar.tensorrt else 'writing'}, "
                            f"{sidecar.total_seconds:.1f} s in all"),
             ("engine size", f"{sidecar.engine_bytes / 1e6:.1f} MB"),
             ("sidecar", f"{Sidecar.path_for(path)} (identity {sidecar.identity})")]
    return rows
