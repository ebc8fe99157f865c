"""The u2edge error hierarchy.

Every message says what failed, what was received and how to fix it, in one line. The CLI
prints ``U2EdgeError`` as that line and exits 1; any other exception is a bug.
"""

from __future__ import annotations

from typing import Callable  # collections.abc.Callable cannot be subscripted on 3.8

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


Spell = Callable[[str], str]  # a parameter's Python name -> how the caller spells it


class U2EdgeError(Exception):
    """Base class of every error that a user can cause and fix.

    The library speaks in parameters: a message that names one is given as a function of
    ``spell`` and names it ``spell("calib_dir")``. ``str(error)`` reads "calib_dir", as a Python
    caller wrote it; the CLI renders ``error.message(flag)`` with its flag, "--calib-dir".

        raise U2EdgeError(lambda spell: f"{spell('calib_dir')} {folder} is not a folder")
    """

    def __init__(self, message: "str | Callable[[Spell], str]" = "", *args) -> None:
        self._message = message if callable(message) else None
        super().__init__(message(_python_name) if callable(message) else message, *args)

    def message(self, spell: Spell) -> str:
        """The message with each parameter named by ``spell`` (the CLI passes its flags)."""
        return self._message(spell) if self._message is not None else str(self)


def _python_name(name: str) -> str:
    return name


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

    def __init__(self, message: "str | Callable[[Spell], str]", details: list[str] | None = None) -> None:
        self.details = list(details or [])
        if self.details:
            head = message if callable(message) else (lambda spell, text=message: text)
            message = lambda spell: f"{head(spell)}: " + "; ".join(self.details)  # noqa: E731
        super().__init__(message)


class SourceError(U2EdgeError):
    """A video source or sink cannot be opened or stopped delivering."""


class OutputError(U2EdgeError):
    """An output cannot be written (full disk, no permission); nothing partial is left."""
