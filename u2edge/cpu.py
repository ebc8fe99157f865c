"""The CPU fast path: which precision this CPU runs best, and the INT8 model made on first use.

``U2EdgeEngine()`` and every runtime command run a model by name (``u2netp``, ``u2net``) at a
precision: ``fp32`` (the reference), ``bf16`` (OpenVINO's BF16 inference on CPUs that have it),
``int8``, or ``auto``, the fastest one that passes the accuracy gate on this CPU.

- ``int8`` needs OpenVINO and a CPU with INT8 dot-product units (AVX-512 VNNI, AVX-VNNI or AMX);
  elsewhere INT8 is not faster, so FP32 runs instead and the reason says so. The INT8 model is made
  from the cached official ONNX and a quantization file that ships with u2edge
  (``u2edge/data/int8_<model>.json``: activation ranges, and which layers stay in float). That file
  is not weights: ``python -m u2edge.export.cpu_int8`` computes it by calibrating on real photos.
  Making the model is a graph edit of a few seconds, cached by identity.
- ``bf16`` runs where BF16 is native (AVX512-BF16 or AMX-BF16), but ``auto`` never picks it: it
  misses the gate (min mask IoU 0.92 against FP32 for U2-NetP, 0.93 for U-2-Net, on AVX512-BF16).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from ._files import write_bytes_atomic
from .errors import ModelFormatError, U2EdgeError
from .identity import identity_hash
from .precision import RUNTIME_PRECISIONS, Precision
from .processing import METADATA_PREFIX
from .sidecar import CPU_MODEL_FORMAT, CorruptSidecarError, Sidecar
from .weights import WEIGHTS, cache_dir, default_onnx, get_weights, sha256_file

__all__ = ["CpuFeatures", "cpu_features", "Choice", "choose_precision", "check_bf16", "int8_params", "params_path",
           "int8_model", "model_file", "PARAMS_FORMAT"]

log = logging.getLogger("u2edge")

PARAMS_FORMAT = "u2edge-cpu-int8/1"
DATA = Path(__file__).parent / "data"
_GRAPH = "fused, batch 1, Q/DQ unsigned"  # how _quantized makes the model: part of its cache identity

_INT8_FLAGS = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8"}
_BF16_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's name and the instruction sets that decide its fastest precision."""

    name: str
    cores: int
    flags: frozenset

    @property
    def int8(self) -> list[str]:
        """INT8 dot-product units: AVX-512 VNNI, AVX-VNNI, AMX-INT8."""
        return [label for flag, label in _INT8_FLAGS.items() if flag in self.flags]

    @property
    def bf16(self) -> list[str]:
        """Native BF16 arithmetic: AVX512-BF16, AMX-BF16."""
        return [label for flag, label in _BF16_FLAGS.items() if flag in self.flags]


@functools.lru_cache(maxsize=None)
def cpu_features() -> CpuFeatures:
    """Read from /proc/cpuinfo on Linux; elsewhere the name only (no feature is assumed)."""
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        name = match.group(1).strip()
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        flags = frozenset(match.group(1).split())
    return CpuFeatures(name, os.cpu_count() or 1, flags)


@dataclass(frozen=True)
class Choice:
    """The precision a model runs at here, and why (``describe()`` and ``u2edge info`` show it)."""

    model: str
    requested: Precision
    precision: Precision  # FP32, BF16 or INT8
    reason: str


def choose_precision(model: str, requested: str | Precision = Precision.AUTO, *, openvino: bool | None = None,
                     features: CpuFeatures | None = None) -> Choice:
    """What ``requested`` means for ``model`` on this CPU. ``openvino``: whether the OpenVINO
    backend can run it (default: whether it is installed)."""
    get_weights(model)
    requested = Precision.parse(requested, RUNTIME_PRECISIONS)
    features = features or cpu_features()
    if openvino is None:
        from .backends.openvino import OpenVinoBackend

        openvino = OpenVinoBackend.installed()
    if requested is Precision.FP32:
        return Choice(model, requested, Precision.FP32, "asked for: the FP32 reference")
    if requested is Precision.BF16:
        check_bf16(openvino=openvino, features=features)
        return Choice(model, requested, Precision.BF16,
                      f"asked for: OpenVINO BF16 on {', '.join(features.bf16)} (below the accuracy gate: "
                      "auto never picks it)")
    if features.int8 and openvino:
        params = int8_params(model)
        measured, gate = params["measured"], params["gate"]  # as measured when the file was made
        accuracy = (f"min mask IoU {measured['min_iou']:.3f}, mean MAE {measured['mean_mae']:.4f} against FP32 on "
                    f"{len(measured['images'])} held-out photos")
        units = ", ".join(features.int8)
        if requested is Precision.INT8:
            return Choice(model, requested, Precision.INT8, f"asked for: INT8 on {units}, {accuracy}")
        if measured["passed"]:
            return Choice(model, requested, Precision.INT8, f"auto: INT8 on {units}, {accuracy}")
        every = measured["all_photos"]
        reason = (f"INT8 misses the accuracy gate (needed min IoU >= {gate['min_iou']} with a margin of "
                  f"{gate['search_margin']} on the held-out photos, and >= {gate['min_iou']} on all "
                  f"{len(every['images'])} photos; it has {measured['min_iou']:.3f} and {every['min_iou']:.3f})")
    else:
        reason = "OpenVINO is not installed (pip install openvino)" if not openvino else \
            f"this CPU ({features.name}) has no VNNI or AMX, so INT8 would not be faster"
    if requested is Precision.INT8:
        log.warning("--precision int8: %s; running fp32 instead", reason)
        return Choice(model, requested, Precision.FP32, f"int8 asked for, fp32 used: {reason}")
    return Choice(model, requested, Precision.FP32, f"auto: {reason}")


def check_bf16(*, openvino: bool, features: CpuFeatures | None = None) -> None:
    """Refuse BF16 where it is not native (it would be emulated, slower than FP32) or no OpenVINO runs it."""
    features = features or cpu_features()
    if not features.bf16 or not openvino:
        missing = "OpenVINO is not installed" if features.bf16 else \
            f"this CPU ({features.name}) has no native BF16 (AVX512-BF16 or AMX-BF16)"
        raise U2EdgeError(f"--precision bf16 cannot run here: {missing}; use --precision auto or fp32")


def params_path(model: str) -> Path:
    return DATA / f"int8_{model}.json"


def int8_params(model: str, path: Path | None = None) -> dict:
    """The shipped quantization file of ``model``, checked against the weights table."""
    path = path or params_path(model)
    fix = "reinstall u2edge, or regenerate it: python -m u2edge.export.cpu_int8 --model " + model
    try:
        params = json.loads(path.read_text())
    except FileNotFoundError:
        raise U2EdgeError(f"the INT8 quantization file for {model} is missing ({path}); {fix}") from None
    except (OSError, ValueError) as exc:
        raise U2EdgeError(f"the INT8 quantization file {path} is unreadable ({exc}); {fix}") from None
    if not isinstance(params, dict) or params.get("format") != PARAMS_FORMAT or params.get("model") != model \
            or not isinstance(params.get("ranges"), dict):
        raise U2EdgeError(f"{path} is not a {PARAMS_FORMAT} file for {model}; {fix}")
    expected = WEIGHTS[model].sha256
    if params.get("onnx_sha256") != expected:
        raise U2EdgeError(f"{path} was made for another {model} ONNX (sha256 {params.get('onnx_sha256')}), not the "
                          f"official one ({expected}); {fix}")
    return params


def int8_model(model: str, *, params: Path | None = None) -> Path:
    """The CPU INT8 model of ``model`` in the user cache, made on first use (seconds, no torch)."""
    path = params or params_path(model)
    settings = int8_params(model, path)
    source = default_onnx(model)
    key = identity_hash({"source": WEIGHTS[model].sha256, "params": sha256_file(path), "format": PARAMS_FORMAT,
                         "graph": _GRAPH})
    target = cache_dir() / "cpu" / f"{model}_int8_{key}.onnx"
    try:
        sidecar = Sidecar.read(target)
    except CorruptSidecarError as exc:  # a cache entry: made again, like one that does not match
        log.debug("%s", exc)
        sidecar = None
    if target.exists() and sidecar and sidecar.engine_sha256 == sha256_file(target):
        return target
    if target.exists():
        log.warning("cached %s does not match its sidecar; making it again", target)
    log.info("making the CPU INT8 %s model from %s (once; cached in %s)", model, source.name, target.parent)
    data = _quantized(model, source, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, data)
    Sidecar(format=CPU_MODEL_FORMAT, arch=model, precision="int8", source_sha256=WEIGHTS[model].sha256,
            params=str(path), identity=key, engine_bytes=len(data), engine_sha256=sha256_file(target),
            accuracy=settings["measured"]).write(target)
    return target


def _quantized(model: str, source: Path, settings: dict) -> bytes:
    """The fused FP32 graph with Q/DQ on every conv but ``keep_float`` and the tail."""
    from ._deps import require
    from .onnxgraph import fused_graph, set_metadata
    from .qdq import conv_nodes, layer_names, nonnegative_inputs, quantize

    onnx = require("onnx")
    # batch 1, fixed: OpenVINO runs a static shape about 5% faster, and CPUs gain nothing from batches
    proto = fused_graph(onnx.load(str(source)), WEIGHTS[model].preprocessing.imgsz, 1, source=str(source))
    names = layer_names(proto)
    ranges = {n.input[0]: float(settings["ranges"][names[n.name]]) for n in conv_nodes(proto)
              if names[n.name] in settings["ranges"]}
    by_layer = {layer: node for node, layer in names.items()}
    unknown = [layer for layer in settings["keep_float"] if layer not in by_layer]
    if unknown:
        raise ModelFormatError(f"the INT8 quantization file names layers {unknown} that {model} does not have")
    proto = quantize(proto, ranges, keep_float=[by_layer[layer] for layer in settings["keep_float"]],
                     unsigned=nonnegative_inputs(proto))
    set_metadata(proto, {**WEIGHTS[model].preprocessing.to_metadata(),
                         METADATA_PREFIX + "arch": model, METADATA_PREFIX + "precision": "int8",
                         METADATA_PREFIX + "source_sha256": WEIGHTS[model].sha256})
    return proto.SerializeToString()


def model_file(choice: Choice) -> Path:
    """The file that runs ``choice``: the INT8 model, or the official ONNX."""
    return int8_model(choice.model) if choice.precision is Precision.INT8 else default_onnx(choice.model)
