"""The Q/DQ graph edit: INT8 convs by explicit QuantizeLinear/DequantizeLinear nodes.

The scheme is described in ``u2edge.export.quantize``, which calibrates the ranges. This part needs
only onnx, no images: the runtime uses it to make the CPU INT8 model from the official ONNX and the
ranges shipped with u2edge (``u2edge.cpu``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from ._deps import require
from .config import arch_of_conv_shapes, conv_layout

__all__ = ["conv_nodes", "tail_convs", "layer_names", "nonnegative_inputs", "quantize"]


def conv_nodes(proto) -> list:
    return [n for n in proto.graph.node if n.op_type == "Conv"]


def tail_convs(proto) -> set[str]:
    """The fused tail: the six side convs and outconv, the last seven convs of a U-2-Net graph."""
    return {n.name for n in conv_nodes(proto)[-7:]}


def layer_names(proto) -> dict[str, str]:
    """ONNX conv node name -> the model's layer name (stage2d.rebnconv1d), by graph order."""
    inits = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    nodes = conv_nodes(proto)
    arch = arch_of_conv_shapes([inits.get(n.input[1]) for n in nodes])
    if arch is None:
        return {n.name: n.name for n in nodes}
    return {node.name: conv.name for node, conv in zip(nodes, conv_layout(arch))}


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
