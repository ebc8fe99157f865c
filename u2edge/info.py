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
from .native import status as native_status
from .weights import WEIGHTS, cache_dir

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
    """The CPU's name and the INT8 instruction sets the fast path uses (Linux /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        name = match.group(1).strip()
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        flags = set(match.group(1).split())
    wanted = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8"}
    return {"name": name, "cores": os.cpu_count(), "int8_features": [v for k, v in wanted.items() if k in flags]}


def collect() -> dict:
    default = cache_dir() / f"{WEIGHTS['u2netp'].name}.onnx"
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
        "default_weights": {"path": str(default), "cached": default.exists()},
    }
