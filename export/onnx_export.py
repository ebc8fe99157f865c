"""``export_onnx``: a U-2-Net ONNX with one fused output named ``mask`` (or all seven), opset 17,
BatchNorm folded, a fixed or dynamic batch, preprocessing metadata, and a self-check.
``fp32_graph`` is the same export as the first step of a build.

From an ONNX source (the official U2-NetP by default) every step is a graph edit, so no torch is
needed; from a ``.pth`` the model is folded and exported with ``torch.onnx.export``. Either way
the result is checked with ONNX Runtime against its source, and the max error is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .. import onnxgraph as graph
from .._deps import require
from .._files import temp_folder
from ..config import wrong_arch_error
from ..errors import U2EdgeError, WeightsError
from ..onnx_weights import onnx_arch
from ..onnxgraph import OUTPUT_NAMES
from ..processing import METADATA_PREFIX, Preprocessing
from ..weights import default_onnx, get_weights, sha256_file

__all__ = ["OUTPUT_NAMES", "ExportResult", "check_imgsz", "preprocessing_of", "export_onnx", "fp32_graph"]

log = logging.getLogger("u2edge")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    arch: str
    source: Path
    via: str  # "graph" (ONNX edits) or "torch"
    reference: str  # what the export was checked against
    max_error: float
    opset: int
    seconds: float


def check_imgsz(imgsz: int) -> int:
    if imgsz < 32 or imgsz % 32:
        raise U2EdgeError(lambda spell: f"{spell('imgsz')} {imgsz} is not a positive multiple of 32; U-2-Net halves "
                                        "the resolution five times, so use 288, 320, 352, ...")
    return imgsz


def preprocessing_of(arch: str, imgsz: int) -> Preprocessing:
    """The preprocessing of ``arch`` in the weights table, at the input size ``imgsz``."""
    return dataclasses.replace(get_weights(arch).preprocessing, imgsz=imgsz)


def export_onnx(output: str | os.PathLike, *, arch: str = "u2netp", weights: str | os.PathLike | None = None,
                imgsz: int = 320, batch: int | None = 1, all_outputs: bool = False) -> ExportResult:
    """Export ``arch`` with ``weights`` (default: the official U2-NetP) to ``output``.

    ``batch`` None makes the batch dimension dynamic.
    """
    check_imgsz(imgsz)
    if batch is not None and batch < 1:
        raise U2EdgeError(lambda spell: f"{spell('batch')} {batch} must be at least 1")
    if weights is None:
        weights = default_onnx(arch)
    source = Path(weights)
    if not source.is_file():
        raise WeightsError(f"weights file not found: {source}")
    output = Path(output)
    if output.resolve() == source.resolve():
        raise U2EdgeError(lambda spell: f"refusing to overwrite the source {source}; choose another {spell('output')}")
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if source.suffix.lower() == ".onnx":
        found = onnx_arch(source)
        if found != arch:
            raise wrong_arch_error(arch, found, "ONNX")
        proto, reference, run_reference = _from_onnx(source, imgsz, batch, all_outputs)
        via = "graph"
    else:
        proto, reference, run_reference = _from_torch(source, arch, imgsz, batch, all_outputs)
        via = "torch"
    names = OUTPUT_NAMES if all_outputs else OUTPUT_NAMES[:1]
    graph.set_metadata(proto, {
        **preprocessing_of(arch, imgsz).to_metadata(),
        METADATA_PREFIX + "arch": arch,
        METADATA_PREFIX + "outputs": ",".join(names),
        METADATA_PREFIX + "source_sha256": sha256_file(source),
        METADATA_PREFIX + "exporter": f"u2edge {__version__} ({via})",
    })
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    graph.save_atomic(proto, output)
    max_error = _verify(output, run_reference, imgsz, batch, len(names))
    seconds = time.perf_counter() - start
    log.debug("exported %s (%s, via %s) max abs error %.2e against %s", output, arch, via, max_error, reference)
    return ExportResult(output, arch, source, via, reference, max_error, opset, seconds)


def fp32_graph(*, arch: str = "u2netp", weights: str | os.PathLike | None = None, imgsz: int = 320):
    """``export_onnx`` with a dynamic batch, as a ModelProto: the FP32 graph a build starts from.

    The batch is dynamic so that held-out and calibration images run one at a time; a build
    fixes its batch on its final graph.
    """
    onnx = require("onnx")
    with temp_folder("u2edge-build") as tmp:  # one a kill -9 left behind is removed by the next build
        exported = export_onnx(tmp / "fp32.onnx", arch=arch, weights=weights, imgsz=imgsz, batch=None)
        return onnx.load(str(exported.path))


def _from_onnx(source: Path, imgsz: int, batch: int | None, all_outputs: bool):
    onnx = require("onnx")
    proto = graph.fused_graph(onnx.load(str(source)), imgsz, batch, all_outputs, source=str(source))
    keep = len(proto.graph.output)

    # the reference is the untouched source graph, its input size loosened to imgsz
    ref = onnx.load(str(source))
    graph.set_image_shape(ref.graph, "batch", "size")

    def run_reference(x):
        return _ort_session(ref.SerializeToString()).run(None, {ref.graph.input[0].name: x})[:keep]

    return proto, "the source ONNX under ONNX Runtime", run_reference


def _from_torch(source: Path, arch: str, imgsz: int, batch: int | None, all_outputs: bool):
    torch = require("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from ..model import REBNCONV, _build

    model = _build(arch, source, fused_only=not all_outputs)
    for block in model.modules():
        if isinstance(block, REBNCONV):
            block.conv_s1 = fuse_conv_bn_eval(block.conv_s1, block.bn_s1)
            block.bn_s1 = torch.nn.Identity()
    example = torch.zeros(batch or 2, 3, imgsz, imgsz)
    names = list(OUTPUT_NAMES if all_outputs else OUTPUT_NAMES[:1])
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=256)}} if batch is None else None
    with _quiet_exporter():
        program = torch.onnx.export(model, (example,), None, input_names=["input"], output_names=names,
                                    opset_version=graph.OPSET, dynamo=True, external_data=False,
                                    dynamic_shapes=dynamic, verbose=False)
    proto = program.model_proto

    def run_reference(x):
        with torch.inference_mode():
            out = model(torch.from_numpy(x))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return proto, "PyTorch", run_reference


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx prints progress and warns about unrelated operators (torchvision); keep that in
    the debug log so the user sees u2edge's own result."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    captured = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), \
                contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        log.debug("torch.onnx: %s", captured.getvalue().strip())


def _ort_session(model):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _verify(path: Path, run_reference, imgsz: int, batch: int | None, outputs: int) -> float:
    """Max abs error of the exported ONNX against its source on a fixed pseudo-random batch."""
    x = np.random.default_rng(0).standard_normal((batch or 2, 3, imgsz, imgsz), dtype=np.float32)
    got = _ort_session(str(path)).run(None, {"input": x})
    want = run_reference(x)
    if len(got) != outputs:
        raise U2EdgeError(f"{path} has {len(got)} outputs, expected {outputs}")
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))
