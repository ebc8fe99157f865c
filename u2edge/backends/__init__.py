"""Backends, chosen by the model file's suffix, or a server's address (``triton://``). Each module
holds one backend class.

A suffix lists the backends that can run it, best first; the first one installed runs the file,
unless the caller names one (``backend="onnxruntime"``). OpenVINO comes first for ``.onnx``
(a base dependency on x86-64: the CPU fast path): it runs INT8 graphs on VNNI/AMX, where ONNX
Runtime has no fast INT8 path for them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import ModelFormatError
from .base import Backend

__all__ = ["Backend", "BACKENDS", "SUFFIXES", "choose", "open_backend", "is_address"]

# name -> (module, class), best first: the first installed backend that runs a file's suffix runs it.
# The modules import their runtime (onnxruntime, openvino, tensorrt, torch) only when opened.
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorrt": ("tensorrt", "TensorRTBackend"),
    "openvino": ("openvino", "OpenVinoBackend"),
    "onnxruntime": ("onnxruntime", "OnnxRuntimeBackend"),
    "torch": ("torch", "TorchBackend"),
    "triton": ("triton", "TritonBackend"),  # no suffix: it runs triton:// and triton+http:// addresses
}
ADDRESSES = ("triton://", "triton+http://")  # a model on a server, not in a file


def _backend_class(name: str) -> type[Backend]:
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def _suffix_table() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for name in BACKENDS:
        for suffix in _backend_class(name).suffixes:
            table[suffix] = table.get(suffix, ()) + (name,)
    return table


SUFFIXES = _suffix_table()  # suffix -> the backends that run it, best first: each class's ``suffixes``


def is_address(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a server's address (``triton://HOST:PORT/MODEL``) rather than a file."""
    return isinstance(path, str) and path.lower().startswith(ADDRESSES)


def choose(path: str | os.PathLike, backend: str | None = None) -> str:
    """The backend that runs ``path``: ``backend`` if it can, else the first installed one."""
    if is_address(path):
        if backend not in (None, "triton"):
            raise ModelFormatError(f"backend {backend!r} cannot run {path}; a server's address runs on 'triton'")
        return "triton"
    if isinstance(path, str) and "://" in path:
        raise ModelFormatError(f"no backend for {path.split('://')[0]}:// addresses: {path}; give a model file, "
                               "or triton://HOST:PORT/MODEL (gRPC) or triton+http://HOST:PORT/MODEL (HTTP)")
    path = Path(path)
    names = SUFFIXES.get(path.suffix.lower())
    if names is None:
        raise ModelFormatError(f"no backend for '{path.suffix or path.name}' files: {path}; "
                               f"use one of {', '.join(SUFFIXES)}")
    if backend is not None:
        if backend not in names:
            raise ModelFormatError(f"backend {backend!r} cannot run {path.suffix} files; "
                                   f"use one of {', '.join(names)}")
        return backend
    return next((n for n in names if _backend_class(n).installed()), names[-1])


def open_backend(path: str | os.PathLike, backend: str | None = None, **options) -> Backend:
    name = choose(path, backend)
    if is_address(path):
        return _backend_class(name)(path, **options)
    if not Path(path).is_file():
        raise ModelFormatError(f"model file not found: {path}")
    return _backend_class(name)(path, **options)
