"""INT8 by explicit Q/DQ in the ONNX graph: calibrate once, then quantize any subset of convs.

Scheme (what TensorRT's strongly typed networks and TensorRT-RTX expect): symmetric signed INT8,
per-tensor activation scales, per-channel weight scales, biases left in float. The fused tail
(side convs, outconv, Sigmoid) is never quantized. For CPU runtimes (OpenVINO), activations that
can never be negative (ReLU outputs, and pools, resizes and concatenations of them) are unsigned
INT8 with zero point 0 instead: twice the resolution, and the form OpenVINO's INT8 kernels run
correctly (with signed activations its CPU plugin gave masks at IoU 0.12 where ONNX Runtime's
simulation of the same graph gave 0.95). ``precision.to_int8`` then leaves the one conv with a
signed input, the first, in float.

Measured on U2-NetP: activation ranges must not be clipped (entropy and percentile thresholds
destroy the masks, because the large activations carry the salient signal), and giving each
branch of a concatenation its own scale gains nothing. What hurts is a few convs whose input range
is dominated by rare large values; ``precision.to_int8`` finds and keeps those in float.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import numpy as np

from .._deps import require

__all__ = ["CALIB_METHODS", "conv_nodes", "tail_convs", "nonnegative_inputs", "calibrate", "quantize"]

CALIB_METHODS = ("minmax", "entropy", "percentile")


def conv_nodes(proto) -> list:
    return [n for n in proto.graph.node if n.op_type == "Conv"]


def tail_convs(proto) -> set[str]:
    """The fused tail: the six side convs and outconv, the last seven convs of a U-2-Net graph."""
    return {n.name for n in conv_nodes(proto)[-7:]}


# ops whose output is non-negative when every data input is (Resize: bilinear weights are convex;
# Add: U-2-Net's residual sum of two ReLU outputs)
_KEEPS_SIGN = {"MaxPool", "Resize", "Upsample", "Concat", "Add", "Identity"}


def nonnegative_inputs(proto) -> set[str]:
    """Conv inputs that are non-negative by construction: ReLU outputs, and what pooling,
    resizing, concatenation and sums make of them (all but the first conv's, in U-2-Net)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    inits = {t.name for t in proto.graph.initializer}
    memo: dict[str, bool] = {}

    def nonneg(name: str) -> bool:
        if name not in memo:
            node = producer.get(name)
            if node is None:
                memo[name] = False
            elif node.op_type in ("Relu", "Sigmoid"):
                memo[name] = True
            elif node.op_type in _KEEPS_SIGN:
                data = node.input[:1] if node.op_type in ("Resize", "Upsample") else node.input
                memo[name] = all(nonneg(i) for i in data if i and i not in inits)
            else:
                memo[name] = False
        return memo[name]

    return {n.input[0] for n in conv_nodes(proto) if nonneg(n.input[0])}


def calibrate(proto, batches: Iterable[np.ndarray], method: str = "minmax",
              progress: Callable[[int], None] | None = None, samples_per_tensor: int = 65536) -> dict[str, float]:
    """Run the FP32 graph on real preprocessed images; return each conv input's amax (|x| range).

    ``batches`` yields (1, 3, S, S) float32 network inputs. Each conv input's exact max is kept,
    and a fixed-size random sample of its |values| for the percentile and entropy methods:
    "minmax" is the max, "percentile" the 99.99th percentile, "entropy" the threshold that
    minimises the KL divergence between the value histogram and its INT8 version (TensorRT's
    classic calibrator).
    """
    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
    ort = require("onnxruntime")
    augmented = copy.deepcopy(proto)
    targets = list(dict.fromkeys(n.input[0] for n in conv_nodes(augmented)))
    known = {o.name for o in augmented.graph.output}
    for name in targets:
        if name not in known:
            augmented.graph.output.add().name = name
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = augmented.graph.input[0].name
    rng = np.random.default_rng(0)
    peaks = dict.fromkeys(targets, 0.0)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in targets}
    count = 0
    for batch in batches:
        outputs = session.run(targets, {input_name: batch})
        for name, value in zip(targets, outputs):
            flat = np.abs(value).ravel()
            peaks[name] = max(peaks[name], float(flat.max()))
            if method != "minmax":
                take = min(samples_per_tensor, flat.size)
                samples[name].append(rng.choice(flat, take, replace=False) if take < flat.size else flat)
        count += 1
        if progress:
            progress(count)
    if count == 0:
        raise ValueError("no calibration images")
    if method == "minmax":
        return peaks
    amax = {}
    for name in targets:
        values = np.concatenate(samples[name])
        if method == "percentile":
            amax[name] = float(np.percentile(values, 99.99))
        else:
            amax[name] = _kl_threshold(values, peaks[name])
    return amax


def _kl_threshold(values: np.ndarray, peak: float, bins: int = 2048, levels: int = 128) -> float:
    """The |x| clipping threshold whose 128-level quantized histogram is closest (KL) to the data."""
    if peak <= 0:
        return 0.0
    hist, edges = np.histogram(values, bins=bins, range=(0.0, peak))
    hist = hist.astype(np.float64)
    best, best_kl = peak, np.inf
    for stop in range(levels, bins + 1, 16):
        ref = hist[:stop].copy()
        ref[stop - 1] += hist[stop:].sum()  # clipped values land in the last bin
        # quantize the first `stop` bins into `levels` buckets, spread each bucket over its non-empty bins
        chunks = np.array_split(np.arange(stop), levels)
        cand = np.zeros(stop)
        for idx in chunks:
            nonzero = hist[idx] > 0
            if nonzero.any():
                cand[idx[nonzero]] = hist[idx].sum() / nonzero.sum()
        p = ref / ref.sum()
        q = cand / max(cand.sum(), 1e-12)
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best, best_kl = float(edges[stop]), kl
    return best


def quantize(proto, ranges: dict[str, float], keep_float: Iterable[str] = (), unsigned: Iterable[str] = ()):
    """A copy of ``proto`` whose convs (except the tail and ``keep_float``) run in INT8 via Q/DQ.

    Activations named in ``unsigned`` (see ``nonnegative_inputs``) are UINT8 with zero point 0.
    """
    onnx = require("onnx")
    from onnx import helper, numpy_helper

    proto = copy.deepcopy(proto)
    graph = proto.graph
    skip = tail_convs(proto) | set(keep_float)
    unsigned = set(unsigned)
    inits = {t.name: t for t in graph.initializer}
    qdq_of: dict[str, str] = {}  # activation tensor -> its dequantized copy
    new_inits, nodes = [], []
    for node in graph.node:
        if node.op_type != "Conv" or node.name in skip or node.input[0] not in ranges:
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in qdq_of:
            levels, zero_type = (255.0, np.uint8) if x in unsigned else (127.0, np.int8)
            s_name, z_name = f"{x}_scale", f"{x}_zero"
            new_inits += [numpy_helper.from_array(np.array(max(ranges[x], 1e-8) / levels, np.float32), s_name),
                          numpy_helper.from_array(np.array(0, zero_type), z_name)]
            nodes += [helper.make_node("QuantizeLinear", [x, s_name, z_name], [f"{x}_q"], name=f"{x}_quantize"),
                      helper.make_node("DequantizeLinear", [f"{x}_q", s_name, z_name], [f"{x}_dq"],
                                       name=f"{x}_dequantize")]
            qdq_of[x] = f"{x}_dq"
        weight = numpy_helper.to_array(inits[node.input[1]])
        amax = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
        w_scale = (np.maximum(amax, 1e-8) / 127.0).astype(np.float32)
        w_int8 = np.clip(np.rint(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
        w_name = f"{node.input[1]}_int8"
        new_inits += [numpy_helper.from_array(w_int8, w_name),
                      numpy_helper.from_array(w_scale, f"{w_name}_scale"),
                      numpy_helper.from_array(np.zeros(weight.shape[0], np.int8), f"{w_name}_zero")]
        dq = helper.make_node("DequantizeLinear", [w_name, f"{w_name}_scale", f"{w_name}_zero"], [f"{w_name}_dq"],
                              name=f"{w_name}_dequantize", axis=0)
        nodes.append(dq)
        node.input[0], node.input[1] = qdq_of[x], f"{w_name}_dq"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(proto)
    return proto
