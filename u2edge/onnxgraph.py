"""ONNX graph edits that need no torch: outputs, names, batch and input size, opset, metadata.

The export toolchain builds on these, and so does the runtime when it makes the CPU INT8 model
from the official ONNX on first use (``u2edge.cpu``): both reach the same fused graph.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._deps import require
from ._files import write_bytes_atomic
from .errors import WeightsError

OPSET = 17
OUTPUT_NAMES = ("mask", "d1", "d2", "d3", "d4", "d5", "d6")  # d0 (fused) is "mask"


def rename_tensor(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def prune(graph) -> None:
    """Drop nodes whose outputs no graph output needs (the side maps when only d0 is kept)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    live = list(reversed(keep))
    del graph.node[:]
    graph.node.extend(live)
    used = {i for node in live for i in node.input}
    kept_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_init)


def drop_empty_resize_inputs(graph) -> None:
    """Omit Resize's empty ``roi``/``scales`` constants (optional since opset 13), which some
    converters (FP16) would otherwise wrap in casts and turn into bogus inputs."""
    empty = {t.name for t in graph.initializer if 0 in t.dims}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value" \
                and 0 in node.attribute[0].t.dims:
            empty.add(node.output[0])
    for node in graph.node:
        if node.op_type == "Resize":
            for i in (1, 2):
                if i < len(node.input) and node.input[i] in empty:
                    node.input[i] = ""
    prune(graph)


def set_image_shape(graph, batch: int | str, imgsz: int | str) -> None:
    """Input (batch, 3, S, S) and outputs (batch, 1, S, S); int dims are fixed, str dims symbolic."""
    def set_dims(value, dims):
        shape = value.type.tensor_type.shape
        for dim, size in zip(shape.dim, dims):
            dim.Clear()
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size

    set_dims(graph.input[0], (batch, 3, imgsz, imgsz))
    for out in graph.output:
        set_dims(out, (batch, 1, imgsz, imgsz))
    del graph.value_info[:]  # stale shapes; shape inference recomputes them


def upgrade_opset(proto, opset: int = OPSET):
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current < opset:
        proto = require("onnx.version_converter").convert_version(proto, opset)
    return proto


def set_metadata(proto, values: dict[str, str]) -> None:
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def save_atomic(proto, path: str | os.PathLike) -> Path:
    """Check the model, then write it atomically."""
    require("onnx").checker.check_model(proto)
    return write_bytes_atomic(path, proto.SerializeToString())


def fused_graph(proto, imgsz: int, batch: int | None, all_outputs: bool = False, source: str = "the ONNX"):
    """A U-2-Net ONNX (the official one: opset 11, seven outputs) as u2edge's graph: input
    ``input``, the fused output ``mask`` (or all seven, ``mask, d1..d6``), the batch fixed or
    dynamic (None), ``imgsz`` square, opset 17. Modifies and returns ``proto``."""
    onnx = require("onnx")
    g = proto.graph
    if len(g.input) != 1 or len(g.output) not in (1, 7):
        raise WeightsError(f"{source} has {len(g.input)} inputs and {len(g.output)} outputs; "
                           "a U-2-Net ONNX has one input and 1 or 7 outputs")
    if all_outputs and len(g.output) != 7:
        raise WeightsError(f"{source} has only the fused output; --all-outputs needs a source with all seven")
    del g.output[len(g.output) if all_outputs else 1:]
    prune(g)
    rename_tensor(g, g.input[0].name, "input")
    for out, name in zip(list(g.output), OUTPUT_NAMES):
        rename_tensor(g, out.name, name)
    set_image_shape(g, "batch" if batch is None else batch, imgsz)
    proto = upgrade_opset(proto)
    drop_empty_resize_inputs(proto.graph)
    return onnx.shape_inference.infer_shapes(proto)
