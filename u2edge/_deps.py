"""Lazy imports of the heavy optional dependencies, with the exact command that installs each."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

# module name -> (what it is for, how to install it)
_HINTS: dict[str, tuple[str, str]] = {
    "torch": (
        "PyTorch models, export and training",
        "pip install 'u2edge[export]' or 'u2edge[train]' (desktop, CPU: pip install torch==2.13.0; "
        "Jetson: NVIDIA's JetPack torch wheel)",
    ),
    "onnx": ("ONNX graph editing and export", "pip install 'u2edge[export]'"),
    "onnxruntime": ("the ONNX Runtime backend", "pip install onnxruntime (Jetson: onnxruntime-gpu from NVIDIA's Jetson Zoo)"),
    "onnxconverter_common": ("FP16 engines", "pip install 'u2edge[export]'"),
    "openvino": ("the OpenVINO backend (the CPU fast path)",
                 "pip install openvino (a base dependency of u2edge on x86-64)"),
    "matplotlib": ("the benchmark plot and training curves", "pip install matplotlib"),
    "cv2": ("images and video", "pip install opencv-python (Jetson: JetPack's python3-opencv)"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ``MissingDependencyError`` naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        purpose, install = _HINTS.get(top, ("this feature", f"pip install {top}"))
        raise MissingDependencyError(
            f"{module} is required for {purpose} but cannot be imported ({exc}); install it with: {install}"
        ) from exc


def available(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (its parent package, for a dotted
    name such as ``cuda.bindings``, is imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing: find_spec raises instead of returning None
        return False
