"""Engine metadata: the ``Precision`` enum, engine identity, and the sidecar JSON beside a plan.

A plan file stays pure (trtexec and Triton load it as is); everything u2edge knows about it lives
in ``model.engine.json``: identity, preprocessing, I/O, build options and the accuracy report.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shlex
from pathlib import Path

from ._files import write_bytes_atomic

__all__ = ["Precision", "BUILD_PRECISIONS", "RUNTIME_PRECISIONS", "identity_hash", "sidecar_path", "read_sidecar",
           "write_sidecar", "rebuild_command", "check_engine", "check_device"]


class Precision(str, enum.Enum):
    """Drives CLI choices, the graph transform, the build config and the identity alike.

    Engines are built in FP32, FP16 or INT8 (``BUILD_PRECISIONS``). The runtime runs a model by name in FP32,
    BF16 or INT8, or lets ``AUTO`` pick the fastest that passes the accuracy gate (``RUNTIME_PRECISIONS``).
    """

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @classmethod
    def parse(cls, value: "str | Precision", allowed: "tuple[Precision, ...]", what: str = "precision") -> "Precision":
        """``value`` as one of ``allowed``, or a U2EdgeError naming the choices."""
        from .errors import U2EdgeError

        try:
            precision = cls(value)
        except ValueError:
            precision = None
        if precision not in allowed:
            raise U2EdgeError(f"{what} {value!r} is not one of {', '.join(p.value for p in allowed)}")
        return precision


BUILD_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.INT8)  # what u2edge build makes
RUNTIME_PRECISIONS = (Precision.AUTO, Precision.FP32, Precision.BF16, Precision.INT8)  # a model by name, on the CPU


def identity_hash(inputs: dict) -> str:
    """A short, stable hash of everything that determines an engine's content."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sidecar_path(engine: str | os.PathLike) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | os.PathLike) -> dict | None:
    """The sidecar of ``engine``, or None when it is missing or unreadable (an unknown engine)."""
    try:
        with open(sidecar_path(engine)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_sidecar(engine: str | os.PathLike, data: dict) -> Path:
    return write_bytes_atomic(sidecar_path(engine), (json.dumps(data, indent=2, default=str) + "\n").encode())


def rebuild_command(engine: str | os.PathLike, sidecar: dict | None) -> str:
    """The ``u2edge build`` command that makes ``engine`` again, on this machine, from its sidecar."""
    opts = (sidecar or {}).get("build_options") or {}
    parts = ["u2edge", "build", "--precision", opts.get("precision", (sidecar or {}).get("precision", "fp16"))]
    if opts.get("arch", "u2netp") != "u2netp":
        parts += ["--model", opts["arch"]]
    for key, flag in (("weights", "--weights"), ("onnx", "--onnx"), ("calib_dir", "--calib-dir"),
                      ("dla_core", "--dla-core")):
        if opts.get(key) is not None:
            parts += [flag, str(opts[key])]
    if opts.get("imgsz", 320) != 320:
        parts += ["--imgsz", str(opts["imgsz"])]
    if opts.get("dynamic_batch"):
        parts += ["--dynamic-batch", ":".join(str(n) for n in opts["dynamic_batch"])]
    elif opts.get("batch", 1) != 1:
        parts += ["--batch", str(opts["batch"])]
    if opts.get("fp16_mode", "typed") != "typed":
        parts += ["--fp16-mode", opts["fp16_mode"]]
    if opts.get("gpu_fallback"):
        parts.append("--gpu-fallback")
    parts += ["-o", os.fspath(engine), "--force"]
    return " ".join(shlex.quote(p) for p in parts)


def check_engine(engine: str | os.PathLike, plan: bytes, sidecar: dict | None, trt_name: str) -> None:
    """Refuse a plan that cannot run here, before TensorRT sees it: truncated or altered (against
    its sidecar), or built by another TensorRT. Each error ends with the command that rebuilds it.
    Without a sidecar (a plan from trtexec) nothing can be checked here."""
    from .errors import IncompatibleEngineError

    if sidecar is None:
        return
    fix = f"rebuild it here: {rebuild_command(engine, sidecar)}"
    expected = sidecar.get("engine_bytes")
    if expected is not None and len(plan) != expected:
        raise IncompatibleEngineError(f"{engine} is truncated or was replaced: {len(plan)} bytes where its sidecar "
                                      f"says {expected}; {fix}")
    if sidecar.get("engine_sha256") and hashlib.sha256(plan).hexdigest() != sidecar["engine_sha256"]:
        raise IncompatibleEngineError(f"{engine} does not match its sidecar (sha256 differs); {fix}")
    built = sidecar.get("tensorrt") or {}
    built_name = f"{built.get('flavour')} {built.get('version')}"
    if built and built_name != trt_name:
        raise IncompatibleEngineError(f"{engine} was built with {built_name} and this machine has {trt_name}; "
                                      f"plans do not move between TensorRT versions: {fix}")


def check_device(engine: str | os.PathLike, sidecar: dict | None, device: dict) -> None:
    """Refuse a plan built for another GPU, or for compute capabilities that exclude this one."""
    from .errors import IncompatibleEngineError

    if sidecar is None:
        return
    fix = f"rebuild it here: {rebuild_command(engine, sidecar)}"
    here = f"sm{str(device.get('compute_capability') or '').replace('.', '')}"
    targets = sidecar.get("targets")
    if targets:
        if device.get("compute_capability") and here not in targets:
            raise IncompatibleEngineError(f"{engine} was built for {', '.join(targets)} and this GPU "
                                          f"({device['gpu']}) is {here}; {fix}")
        return
    built_on = sidecar.get("device") or {}
    if built_on and built_on.get("gpu") != device.get("gpu"):
        raise IncompatibleEngineError(f"{engine} was built for {built_on.get('gpu')} and this GPU is "
                                      f"{device.get('gpu')}; plans do not move between GPUs: {fix}")
