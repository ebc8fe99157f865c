"""Read the conv weights of a BatchNorm-folded U-2-Net ONNX (such as the official U2-NetP):
recognise its architecture without torch, and import it into the PyTorch model, matching
convs in graph order with BatchNorm set to the identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._deps import require
from .config import arch_of_conv_shapes, conv_layout, wrong_arch_error
from .errors import WeightsError

__all__ = ["read_convs", "onnx_arch", "import_onnx_weights"]


def read_convs(path: Path) -> list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]]:
    """(weight, bias, dilations) of every Conv node of an ONNX file, in graph order."""
    onnx = require("onnx")
    from onnx import numpy_helper

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise WeightsError(f"cannot read {path} as ONNX ({type(exc).__name__}); the file is corrupt") from exc
    tensors = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    convs = []
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        if len(node.input) < 3 or node.input[1] not in tensors or node.input[2] not in tensors:
            raise WeightsError(f"{path}: conv {node.name} has no constant weight and bias; "
                               "only BatchNorm-folded U-2-Net ONNX files can be imported")
        attrs = {a.name: tuple(a.ints) for a in node.attribute}
        convs.append((numpy_helper.to_array(tensors[node.input[1]]),
                      numpy_helper.to_array(tensors[node.input[2]]), attrs.get("dilations") or (1, 1)))
    return convs


def _arch(convs, path: Path) -> str:
    arch = arch_of_conv_shapes([tuple(w.shape) for w, _, _ in convs])
    if arch is None:
        raise WeightsError(f"{path} is not a U-2-Net ONNX: its {len(convs)} convs match neither "
                           "u2net nor u2netp")
    if any(d != (c.dilation, c.dilation) for (_, _, d), c in zip(convs, conv_layout(arch))):
        raise WeightsError(f"{path}: conv dilations differ from {arch}'s; not a U-2-Net graph")
    return arch


def onnx_arch(path: Path) -> str:
    """'u2net' or 'u2netp' for a BatchNorm-folded U-2-Net ONNX; WeightsError otherwise."""
    return _arch(read_convs(path), path)


def import_onnx_weights(model, path: str | Path):
    """Copy the ONNX's folded conv weights into ``model`` (a ``u2edge.model.U2Net``)."""
    torch = require("torch")
    path = Path(path)
    convs = read_convs(path)
    arch = _arch(convs, path)
    if arch != model.arch:
        raise wrong_arch_error(model.arch, arch, "ONNX")
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for module, (weight, bias, _) in zip(modules, convs):
            module.weight.copy_(torch.from_numpy(weight.copy()))
            module.bias.copy_(torch.from_numpy(bias.copy()))
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.reset_parameters()  # weight 1, bias 0, mean 0, var 1
            bn.running_var.fill_(1.0 - bn.eps)  # so that sqrt(var + eps) is exactly 1
    return model
