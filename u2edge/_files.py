"""Atomic file writes and file locks: an output is complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import OutputError

__all__ = ["write_bytes_atomic", "partial_file", "temp_folder", "default_mode", "output_folder", "write_failure",
           "locked", "NO_ROOM"]


def write_bytes_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` (bytes or any buffer, such as a numpy array) to a temp file beside ``path``,
    flush it to disk, then rename it into place. Whatever goes wrong, even Ctrl-C, the temp file
    is removed; an OSError becomes one OutputError line."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = partial_file(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a power cut (common on a Jetson) must not leave an empty file
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {write_failure(exc)}; nothing was left behind") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def partial_file(path: Path, suffix: str = "") -> tuple[int, str]:
    """A new temp file beside ``path`` with the usual mode, open for writing: (fd, its path), named
    ``.NAME.PID.XXXXXXXX.partial`` + ``suffix``. The first time a process writes into a folder, the
    temp files there that processes no longer running left (killed with -9, which no ``finally``
    survives) are removed, so a rerun after a crash leaves nothing behind."""
    _sweep(path.parent, r"\..+\.(\d+)\.[a-z0-9_]{8}\.partial", os.unlink)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial" + suffix, dir=path.parent)
    try:
        os.fchmod(fd, default_mode())  # mkstemp makes 0600; give the usual mode
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


@contextlib.contextmanager
def temp_folder(prefix: str) -> Iterator[Path]:
    """A private temp folder (removed at the end) named ``PREFIX-PID-XXXXXXXX``; the first time a
    process asks for one, those that processes no longer running left behind are removed."""
    _sweep(Path(tempfile.gettempdir()), rf"{re.escape(prefix)}-(\d+)-", shutil.rmtree)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-{os.getpid()}-") as folder:
        yield Path(folder)


_swept: set[tuple[str, str]] = set()  # (folder, pattern) already swept by this process: once is enough


def _sweep(folder: Path, pattern: str, remove: Callable[[Path], None]) -> None:
    """Remove the entries of ``folder`` matching ``pattern`` (its group 1 a process id) whose process
    no longer runs; once per process, so that writing many files into one folder lists it once."""
    key = (os.fspath(folder), pattern)
    if key in _swept:
        return
    _swept.add(key)
    regex = re.compile(pattern)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = regex.match(name)
        if match and not _running(int(match.group(1))):
            with contextlib.suppress(OSError):
                remove(folder / name)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EFBIG: "the file size limit (ulimit -f) is reached"}
"""The errors of a write that found no room, in the words a user acts on."""


def write_failure(exc: OSError) -> str:
    """Why a write failed, in the words a user acts on: "the disk is full", else the system's."""
    return NO_ROOM.get(exc.errno) or exc.strerror or str(exc)


def output_folder(folder: Path, label: str, hint: str) -> Path:
    """Create ``folder`` (and its parents) for outputs; one ``OutputError`` line if it cannot be."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{label} {folder} is a file; {hint}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {label} {folder}: {write_failure(exc)}") from exc
    return folder


def default_mode() -> int:
    """The mode a new file gets from open() under this process's umask, as it is now.

    os.umask can only read the umask by setting it, and a umask of 0 for a moment gives every
    file another thread creates meanwhile mode 0666; so it is read from /proc, or from a new file.
    """
    umask = _proc_umask()
    return 0o666 & ~umask if umask is not None else _probe_mode()


def _proc_umask() -> int | None:
    """The umask line of /proc/self/status (Linux 4.7 and newer), else None."""
    try:
        with open("/proc/self/status", "rb") as status:  # bytes: the Name line may be in any encoding
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _probe_mode() -> int:
    """The mode open() gives a new file in a private temp folder; 0644 if none can be made."""
    try:
        folder = tempfile.mkdtemp(prefix=".u2edge-mode-")
    except OSError:
        return 0o644
    try:
        probe = os.path.join(folder, "probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        return stat.S_IMODE(os.stat(probe).st_mode)
    except OSError:
        return 0o644
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def locked(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for the block; other processes asking for it
    wait (``waiting`` is called once first). The kernel drops the lock when its holder dies, even
    by kill -9. The holder removes the file while it still holds the lock, so nothing is left
    beside the results; a waiter then finds its file gone or replaced and locks the new one."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"cannot create the lock {path}: {write_failure(exc)}") from exc
        try:
            if not _try_lock(fd):
                if waiting is not None:
                    waiting()
                    waiting = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            held = _same_file(fd, path)
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"cannot lock {path}: {exc.strerror}") from exc
        except BaseException:  # Ctrl-C while waiting
            os.close(fd)
            raise
        if held:
            break
        os.close(fd)  # the holder we waited for removed this file: lock the one there now
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
