"""The last graph step of a build: a precision graph becomes a TensorRT plan (``build_plan``) or,
without TensorRT, a CPU model (``cpu_model``). ``Target`` says what a plan is built for."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._deps import require
from ..cuda import device_identity
from ..errors import EngineBuildError
from ..onnxgraph import set_metadata
from ..precision import Precision
from ..trtcompat import TensorRT, make_logger
from .timing_cache import TimingCache

__all__ = ["Target", "Plan", "build_plan", "cpu_model"]


@dataclass(frozen=True)
class Target:
    """What a model is built for: a TensorRT (``trt``) and the GPU it runs on (``device``) or the
    compute capabilities it builds for without one (``targets``, TensorRT-RTX); no TensorRT: a CPU."""

    trt: TensorRT | None = None
    device: dict | None = None
    targets: list[str] | None = None

    @classmethod
    def of(cls, trt: TensorRT | None, targets: list[str] | None = None) -> "Target":
        """This machine's target for ``trt``: its GPU, or ``targets`` (default: all it knows) on TensorRT-RTX."""
        if trt is None:
            return cls()
        if not trt.has_compute_capabilities and targets:
            trt.set_targets(None, targets)  # raises: this TensorRT builds for its own GPU
        device = device_identity() if trt.flavour == "tensorrt" else None
        return cls(trt, device, (targets or trt.compute_capabilities()) if trt.has_compute_capabilities else None)

    def identity(self) -> dict:
        """Its part of an engine identity."""
        if self.trt is None:
            return {"tensorrt": None, "device": "cpu"}
        return {"tensorrt": self.trt.name, "device": self.device or {"targets": self.targets}}


@dataclass
class Plan:
    """A built model: a serialized TensorRT plan, or a CPU model's ONNX; and its I/O tensors
    (``{"name", "shape", "dtype"}``, -1 where dynamic)."""

    data: bytes
    inputs: list[dict]
    outputs: list[dict]


def build_plan(trt: TensorRT, graph, *, precision: Precision = Precision.FP32, profile: dict | None = None,
               targets: list[str] | None = None, workspace: float | None = None, opt_level: int | None = None,
               dla_core: int | None = None, gpu_fallback: bool = False, fp16_mode: str = "typed",
               timing_cache: TimingCache | None = None) -> Plan:
    """Build the ONNX ``graph`` (a ModelProto in ``precision``) with ``trt``.

    ``profile``: {"min", "opt", "max"} input shapes of a dynamic batch (None: the graph's static
    shape). ``fp16_mode`` "flag": an FP32 graph with BuilderFlag.FP16 instead of a typed FP16 one.
    Every parser and builder error is in the EngineBuildError.
    """
    module = trt.module
    logger = make_logger(trt)
    try:
        builder = module.Builder(logger)
    except TypeError as exc:  # the bindings return a null builder when CUDA cannot start
        raise EngineBuildError(lambda spell: f"{trt.name} cannot create a builder: no usable CUDA GPU or driver; "
                               f"without a GPU, build with TensorRT-RTX: {spell('tensorrt')} tensorrt_rtx "
                               f"{spell('targets')} sm86", logger.errors) from exc
    flag_path = precision is Precision.FP16 and fp16_mode == "flag"
    strongly_typed = trt.has_strongly_typed and not flag_path
    network = trt.create_network(builder, strongly_typed=strongly_typed)
    parser = module.OnnxParser(network, logger)
    if not parser.parse(graph.SerializeToString()):
        raise EngineBuildError(f"{trt.name} cannot parse the ONNX graph", trt.parser_errors(parser) or logger.errors)
    config = builder.create_builder_config()
    if precision is Precision.FP16 and not strongly_typed:
        # TensorRT 8.x parses the FP16 graph weakly typed and would pick FP32 kernels without the flag
        config.set_flag(module.BuilderFlag.FP16)
    elif precision is Precision.INT8 and not strongly_typed and trt.has_int8_flag:
        config.set_flag(module.BuilderFlag.INT8)  # TensorRT 8.x needs it to honour Q/DQ
    if targets:
        trt.set_targets(config, targets)
    if workspace:
        trt.set_workspace(config, workspace)
    if opt_level is not None:
        trt.set_opt_level(config, opt_level)
    if dla_core is not None:
        trt.use_dla(builder, config, dla_core, gpu_fallback)
    if profile:
        shapes = builder.create_optimization_profile()
        shapes.set_shape(network.get_input(0).name, profile["min"], profile["opt"], profile["max"])
        config.add_optimization_profile(shapes)
    if timing_cache is not None:
        timing_cache.load(trt, config)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = logger.errors or ["no error message from TensorRT"]
        if any(re.search(r"out of memory|insufficient memory|cudaErrorMemoryAllocation", e, re.I) for e in errors):
            raise EngineBuildError(lambda spell: f"{trt.name} ran out of memory building the engine; lower "
                                   f"{spell('workspace')}, use a smaller {spell('batch')} or {spell('dynamic_batch')} "
                                   "MAX, or close other GPU programs", errors)
        raise EngineBuildError(f"{trt.name} failed to build the engine", errors)
    if timing_cache is not None:
        timing_cache.save(trt, config)
    return Plan(bytes(plan), [_tensor(network.get_input(i)) for i in range(network.num_inputs)],
                [_tensor(network.get_output(i)) for i in range(network.num_outputs)])


def cpu_model(graph, precision: Precision) -> Plan:
    """The graph itself is the CPU model; its metadata names its precision for the runtime."""
    set_metadata(graph, {"u2edge.precision": precision.value})
    require("onnx").checker.check_model(graph)

    def info(value) -> dict:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        return {"name": value.name, "shape": dims, "dtype": "float"}

    return Plan(graph.SerializeToString(), [info(v) for v in graph.graph.input], [info(v) for v in graph.graph.output])


def _tensor(tensor) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1].lower()}
