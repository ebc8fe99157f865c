"""Engine metadata: the ``Precision`` enum, engine identity, and the sidecar JSON beside a plan.

A plan file stays pure (trtexec and Triton load it as is); everything u2edge knows about it lives
in ``model.engine.json``: identity, preprocessing, I/O, build options and the accuracy report.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from pathlib import Path

from ._files import write_bytes_atomic

__all__ = ["Precision", "identity_hash", "sidecar_path", "read_sidecar", "write_sidecar"]


class Precision(str, enum.Enum):
    """Drives CLI choices, the graph transform, the build config and the identity alike."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


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
