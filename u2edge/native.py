"""The native part (CMakeLists.txt): CUDA pre/post-processing kernels as ``u2edge._native``,
built by ``pip install`` where nvcc is found (setup.py).

It is optional. Where it is not built, or there is no CUDA device, frames are pre- and
post-processed on the CPU (``u2edge.processing``), and ``u2edge info`` says which path is active.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

__all__ = ["load", "status", "BUILD_COMMAND"]

BUILD_COMMAND = "U2EDGE_NATIVE=on pip install -e . (needs nvcc: the CUDA toolkit)"


def load() -> ModuleType | None:
    """``u2edge._native`` if it was built, else None."""
    try:
        return importlib.import_module("u2edge._native")
    except ImportError:
        return None


def status() -> str:
    module = load()
    if module is None:
        return f"not built: CPU pre/post-processing; build it with: {BUILD_COMMAND}"
    architectures = getattr(module, "CUDA_ARCHITECTURES", "unknown")
    return (f"built ({Path(module.__file__).name}, sm {architectures}): CUDA pre/post-processing where a CUDA "
            "device is present")
