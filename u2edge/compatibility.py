"""Whether a plan can run here, judged from its sidecar before TensorRT sees it, and the
``u2edge build`` command that makes it again when it cannot.

Plans do not move between TensorRT versions or GPUs, and a truncated or replaced plan must not
reach the deserializer. A plan without a sidecar (from trtexec) cannot be checked here.
"""

from __future__ import annotations

import hashlib
import os
import shlex

from .errors import IncompatibleEngineError
from .sidecar import Sidecar

__all__ = ["check_engine", "check_device", "rebuild_command"]


def rebuild_command(engine: str | os.PathLike, sidecar: Sidecar | None) -> str:
    """The ``u2edge build`` command that makes ``engine`` again, on this machine, from its sidecar."""
    opts = (sidecar.build_options if sidecar else None) or {}
    precision = opts.get("precision") or (sidecar.precision if sidecar else None) or "fp16"
    parts = ["u2edge", "build", "--precision", precision]
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


def check_engine(engine: str | os.PathLike, plan: bytes, sidecar: Sidecar | None, trt_name: str) -> None:
    """Refuse a plan that cannot run here: truncated or altered (against its sidecar), or built by
    another TensorRT. Each error ends with the command that rebuilds it."""
    if sidecar is None:
        return
    fix = f"rebuild it here: {rebuild_command(engine, sidecar)}"
    expected = sidecar.engine_bytes
    if expected is not None and len(plan) != expected:
        raise IncompatibleEngineError(f"{engine} is truncated or was replaced: {len(plan)} bytes where its sidecar "
                                      f"says {expected}; {fix}")
    if sidecar.engine_sha256 and hashlib.sha256(plan).hexdigest() != sidecar.engine_sha256:
        raise IncompatibleEngineError(f"{engine} does not match its sidecar (sha256 differs); {fix}")
    built = sidecar.tensorrt or {}
    built_name = f"{built.get('flavour')} {built.get('version')}"
    if built and built_name != trt_name:
        raise IncompatibleEngineError(f"{engine} was built with {built_name} and this machine has {trt_name}; "
                                      f"plans do not move between TensorRT versions: {fix}")


def check_device(engine: str | os.PathLike, sidecar: Sidecar | None, device: dict) -> None:
    """Refuse a plan built for another GPU, or for compute capabilities that exclude this one."""
    if sidecar is None:
        return
    fix = f"rebuild it here: {rebuild_command(engine, sidecar)}"
    here = f"sm{str(device.get('compute_capability') or '').replace('.', '')}"
    if sidecar.targets:
        if device.get("compute_capability") and here not in sidecar.targets:
            raise IncompatibleEngineError(f"{engine} was built for {', '.join(sidecar.targets)} and this GPU "
                                          f"({device['gpu']}) is {here}; {fix}")
        return
    built_on = sidecar.device or {}
    if built_on and built_on.get("gpu") != device.get("gpu"):
        raise IncompatibleEngineError(f"{engine} was built for {built_on.get('gpu')} and this GPU is "
                                      f"{device.get('gpu')}; plans do not move between GPUs: {fix}")
