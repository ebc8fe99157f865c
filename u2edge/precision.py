"""The ``Precision`` enum: one list of precisions for CLI choices, the graph transform, the build
config, the runtime's choice and the engine identity alike."""

from __future__ import annotations

import enum

__all__ = ["Precision", "BUILD_PRECISIONS", "RUNTIME_PRECISIONS"]


class Precision(str, enum.Enum):
    """Engines are built in FP32, FP16 or INT8 (``BUILD_PRECISIONS``). The runtime runs a model by
    name in FP32, BF16 or INT8, or lets ``AUTO`` pick the fastest that passes the accuracy gate
    (``RUNTIME_PRECISIONS``)."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @classmethod
    def parse(cls, value: "str | Precision", allowed: "tuple[Precision, ...]", what: str = "precision") -> "Precision":
        """``value`` as one of ``allowed``, or a U2EdgeError naming the parameter ``what`` and the choices."""
        from .errors import U2EdgeError

        try:
            precision = cls(value)
        except ValueError:
            precision = None
        if precision not in allowed:
            raise U2EdgeError(lambda spell: f"{spell(what)} {value!r} is not one of "
                                            f"{', '.join(p.value for p in allowed)}")
        return precision


BUILD_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.INT8)  # what u2edge build makes
RUNTIME_PRECISIONS = (Precision.AUTO, Precision.FP32, Precision.BF16, Precision.INT8)  # a model by name, on the CPU
