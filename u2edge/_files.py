"""Atomic file writes: an output is complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputError

__all__ = ["write_bytes_atomic", "default_mode", "output_folder"]


def write_bytes_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` (bytes or any buffer, such as a numpy array) to a temp file beside ``path``,
    flush it to disk, then rename it into place. Whatever goes wrong, even Ctrl-C, the temp file
    is removed; an OSError becomes one OutputError line."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), default_mode())  # mkstemp makes 0600; give the usual mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a power cut (common on a Jetson) must not leave an empty file
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        raise OutputError(f"cannot write {path}: {reason}; nothing was left behind") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def output_folder(folder: Path, label: str, hint: str) -> Path:
    """Create ``folder`` (and its parents) for outputs; one ``OutputError`` line if it cannot be."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{label} {folder} is a file; {hint}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {label} {folder}: {exc.strerror}") from exc
    return folder


def default_mode() -> int:
    """The mode a new file gets from open() under this process's umask."""
    return 0o666 & ~_UMASK


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it
