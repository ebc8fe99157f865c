"""Every TensorRT version difference in one place.

Accepts ``tensorrt`` (8.5, 8.6 on JetPack; 10.x; 11.x) and ``tensorrt_rtx``. Features are detected
with ``hasattr``, never by comparing version strings, and errors name the installed version.
Classes that subclass TensorRT interfaces are made inside factory functions, so importing this
module never needs TensorRT.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from .errors import EngineBuildError, MissingDependencyError

__all__ = ["TensorRT", "load", "make_logger", "installed"]

_INSTALL = (
    "install TensorRT: desktop 'pip install tensorrt' (or 'pip install tensorrt-rtx-cu13' for TensorRT-RTX, "
    "which also builds without a GPU); Jetson 'sudo apt install python3-libnvinfer' (part of JetPack)"
)


@dataclass(frozen=True)
class TensorRT:
    """The loaded TensorRT module and what it can do."""

    module: ModuleType
    flavour: str  # "tensorrt" or "tensorrt_rtx"

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    @property
    def name(self) -> str:
        return f"{self.flavour} {self.version}"

    @property
    def has_fp16_flag(self) -> bool:
        """TensorRT 8.5-10.x; removed in 11 and absent in TensorRT-RTX (precision is in the graph)."""
        return hasattr(self.module.BuilderFlag, "FP16")

    @property
    def has_int8_flag(self) -> bool:
        return hasattr(self.module.BuilderFlag, "INT8")

    @property
    def has_strongly_typed(self) -> bool:
        return hasattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")

    @property
    def has_compute_capabilities(self) -> bool:
        """Ahead-of-time targets by compute capability (TensorRT-RTX): builds need no GPU."""
        return hasattr(self.module, "ComputeCapability") and hasattr(self.module.IBuilderConfig,
                                                                     "set_compute_capability")

    @property
    def has_timing_cache(self) -> bool:
        # TensorRT-RTX keeps the API but documents timing-cache operations as no-ops
        return hasattr(self.module.IBuilderConfig, "create_timing_cache") and self.flavour != "tensorrt_rtx"

    def combine_timing_caches(self, ours, theirs) -> bool:
        """Merge the ITimingCache ``theirs`` into ``ours``, entries of another device or version
        included (``ignore_mismatch``, as Polygraphy does); False where this TensorRT cannot."""
        if not hasattr(ours, "combine"):
            return False
        return bool(ours.combine(theirs, True))

    def compute_capabilities(self) -> list[str]:
        """Target names this TensorRT-RTX knows, such as 'sm86'."""
        if not self.has_compute_capabilities:
            return []
        return sorted(n.lower() for n in dir(self.module.ComputeCapability) if n.startswith("SM"))

    def create_network(self, builder, *, strongly_typed: bool):
        trt = self.module
        flags = 0
        if strongly_typed:
            if not self.has_strongly_typed:
                raise EngineBuildError(lambda spell: f"{self.name} cannot build strongly typed networks; use the "
                                       f"FP16/INT8 builder flags ({spell('fp16_mode')} flag) or TensorRT >= 10")
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # required before 10
        return builder.create_network(flags)

    def set_workspace(self, config, gib: float) -> None:
        trt = self.module
        size = int(gib * (1 << 30))
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
        else:  # before 8.4
            config.max_workspace_size = size

    def set_opt_level(self, config, level: int) -> None:
        if not hasattr(config, "builder_optimization_level"):
            raise EngineBuildError(lambda spell: f"{spell('opt_level')} needs TensorRT >= 8.6; {self.name} has no "
                                   "optimization levels")
        config.builder_optimization_level = level

    def set_targets(self, config, targets: list[str]) -> None:
        if not self.has_compute_capabilities:
            raise EngineBuildError(lambda spell: f"{spell('targets')} needs TensorRT-RTX; {self.name} builds for the "
                                   "GPU it runs on")
        known = self.compute_capabilities()
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise EngineBuildError(lambda spell: f"unknown {spell('targets')} {', '.join(unknown)}; {self.name} knows "
                                   f"{', '.join(known)}")
        config.num_compute_capabilities = len(targets)
        for index, target in enumerate(targets):
            config.set_compute_capability(getattr(self.module.ComputeCapability, target.upper()), index)

    def use_dla(self, builder, config, core: int, gpu_fallback: bool) -> None:
        trt = self.module
        cores = getattr(builder, "num_DLA_cores", 0)
        if cores == 0:
            raise EngineBuildError(lambda spell: f"{spell('dla_core')} {core} asked for, but this machine has no DLA "
                                   f"(a Jetson Xavier/Orin unit); drop {spell('dla_core')}")
        if not 0 <= core < cores:
            raise EngineBuildError(lambda spell: f"{spell('dla_core')} {core} does not exist; this device has DLA "
                                   f"cores 0..{cores - 1}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = core
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    def io_tensors(self, engine) -> list[dict]:
        """Name, direction, shape (-1 where dynamic), dtype and profile-0 shapes of every I/O tensor
        (the name-based API of TensorRT >= 8.5 and TensorRT-RTX; bindings by index are gone in 10)."""
        trt = self.module
        if not hasattr(engine, "num_io_tensors"):
            raise MissingDependencyError(f"{self.name} lacks the tensor-name API; u2edge needs TensorRT >= 8.5")
        tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = [int(d) for d in engine.get_tensor_shape(name)]
            profile = None
            if is_input and -1 in shape:
                profile = [[int(d) for d in dims] for dims in engine.get_tensor_profile_shape(name, 0)]
            tensors.append({"name": name, "input": is_input, "shape": shape, "profile": profile,
                            "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower()})
        return tensors

    def parser_errors(self, parser) -> list[str]:
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            desc = error.desc() if hasattr(error, "desc") else str(error)
            where = [f"node {error.node()}"] if hasattr(error, "node") and error.node() >= 0 else []
            for attr in ("node_operator", "node_name"):  # TensorRT 10 and later
                if hasattr(error, attr) and getattr(error, attr)():
                    where.append(getattr(error, attr)())
            errors.append(f"{' '.join(where)}: {desc}" if where else str(desc))
        return errors


def load(prefer: str | None = None) -> TensorRT:
    """Import ``tensorrt`` (or, failing that, ``tensorrt_rtx``), or say how to install one."""
    order = [prefer] if prefer else ["tensorrt", "tensorrt_rtx"]
    problems = []
    for flavour in order:
        try:
            return TensorRT(importlib.import_module(flavour), flavour)
        except ImportError as exc:
            problems.append(f"{flavour}: {exc}")
    raise MissingDependencyError(f"TensorRT is not importable ({'; '.join(problems)}); {_INSTALL}")


def installed() -> bool:
    """Whether tensorrt or tensorrt_rtx is installed (checked without importing it)."""
    from ._deps import available

    return available("tensorrt") or available("tensorrt_rtx")


def make_logger(trt: TensorRT):
    """A TensorRT logger that keeps errors for the final message and passes warnings to logging."""
    import logging

    log = logging.getLogger("u2edge")
    module = trt.module

    class Logger(module.ILogger):
        def __init__(self) -> None:
            module.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in (module.ILogger.Severity.INTERNAL_ERROR, module.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.debug("%s: %s", trt.flavour, msg)
            elif severity == module.ILogger.Severity.WARNING:
                log.debug("%s warning: %s", trt.flavour, msg)

    return Logger()
