"""Atomic file writes: an output is complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputError

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` (bytes or any buffer, such as a numpy array) to a temp file beside ``path``,
    then rename it into place."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        raise OutputError(f"cannot write {path}: {reason}; nothing was left behind") from exc
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
