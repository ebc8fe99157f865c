"""``Sidecar``: what u2edge knows about a model file, in the JSON file beside it.

A plan stays pure (trtexec and Triton load it as is); its identity, preprocessing, I/O, build
options and accuracy report live in ``model.engine.json``. The CPU INT8 models in the user cache
have one too (``model.onnx.json``). ``Sidecar`` is the only reader and writer of these files.

A missing sidecar is an unknown model (a plan from trtexec): ``Sidecar.read`` returns None. A
corrupt one (not JSON, not an object, a field of the wrong type) is an error naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ._files import write_bytes_atomic
from .errors import IncompatibleEngineError

__all__ = ["Sidecar", "CorruptSidecarError", "ENGINE_FORMAT", "CPU_MODEL_FORMAT"]

ENGINE_FORMAT = "u2edge-engine-sidecar/1"  # u2edge build: a plan, or a CPU model named .onnx
CPU_MODEL_FORMAT = "u2edge-cpu-model/1"  # the CPU INT8 model made on first use (u2edge.cpu)
_FORMATS = (ENGINE_FORMAT, CPU_MODEL_FORMAT)


def _optional(*kinds: type):
    """A field that may be None (unknown, or not applicable); otherwise one of ``kinds`` in the JSON."""
    return field(default=None, metadata={"kinds": kinds})


@dataclass
class Sidecar:
    """The fields of a sidecar, in the order they are written. Unknown keys are ignored on reading."""

    format: str = ENGINE_FORMAT
    u2edge: str | None = _optional(str)  # the version that wrote it
    created: str | None = _optional(str)
    tensorrt: dict | None = _optional(dict)  # {"flavour", "version"} that built the plan; None: a CPU model
    device: dict | None = _optional(dict)  # {"gpu", "compute_capability"} a plan was built on
    targets: list | None = _optional(list)  # the compute capabilities a TensorRT-RTX plan was built for
    precision: str | None = _optional(str)
    arch: str | None = _optional(str)  # the model: u2netp, u2net
    source: str | None = _optional(str)  # the weights or ONNX it was built from
    source_sha256: str | None = _optional(str)
    params: str | None = _optional(str)  # the CPU INT8 quantization file it was made with
    preprocessing: dict | None = _optional(dict)  # Preprocessing.to_metadata()
    inputs: list | None = _optional(list)  # [{"name", "shape", "dtype"}]
    outputs: list | None = _optional(list)
    profile: dict | None = _optional(dict)  # {"min", "opt", "max"} input shapes
    build_options: dict | None = _optional(dict)  # BuildOptions' fields, for the rebuild command
    accuracy: dict | None = _optional(dict)
    build_seconds: float | None = _optional(int, float)
    total_seconds: float | None = _optional(int, float)
    engine_bytes: int | None = _optional(int)
    engine_sha256: str | None = _optional(str)
    identity: str | None = _optional(str)  # the hash of identity_inputs
    identity_inputs: dict | None = _optional(dict)

    @staticmethod
    def path_for(model: str | os.PathLike) -> Path:
        """``model.engine`` -> ``model.engine.json``."""
        model = Path(model)
        return model.with_name(model.name + ".json")

    @classmethod
    def read(cls, model: str | os.PathLike) -> "Sidecar | None":
        """The sidecar of ``model``; None when there is none. IncompatibleEngineError when it is corrupt."""
        path = cls.path_for(model)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptSidecarError(model, f"cannot read it: {exc.strerror}") from None
        try:
            data = json.loads(blob.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError too
            raise CorruptSidecarError(model, f"not JSON: {exc}") from None
        return cls.from_dict(data, model)

    @classmethod
    def from_dict(cls, data: object, model: str | os.PathLike = "model") -> "Sidecar":
        """Check the JSON of ``model``'s sidecar field by field."""
        if not isinstance(data, dict):
            raise CorruptSidecarError(model, f"a JSON {_json_name(data)}, not an object")
        if data.get("format") not in _FORMATS:
            raise CorruptSidecarError(model, f"format {data.get('format')!r} is not one of {', '.join(_FORMATS)}")
        values = {}
        for spec in fields(cls):
            value = data.get(spec.name)
            kinds = spec.metadata.get("kinds", (str,))
            if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
                expected = " or ".join(dict.fromkeys(_JSON_NAMES[k] for k in kinds))
                raise CorruptSidecarError(model, f"{spec.name} is a JSON {_json_name(value)}, not {expected}")
            values[spec.name] = value
        return cls(**values)

    def to_dict(self) -> dict:
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}

    def write(self, model: str | os.PathLike) -> Path:
        """Write ``model``'s sidecar atomically; returns its path."""
        blob = json.dumps(self.to_dict(), indent=2, default=str) + "\n"
        return write_bytes_atomic(self.path_for(model), blob.encode())


_JSON_NAMES = {str: "string", int: "number", float: "number", dict: "object", list: "array", bool: "boolean"}


def _json_name(value: object) -> str:
    return next((name for kind, name in reversed(_JSON_NAMES.items()) if isinstance(value, kind)), "value")


class CorruptSidecarError(IncompatibleEngineError):
    """A sidecar that is there but is not one: ``path`` names it and ``why`` says what is wrong."""

    def __init__(self, model: str | os.PathLike, why: str) -> None:
        model = Path(model)
        self.path, self.why = Sidecar.path_for(model), why
        super().__init__(f"the sidecar {self.path} is corrupt ({why}), so {model.name} cannot be checked; rebuild it "
                         f"(u2edge build ... -o {model} --force), or delete {self.path} to load it unchecked")
