"""The u2edge error hierarchy.

Every message says what failed, what was received and how to fix it, in one line. The CLI
prints ``U2EdgeError`` as that line and exits 1; any other exception is a bug.
"""

from __future__ import annotations

__all__ = [
    "U2EdgeError",
    "MissingDependencyError",
    "WeightsError",
    "ImageError",
    "ModelFormatError",
    "IncompatibleEngineError",
    "EngineBuildError",
    "SourceError",
    "OutputError",
]


class U2EdgeError(Exception):
    """Base class of every error that a user can cause and fix."""


class MissingDependencyError(U2EdgeError, ImportError):
    """An optional dependency (torch, onnx, tensorrt, cuda-python) is not installed."""


class WeightsError(U2EdgeError):
    """A weights file is missing, corrupt, fails its checksum, or belongs to another model."""


class ImageError(U2EdgeError):
    """An image or frame cannot be read, or has a layout u2edge does not accept."""


class ModelFormatError(U2EdgeError):
    """A model file has a suffix no backend handles, or its inputs/outputs are not U2-Net's."""


class IncompatibleEngineError(U2EdgeError):
    """An engine was built for another TensorRT version or GPU."""


class EngineBuildError(U2EdgeError):
    """Building an ONNX model or engine failed; carries every parser message."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        self.details = list(details or [])
        if self.details:
            message = f"{message}: " + "; ".join(self.details)
        super().__init__(message)


class SourceError(U2EdgeError):
    """A video source or sink cannot be opened or stopped delivering."""


class OutputError(U2EdgeError):
    """An output cannot be written (full disk, no permission); nothing partial is left."""
