"""Runs the configurations, scores them against each model's FP32 reference, and reports.

Each model (U2-NetP, U2-Net) is measured on its own: its FP32 reference is the official ONNX on
ONNX Runtime, and every other row of that model is compared with the reference's masks on the same
images (mean MAE, and min IoU over images with a subject). Ratios compare rows of one model only.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .._deps import available
from ..backends import is_address
from ..errors import ImageError, U2EdgeError
from ..export.cpu_int8 import HELD_OUT_PHOTOS
from ..images import read_image
from ..metrics import agreement
from ..sidecar import Sidecar
from ..weights import WEIGHTS, cache_dir, default_onnx

__all__ = ["Config", "BenchOptions", "MODELS", "configurations", "run", "rembg_python", "rembg_home", "PHOTOS"]

log = logging.getLogger("u2edge")

MODELS = tuple(WEIGHTS)  # every official model: u2netp, u2net
# measured: scikit-image's colour photos with a subject, which the INT8 quantization files hold out
PHOTOS = HELD_OUT_PHOTOS


@dataclass
class Config:
    name: str
    kind: str  # "u2edge", "torch" or "rembg"
    model: str  # the official model it runs: "u2netp" or "u2net"
    path: str | None = None  # the model file; None: the model by name at --precision auto
    backend: str | None = None
    precision: str = "fp32"
    peer: bool = False
    options: dict = field(default_factory=dict)  # backend options, e.g. {"device": "cuda"}


@dataclass
class BenchOptions:
    images: list[Path]
    models: tuple[str, ...] = MODELS
    repeats: int = 5
    batches: tuple[int, ...] = (1,)
    int8_model: Path | None = None  # a user's CPU INT8 .onnx, measured beside its model's rows
    server: str | None = None  # a model on a Triton server (triton://...), measured beside its model's rows
    rembg_python: Path | None = None
    peers: bool = True
    timeout: float = 600.0
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per image that cannot be read


def rembg_python() -> Path:
    """Where ``benchmarks/setup_rembg.sh`` puts rembg's own environment (U2EDGE_REMBG_PYTHON overrides)."""
    override = os.environ.get("U2EDGE_REMBG_PYTHON")
    return Path(override) if override else cache_dir() / "peers" / "rembg" / "bin" / "python"


def rembg_home(folder: Path, models=MODELS) -> Path:
    """A U2NET_HOME for rembg in ``folder``: links to u2edge's official ONNX files, in rembg's old
    (``<home>/<name>.onnx``) and new (``<home>/models/<name>/<name>.onnx``) layouts, so that rembg
    runs the same weights and downloads nothing (their md5 is the one rembg checks)."""
    for model in models:
        for link in (folder / f"{model}.onnx", folder / "models" / model / f"{model}.onnx"):
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(default_onnx(model))
    return folder


def skimage_photos(names=PHOTOS) -> list[Path]:
    if not available("skimage"):
        raise U2EdgeError("u2edge bench measures scikit-image's photos by default and scikit-image is not "
                          "installed; pip install scikit-image, or give --images")
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in names]


def configurations(opts: BenchOptions) -> list[Config]:
    """Every configuration this machine can run, model by model, each model's FP32 reference first;
    what it cannot run goes to ``opts.skipped``."""
    int8_arch = model_of(opts.int8_model) if opts.int8_model else None
    if int8_arch is not None and int8_arch not in opts.models:
        opts.skipped.append(f"--int8-model {opts.int8_model}: it is a {int8_arch} model and {int8_arch} is not "
                            f"measured; add --model {int8_arch}")
    configs = []
    for model in opts.models:
        configs += _u2edge_configurations(model, opts)
        if int8_arch == model:
            configs.append(Config(f"u2edge {model} openvino int8 ({opts.int8_model.name})", "u2edge", model,
                                  str(opts.int8_model), "openvino", "int8"))
        configs += _gpu_configurations(model, opts)
        if opts.server is not None:  # the model the server serves: the one model measured (the CLI checks)
            configs.append(Config(f"u2edge {model} triton ({opts.server})", "u2edge", model, opts.server, "triton",
                                  "server"))
        if opts.peers:
            configs += _peer_configurations(model, opts)
    return configs


def model_of(path: Path) -> str:
    """Which official model a model file is, from its sidecar (``u2edge build``) or its metadata."""
    sidecar = Sidecar.read(path)
    arch = sidecar.arch if sidecar else None
    if arch is None:
        import onnxruntime

        try:
            meta = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise U2EdgeError(f"--int8-model {path}: onnxruntime cannot read it ({exc})") from None
        arch = meta.custom_metadata_map.get("u2edge.arch")
    if arch not in WEIGHTS:
        raise U2EdgeError(f"--int8-model {path}: neither its sidecar nor its metadata names a known model "
                          f"({', '.join(WEIGHTS)}); build it with u2edge build --model NAME --precision int8")
    return arch


def _u2edge_configurations(model: str, opts: BenchOptions) -> list[Config]:
    """The reference (ONNX Runtime FP32), OpenVINO FP32, and the default: the model at ``auto``."""
    from ..cpu import choose_precision

    official = str(default_onnx(model))
    configs = [Config(f"u2edge {model} onnxruntime fp32", "u2edge", model, official, "onnxruntime")]
    if available("openvino"):
        configs.append(Config(f"u2edge {model} openvino fp32", "u2edge", model, official, "openvino"))
    else:
        opts.skipped.append(f"u2edge {model} openvino fp32 (the CPU fast path): openvino is not installed; "
                            "pip install openvino")
    try:
        choice = choose_precision(model)  # what U2EdgeEngine(model=model) runs here
    except U2EdgeError as exc:
        opts.skipped.append(f"u2edge {model} auto: {exc}")
    else:
        precision = choice.precision.value
        configs.append(Config(f"u2edge {model} auto ({precision})", "u2edge", model, precision=precision))
    return configs


def _gpu_configurations(model: str, opts: BenchOptions) -> list[Config]:
    """PyTorch on CUDA: FP16 with channels_last and CUDA graphs, against eager FP32."""
    if not available("torch"):
        return []
    import torch

    if not torch.cuda.is_available():
        if model == opts.models[0]:
            opts.skipped.append("GPU rows (PyTorch CUDA fp16 + CUDA graphs, eager fp32): no CUDA device")
        return []
    official = str(default_onnx(model))
    return [Config(f"u2edge {model} torch cuda fp32 eager", "u2edge", model, official, "torch",
                   options={"device": "cuda", "half": False, "cuda_graph": False}),
            Config(f"u2edge {model} torch cuda fp16 + CUDA graphs", "u2edge", model, official, "torch", "fp16",
                   options={"device": "cuda", "half": True, "cuda_graph": True})]


def _peer_configurations(model: str, opts: BenchOptions) -> list[Config]:
    """The official-style PyTorch eager pipeline (U2-NetP only) and rembg with the same weights."""
    configs = []
    if model != "u2netp":
        opts.skipped.append(f"PyTorch eager {model}: not run; {model} in eager PyTorch takes seconds an image on a "
                            "CPU, and the u2netp row measures the official pipeline")
    elif not available("torch"):
        opts.skipped.append("PyTorch eager u2netp: torch is not installed; pip install 'u2edge[export]'")
    else:
        configs.append(Config("PyTorch eager u2netp fp32 (official pipeline)", "torch", model,
                              str(default_onnx(model)), peer=True))
    python = opts.rembg_python or rembg_python()
    if Path(python).exists():
        configs.append(Config(f"rembg {model} (same weights)", "rembg", model, str(default_onnx(model)), peer=True))
    else:
        opts.skipped.append(f"rembg {model}: no rembg environment at {python}; run benchmarks/setup_rembg.sh "
                            "(or give --rembg-python)")
    return configs


def _run_worker(config: Config, opts: BenchOptions, tmp: Path, index: int) -> dict:
    spec_path, result_path = tmp / f"spec{index}.json", tmp / f"result{index}.json"
    spec = {"kind": config.kind, "model": config.model, "path": config.path, "backend": config.backend,
            "options": config.options, "repeats": opts.repeats,
            "batches": list(opts.batches), "images": [str(p) for p in opts.images]}
    spec_path.write_text(json.dumps(spec))
    if config.kind == "rembg":
        python = opts.rembg_python or rembg_python()
        cmd = [str(python), str(Path(__file__).with_name("rembg_peer.py")), str(spec_path), str(result_path)]
        env = {**os.environ, "U2NET_HOME": str(rembg_home(tmp / "rembg-models", (config.model,)))}
    else:
        cmd = [sys.executable, "-m", "u2edge.bench.worker", str(spec_path), str(result_path)]
        env = dict(os.environ)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=opts.timeout, env=env)
    except subprocess.TimeoutExpired:
        raise U2EdgeError(f"{config.name} took over {opts.timeout:.0f} s; use fewer --repeats or --images") from None
    if proc.returncode != 0 or not result_path.exists():
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise U2EdgeError(f"{config.name} failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
    return json.loads(result_path.read_text())


def _stats(timed: dict) -> dict:
    lat = sorted(timed["latencies"])
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3  # noqa: E731
    passes = timed["passes"]
    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
            "images_per_s": statistics.mean(passes), "spread": statistics.pstdev(passes)}


def _row(config: Config, raw: dict) -> dict:
    """One measured row, its masks under ``_masks`` until they are scored."""
    with np.load(raw["masks"]) as data:
        masks = {name: data[name].astype(np.float32) for name in data.files}
    location = raw.get("path") or config.path
    model_file = None if is_address(location or "") else Path(location or default_onnx(config.model))
    return {**asdict(config), "path": location if model_file is None else str(model_file),
            "describe": raw.get("describe", config.name),
            "inference": _stats(raw["inference"]), "end_to_end": _stats(raw["end_to_end"]),
            "batches": {k: {"images_per_s": statistics.mean(v), "spread": statistics.pstdev(v)}
                        for k, v in raw.get("batches", {}).items()},
            "fixed_batch": raw.get("fixed_batch"),
            "peak_rss_mb": raw["peak_rss_mb"], "gpu_memory_mb": raw.get("gpu_memory_mb"),
            "model_mb": round(model_file.stat().st_size / 1e6, 2) if model_file else None,  # None: on a server
            "_masks": masks}


def score(rows: list[dict]) -> dict[str, str]:
    """Each row's accuracy against the first row of its model (the reference); returns the
    reference's name by model."""
    references = {}
    for row in rows:
        references.setdefault(row["model"], row)
    masks = {row["name"]: row.pop("_masks") for row in rows}
    for row in rows:
        reference = masks[references[row["model"]]["name"]]
        per_image = {name: agreement(mask, reference[name]) for name, mask in masks[row["name"]].items()}
        ious = [v["iou"] for v in per_image.values() if v["subject"]]
        row["accuracy"] = {"min_iou": min(ious, default=1.0),
                           "mean_mae": float(np.mean([v["mae"] for v in per_image.values()])), "per_image": per_image}
    return {model: row["name"] for model, row in references.items()}


def add_ratios(rows: list[dict]) -> None:
    """``row["vs"][peer kind]``: end-to-end speed against that peer's row of the same model."""
    peers = {(row["model"], row["kind"]): row["end_to_end"]["images_per_s"] for row in rows if row["peer"]}
    for row in rows:
        row["vs"] = {kind: round(row["end_to_end"]["images_per_s"] / speed, 3)
                     for (model, kind), speed in peers.items() if model == row["model"]}


def readable_images(opts: BenchOptions) -> list[Path]:
    """The images every row can measure: each that cannot be decoded is one line, logged and kept in
    ``opts.errors``, and left out of every row, so that the rows still compare the same images."""
    readable = []
    for path in opts.images:
        try:
            read_image(path)
        except ImageError as exc:
            log.error("%s", exc)
            opts.errors.append(str(exc))
        else:
            readable.append(path)
    if not readable:
        raise U2EdgeError(f"none of the {len(opts.images)} images can be read; give images OpenCV decodes")
    return readable


def run(opts: BenchOptions, progress=lambda name: None) -> dict:
    opts.images = readable_images(opts)
    configs = configurations(opts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="u2edge-bench-") as tmp:
        for i, config in enumerate(configs):
            progress(config.name)
            rows.append(_row(config, _run_worker(config, opts, Path(tmp), i)))
    references = score(rows)
    add_ratios(rows)
    return {"u2edge": __version__, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "models": list(opts.models), "images": [p.name for p in opts.images], "repeats": opts.repeats,
            "batch_sizes": list(opts.batches), "reference": references, "rows": rows, "skipped": opts.skipped,
            "errors": opts.errors}


def machine() -> dict:
    from ..info import collect

    info = collect()
    return {"cpu": info["cpu"]["name"], "cores": info["cpu"]["cores"], "int8_features": info["cpu"]["int8_features"],
            "bf16_features": info["cpu"]["bf16_features"], "gpus": info["gpus"], "platform": platform.platform(),
            "python": info["python"]}
