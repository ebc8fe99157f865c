"""Show versions, usable backends and execution providers, GPU/TensorRT presence and OpenCV video I/O.

Example:
  u2edge info            # a table
  u2edge info --json     # the same, machine-readable
"""

from __future__ import annotations

import argparse

from ..info import collect
from .options import add_json_option, print_json, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json_option(parser)


def _yes(value) -> str:
    return "yes" if value else "no"


def _fast_path(info: dict) -> str:
    if info["backends"].get(".onnx") != "openvino":
        return "off: .onnx runs on ONNX Runtime; pip install openvino"
    if not info["cpu"]["int8_features"]:
        return "OpenVINO, but this CPU has no VNNI/AMX: INT8 gains little"
    return f"on: OpenVINO INT8 on {', '.join(info['cpu']['int8_features'])}"


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print_json(info)
        return 0
    cv, ort, cpu = info["opencv"], info["onnxruntime"], info["cpu"]
    missing = "not installed"
    rows = [
        ("u2edge", info["u2edge"]),
        ("python", f"{info['python']} ({info['platform']})"),
        ("numpy", info["numpy"] or missing),
        ("opencv", f"{cv['version']} (GStreamer {_yes(cv.get('gstreamer'))}, V4L2 {_yes(cv.get('v4l2'))}, "
                   f"FFmpeg {_yes(cv.get('ffmpeg'))}, GUI {cv.get('gui') or 'none'})" if cv["version"] else missing),
        ("onnxruntime", f"{ort['version']} (providers: {', '.join(ort['providers'])})" if ort["version"] else missing),
        ("openvino", info["openvino"] or f"{missing} (the CPU fast path: pip install openvino)"),
        ("torch", info["torch"] or f"{missing} (needed for .pth models and torch export)"),
        ("onnx", info["onnx"] or f"{missing} (needed for export)"),
        ("tensorrt", info["tensorrt"] or missing),
        ("tensorrt_rtx", info["tensorrt_rtx"] or missing),
        ("cuda-python", info["cuda_python"] or missing),
        ("pycuda", info["pycuda"] or missing),
        ("cpu", f"{cpu['name']}, {cpu['cores']} cores "
                f"({', '.join(cpu['int8_features'] + cpu['bf16_features']) or 'no VNNI/AMX, no BF16'})"),
        ("gpus", ", ".join(info["gpus"]) or "none found"),
        ("backends", ", ".join(f"{s} -> {m}" for s, m in info["backends"].items())),
        ("cpu fast path", _fast_path(info)),
        ("native part", info["native"]),
    ]
    rows += [(f"{model} auto", auto["reason"]) for model, auto in info["auto"].items()]
    rows += [(f"{model} weights", f"{w['path']} ({'cached' if w['cached'] else 'fetched on first use'})")
             for model, w in info["weights"].items()]
    print_table(rows)
    return 0
