"""Backends, chosen by the model file's suffix. Each module holds one backend class."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import ModelFormatError
from .base import Backend

__all__ = ["Backend", "open_backend", "SUFFIXES"]

# suffix -> (module, class); modules are imported only when their suffix is used
SUFFIXES: dict[str, tuple[str, str]] = {
    ".onnx": ("onnxruntime", "OnnxRuntimeBackend"),
    ".pth": ("torch", "TorchBackend"),
    ".pt": ("torch", "TorchBackend"),
}


def open_backend(path: str | os.PathLike, **options) -> Backend:
    path = Path(path)
    entry = SUFFIXES.get(path.suffix.lower())
    if entry is None:
        raise ModelFormatError(f"no backend for '{path.suffix or path.name}' files: {path}; "
                               f"use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ModelFormatError(f"model file not found: {path}")
    module = importlib.import_module(f".{entry[0]}", __name__)
    return getattr(module, entry[1])(path, **options)
