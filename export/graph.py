"""ONNX graph edits that need no torch: outputs, names, batch and input size, opset, metadata."""

from __future__ import annotations

import os
from pathlib import Path

from .._deps import require
from .._files import write_bytes_atomic

OPSET = 17


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
