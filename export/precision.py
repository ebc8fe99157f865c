"""Precision is decided in the ONNX graph, and measured before anything is built.

FP16 is an FP16 graph (inputs and outputs kept FP32); INT8 is explicit Q/DQ calibrated on the
user's images. Both are compared with the FP32 graph under ONNX Runtime on held-out images
(never the calibration ones): mean MAE over all of them, and min mask IoU (at 0.5) over those
whose FP32 mask has a subject (at least 1% of the pixels). On a texture with no subject the
mask is a few stray pixels, and their IoU says nothing about accuracy.

INT8 follows a gate. If quantizing every conv (but the fused tail) misses it, a sensitivity pass
quantizes one conv at a time and ranks the convs by the damage each does alone; the most damaging
then stay in float, a few more at a time, until the gate passes or too many would be needed.

``precision_graph`` is the build's step: the FP32 graph in; the graph in the asked precision and
its accuracy report out.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import EngineBuildError, U2EdgeError
from ..images import read_image
from ..metrics import agreement
from ..precision import Precision
from ..processing import Preprocessing, postprocess, preprocess
from ..qdq import layer_names
from . import quantize

__all__ = ["Gate", "Accuracy", "Evaluator", "PrecisionGraph", "precision_graph", "to_fp16", "to_int8", "conv_macs",
           "require_gate"]

log = logging.getLogger("u2edge")

# how many of the most sensitive convs to keep in float at each step of the INT8 search
_KEEP_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32)


@dataclass(frozen=True)
class Gate:
    min_iou: float = 0.97
    max_mae: float = 0.01

    def passes(self, accuracy: "Accuracy") -> bool:
        return accuracy.min_iou >= self.min_iou and accuracy.mean_mae <= self.max_mae


@dataclass
class Accuracy:
    """Masks of a candidate graph against the FP32 graph's masks on held-out images."""

    min_iou: float  # over images with a subject
    mean_mae: float  # over all images
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)

    def line(self) -> str:
        return f"min IoU {self.min_iou:.4f}, mean MAE {self.mean_mae:.4f}"


class Evaluator:
    """Runs graphs on held-out frames with ONNX Runtime (CPU) and scores them against FP32."""

    def __init__(self, fp32, frames: dict[str, np.ndarray], spec: Preprocessing) -> None:
        self.frames = frames
        self.inputs = {name: preprocess(frame, spec)[None] for name, frame in frames.items()}
        self.reference = self.masks(fp32)

    def masks(self, proto, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        out = {}
        for name in names or list(self.frames):
            pred = session.run(None, {input_name: self.inputs[name]})[0][0, 0]
            out[name] = postprocess(pred, *self.frames[name].shape[:2])
        return out

    def score(self, proto, names: Sequence[str] | None = None) -> Accuracy:
        per_image = {name: agreement(mask, self.reference[name]) for name, mask in self.masks(proto, names).items()}
        ious = [v["iou"] for v in per_image.values() if v["subject"]]
        return Accuracy(min(ious, default=1.0), float(np.mean([v["mae"] for v in per_image.values()])), per_image)


def to_fp16(fp32, evaluator: Evaluator | None):
    """(FP16 graph, accuracy or None, note). The fused tail stays FP32 only if that measurably helps."""
    plain = _convert_fp16(fp32, keep=())
    if evaluator is None:
        return plain, None, "accuracy not measured: no held-out images to measure FP16 against FP32"
    tail = [n.name for n in fp32.graph.node if n.op_type == "Sigmoid"] + sorted(quantize.tail_convs(fp32))
    with_tail = _convert_fp16(fp32, keep=tail)
    plain_acc, tail_acc = evaluator.score(plain), evaluator.score(with_tail)
    if tail_acc.mean_mae < 0.9 * plain_acc.mean_mae:
        return with_tail, tail_acc, f"fused tail kept in FP32 (all-FP16 would give {plain_acc.line()})"
    return plain, plain_acc, f"all FP16 (an FP32 tail would give {tail_acc.line()}, no better)"


def _convert_fp16(fp32, keep: Sequence[str]):
    float16 = require("onnxconverter_common.float16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight it rounds to the FP16 range
        return float16.convert_float_to_float16(copy.deepcopy(fp32), keep_io_types=True,
                                                node_block_list=list(keep) or None)


def conv_macs(proto) -> dict[str, int]:
    """Multiply-accumulates of every conv node at the graph's input size, by node name."""
    onnx = require("onnx")
    inferred = onnx.shape_inference.infer_shapes(proto)
    dims = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dims[value.name] = shape
    inits = {t.name: list(t.dims) for t in proto.graph.initializer}
    macs = {}
    for node in quantize.conv_nodes(proto):
        out = dims.get(node.output[0])
        weight = inits.get(node.input[1])
        if out and weight and len(out) == 4:
            macs[node.name] = int(np.prod(weight) * out[2] * out[3])
    return macs


@dataclass
class Int8Result:
    proto: object
    accuracy: Accuracy
    naive: Accuracy  # every conv the scheme quantizes in INT8
    kept_float: list[str]  # model layer names
    int8_convs: int
    float_mac_fraction: float  # of all conv MACs, how much stays float beyond the tail
    sensitivity: dict[str, float]
    passed: bool

    def report(self) -> dict:
        out = asdict(self)
        out.pop("proto")
        out["accuracy"], out["naive"] = asdict(self.accuracy), asdict(self.naive)
        return out


def to_int8(fp32, calib_batches, evaluator: Evaluator, *, method: str = "minmax", gate: Gate = Gate(),
            search: bool = True, unsigned: bool = False,
            progress: Callable[[str, int, int], None] | None = None) -> Int8Result:
    """Calibrate on real images, quantize, and search for the float layers the gate needs.

    ``unsigned``: the CPU scheme. Non-negative activations are UINT8 instead of symmetric INT8, and
    only convs with such inputs are quantized: the first conv, fed by the signed image, stays
    float (under 1% of the MACs; on the scikit-image photos it lifts OpenVINO's min IoU from
    0.966 to 0.973 for 1.3 ms).
    """
    progress = progress or (lambda stage, done, total: None)
    calib_batches = list(calib_batches)
    ranges = quantize.calibrate(fp32, calib_batches, method,
                                progress=lambda n: progress("calibrating", n, len(calib_batches)))
    names = layer_names(fp32)
    macs = conv_macs(fp32)
    tail = quantize.tail_convs(fp32)
    positive = quantize.nonnegative_inputs(fp32) if unsigned else set()
    convs = [n for n in quantize.conv_nodes(fp32) if n.name not in tail and n.input[0] in ranges]
    fixed = [n.name for n in convs if n.input[0] not in positive] if unsigned else []  # always float
    candidates = [n.name for n in convs if n.name not in fixed]
    total_macs = sum(macs.values()) or 1

    def quantized(keep_float=()):
        return quantize.quantize(fp32, ranges, keep_float=fixed + list(keep_float), unsigned=positive)

    def result(keep: list[str], acc: Accuracy, naive: Accuracy, sens: dict[str, float], passed: bool):
        proto = quantized(keep)
        floats = fixed + keep
        return Int8Result(proto, acc, naive, [names.get(k, k) for k in floats], len(candidates) - len(keep),
                          round(sum(macs.get(k, 0) for k in floats) / total_macs, 4),
                          {names.get(k, k): v for k, v in sens.items()}, passed)

    naive = evaluator.score(quantized())
    log.info("INT8 with all %d quantizable convs in INT8: %s", len(candidates), naive.line())
    if gate.passes(naive) or not search:
        return result([], naive, naive, {}, gate.passes(naive))

    # sensitivity: the damage each conv does when it alone is INT8, on the hardest held-out images
    with_subject = [k for k, v in naive.per_image.items() if v["subject"]] or list(naive.per_image)
    hardest = sorted(with_subject, key=lambda k: naive.per_image[k]["iou"])[:3]
    sensitivity = {}
    for i, conv in enumerate(candidates):
        alone = evaluator.score(quantized([c for c in candidates if c != conv]),
                                hardest)
        sensitivity[conv] = round((1.0 - alone.min_iou) + 10.0 * alone.mean_mae, 6)
        progress("sensitivity", i + 1, len(candidates))
    order = sorted(candidates, key=lambda c: -sensitivity[c])
    top = dict((c, sensitivity[c]) for c in order[:_KEEP_STEPS[-1]])
    best = (naive, [])
    for step, k in enumerate(_KEEP_STEPS):
        keep = order[:k]
        acc = evaluator.score(quantized(keep))
        progress("gate search", step + 1, len(_KEEP_STEPS))
        log.debug("INT8 keeping %d convs float: %s", k, acc.line())
        if gate.passes(acc):
            return result(keep, acc, naive, top, True)
        if (acc.min_iou, -acc.mean_mae) > (best[0].min_iou, -best[0].mean_mae):
            best = (acc, keep)
    return result(best[1], best[0], naive, top, False)


def require_gate(kind: str, accuracy: Accuracy, gate: Gate, extra: str = "") -> None:
    """An EngineBuildError with the numbers when ``accuracy`` misses ``gate``."""
    if not gate.passes(accuracy):
        raise EngineBuildError(lambda spell: (
            f"{kind} misses the accuracy gate: {accuracy.line()} against FP32 on held-out images, needed "
            f"min IoU >= {gate.min_iou} and mean MAE <= {gate.max_mae}{extra}; use more or more varied "
            f"{spell('calib_dir')} images, another {spell('precision')}, or {spell('no_gate')} to build it anyway"))


@dataclass
class PrecisionGraph:
    proto: object  # the ONNX ModelProto
    accuracy: dict  # the sidecar's accuracy report


def precision_graph(fp32, precision: Precision, *, preprocessing: Preprocessing, calibration: Sequence[Path] = (),
                    held_out: Sequence[Path] = (), gate: Gate = Gate(), no_gate: bool = False,
                    calib_method: str = "minmax", fp16_mode: str = "typed", unsigned: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> PrecisionGraph:
    """The FP32 graph ``fp32`` in ``precision``, measured against it on the ``held_out`` images.

    FP16 (``fp16_mode`` "typed") is an FP16 graph; "flag" leaves the FP32 graph to BuilderFlag.FP16.
    INT8 is calibrated on the ``calibration`` images (``unsigned``: the CPU scheme). A graph that
    misses ``gate`` is an EngineBuildError, unless ``no_gate``. The result is never ``fp32`` itself.
    """
    evaluator = None
    if held_out:
        evaluator = Evaluator(fp32, {p.name: read_image(p) for p in held_out}, preprocessing)
    accuracy: dict = {"reference": "FP32 graph under ONNX Runtime (CPU)",
                      "held_out": [p.name for p in held_out], "calibration_images": len(calibration),
                      "gate": None if no_gate else asdict(gate)}
    if precision is Precision.FP16 and fp16_mode == "typed":
        graph, acc, note = to_fp16(fp32, evaluator)
        accuracy.update(measured=asdict(acc) if acc else None, note=note)
        if acc and not no_gate:
            require_gate("FP16", acc, gate)
        return PrecisionGraph(graph, accuracy)
    if precision is Precision.INT8:
        if evaluator is None or not calibration:
            raise U2EdgeError(lambda spell: f"INT8 needs {spell('calibration')} images and {spell('held_out')} "
                                            "images to measure it against FP32")
        batches = (preprocess(read_image(p), preprocessing)[None] for p in calibration)
        result = to_int8(fp32, batches, evaluator, method=calib_method, gate=gate, search=not no_gate,
                         unsigned=unsigned, progress=progress)
        accuracy.update(measured=asdict(result.accuracy), int8=result.report(), method=calib_method)
        if not no_gate and not result.passed:
            require_gate("INT8", result.accuracy, gate, f" (even with {len(result.kept_float)} convs kept in float; "
                                                        f"all-INT8 gave {result.naive.line()})")
        return PrecisionGraph(result.proto, accuracy)
    accuracy.update(measured=None, note="FP32 is the reference" if precision is Precision.FP32
                    else "FP16 by builder flag: TensorRT picks layer precisions, not measurable on the CPU")
    return PrecisionGraph(copy.deepcopy(fp32), accuracy)
