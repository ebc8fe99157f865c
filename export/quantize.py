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
from ..qdq import conv_nodes, nonnegative_inputs, quantize, tail_convs

__all__ = ["CALIB_METHODS", "conv_nodes", "tail_convs", "nonnegative_inputs", "calibrate", "quantize"]

CALIB_METHODS = ("minmax", "entropy", "percentile")


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
