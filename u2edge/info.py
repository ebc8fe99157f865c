"""What this machine offers u2edge: versions, backends, GPU, TensorRT and OpenCV video I/O.

Nothing heavy is imported: versions come from package metadata.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys

from . import __version__
from .backends import SUFFIXES, choose
from .cpu import choose_precision, cpu_features
from .errors import U2EdgeError
from .native import status as native_status
from .weights import WEIGHTS, cached_path

__all__ = ["collect", "opencv_features"]


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _module_version(module: str, *dists: str) -> str | None:
    """The distribution version, or 'present' for a module installed outside pip (JetPack's apt)."""
    version = _version(*dists)
    if version is None and importlib.util.find_spec(module) is not None:
        return "present"
    return version


def opencv_features() -> dict:
    try:
        import cv2
    except ImportError:
        return {"version": None}
    build = cv2.getBuildInformation()

    def flag(name: str) -> bool:
        match = re.search(rf"^\s*{name}:\s*(\S+)", build, re.MULTILINE)
        return bool(match) and match.group(1).upper() not in ("NO", "OFF")

    gui = re.search(r"^\s*GUI:\s*(\S+)", build, re.MULTILINE)
    return {"version": cv2.__version__, "gstreamer": flag("GStreamer"), "v4l2": flag("v4l/v4l2"),
            "ffmpeg": flag("FFMPEG"), "gui": gui.group(1) if gui else None}


def _onnxruntime() -> dict:
    try:
        import onnxruntime
    except ImportError:
        return {"version": None, "providers": []}
    return {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def _gpus() -> list[str]:
    """NVIDIA GPUs the driver reports, read from /proc (no CUDA import)."""
    root = "/proc/driver/nvidia/gpus"
    names = []
    if os.path.isdir(root):
        for gpu in sorted(os.listdir(root)):
            try:
                with open(os.path.join(root, gpu, "information")) as f:
                    match = re.search(r"Model:\s*(.+)", f.read())
                names.append(match.group(1).strip() if match else gpu)
            except OSError:
                names.append(gpu)
    if not names and os.path.exists("/etc/nv_tegra_release"):
        names.append("Jetson (Tegra integrated GPU)")
    return names


def _cpu() -> dict:
    """The CPU's name and the instruction sets that decide the fast path's precision."""
    features = cpu_features()
    return {"name": features.name, "cores": features.cores, "int8_features": features.int8,
            "bf16_features": features.bf16}


def _auto() -> dict:
    """What ``--precision auto`` runs for each model here, and why."""
    out = {}
    for model in WEIGHTS:
        try:
            choice = choose_precision(model)
        except U2EdgeError as exc:
            out[model] = {"precision": None, "reason": str(exc)}
        else:
            out[model] = {"precision": choice.precision.value, "reason": choice.reason}
    return out


def collect() -> dict:
    return {
        "u2edge": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "numpy": _version("numpy"),
        "opencv": opencv_features(),
        "onnxruntime": _onnxruntime(),
        "torch": _module_version("torch", "torch"),
        "onnx": _module_version("onnx", "onnx"),
        "tensorrt": _module_version("tensorrt", "tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        "tensorrt_rtx": _module_version("tensorrt_rtx", "tensorrt-rtx-cu13-bindings", "tensorrt-rtx"),
        "openvino": _module_version("openvino", "openvino"),
        "cuda_python": _module_version("cuda", "cuda-python", "cuda-bindings"),
        "pycuda": _module_version("pycuda", "pycuda"),
        "gpus": _gpus(),
        "nvidia_smi": shutil.which("nvidia-smi") is not None,
        "cpu": _cpu(),
        "native": native_status(),
        "backends": {suffix: choose(f"model{suffix}") for suffix in SUFFIXES},
        "auto": _auto(),
        "weights": {name: {"path": str(cached_path(name)), "cached": cached_path(name).exists()} for name in WEIGHTS},
    }
