"""``identity_hash``: the identity of a built model, a short hash of everything that determines it.

The same inputs give the same identity on every machine and run, so an identical build is reused
and any change (weights, TensorRT, GPU, precision, shapes, calibration data) makes a new one.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["identity_hash"]


def identity_hash(inputs: dict) -> str:
    """A short, stable hash of ``inputs`` (JSON with sorted keys; other values by their str)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]
