"""Runs the configurations, scores them against the FP32 reference, and reports.

The FP32 reference is the official U2-NetP ONNX on ONNX Runtime: every configuration's masks are
compared with its masks on the same images (mean MAE, and min IoU over images with a subject).
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
from ..errors import U2EdgeError
from ..metrics import agreement
from ..weights import cache_dir, default_onnx

__all__ = ["Config", "BenchOptions", "configurations", "run", "rembg_python", "PHOTOS", "CALIBRATION_PHOTOS"]

log = logging.getLogger("u2edge")

# measured: scikit-image's colour photos with a subject
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
# the CPU INT8 model calibrates on these other scikit-image images, never on the measured ones
CALIBRATION_PHOTOS = ("camera.png", "coins.png", "ihc.png", "hubble_deep_field.jpg", "brick.png", "grass.png",
                      "gravel.png", "color.png", "logo.png", "page.png", "moon.png", "horse.png", "retina.jpg",
                      "cell.png", "motorcycle_right.png")


@dataclass
class Config:
    name: str
    kind: str  # "u2edge", "torch" or "rembg"
    model: str | None = None
    backend: str | None = None
    precision: str = "fp32"
    peer: bool = False
    options: dict = field(default_factory=dict)  # backend options, e.g. {"device": "cuda"}


@dataclass
class BenchOptions:
    images: list[Path]
    repeats: int = 5
    batches: tuple[int, ...] = (1,)
    int8_model: Path | None = None  # a CPU INT8 .onnx; None: built once from scikit-image photos
    rembg_python: Path | None = None
    peers: bool = True
    timeout: float = 600.0
    skipped: list[str] = field(default_factory=list)


def rembg_python() -> Path:
    """Where ``benchmarks/setup_rembg.sh`` puts rembg's own environment (U2EDGE_REMBG_PYTHON overrides)."""
    override = os.environ.get("U2EDGE_REMBG_PYTHON")
    return Path(override) if override else cache_dir() / "peers" / "rembg" / "bin" / "python"


def skimage_photos(names=PHOTOS) -> list[Path]:
    if not available("skimage"):
        raise U2EdgeError("u2edge bench measures scikit-image's photos by default and scikit-image is not "
                          "installed; pip install scikit-image, or give --images")
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in names]


def cpu_int8_model() -> Path:
    """The official U2-NetP as a CPU INT8 model, built once (reused while its identity holds)."""
    from ..export.build import BuildOptions, build_engine
    from ..sidecar import Precision

    calib = cache_dir() / "bench" / "calibration"
    calib.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(skimage_photos(CALIBRATION_PHOTOS)):
        link = calib / f"{i:02d}_{photo.name}"
        if not link.exists():
            link.symlink_to(photo)
    log.info("building the CPU INT8 model (once; calibrated on %d scikit-image photos that are not measured)",
             len(CALIBRATION_PHOTOS))
    result = build_engine(BuildOptions(output=cache_dir() / "bench" / "u2netp_int8.onnx", precision=Precision.INT8,
                                       calib_dir=calib))
    return result.path


def configurations(opts: BenchOptions) -> list[Config]:
    """Every configuration this machine can run; what it cannot run goes to ``opts.skipped``."""
    official = str(default_onnx())
    configs = [Config("u2edge onnxruntime fp32", "u2edge", official, "onnxruntime")]
    if available("openvino"):
        configs.append(Config("u2edge openvino fp32", "u2edge", official, "openvino"))
        int8 = opts.int8_model
        if int8 is None and not available("onnx"):
            opts.skipped.append("u2edge openvino int8: building the INT8 model needs onnx; "
                                "pip install 'u2edge[export]', or give --int8-model")
        else:
            configs.append(Config("u2edge openvino int8", "u2edge", str(int8 or cpu_int8_model()), "openvino", "int8"))
    else:
        opts.skipped.append("u2edge openvino fp32/int8 (the CPU fast path): openvino is not installed; "
                            "pip install 'u2edge[cpu]'")
    configs += _gpu_configurations(official, opts)
    if not opts.peers:
        return configs
    if available("torch"):
        configs.append(Config("PyTorch eager fp32 (official pipeline)", "torch", official, peer=True))
    else:
        opts.skipped.append("PyTorch eager: torch is not installed; pip install 'u2edge[export]'")
    python = opts.rembg_python or rembg_python()
    if Path(python).exists():
        configs.append(Config("rembg u2netp (same weights)", "rembg", str(python), peer=True))
    else:
        opts.skipped.append(f"rembg: no rembg environment at {python}; run benchmarks/setup_rembg.sh "
                            "(or give --rembg-python)")
    return configs


def _gpu_configurations(official: str, opts: BenchOptions) -> list[Config]:
    """PyTorch on CUDA: FP16 with channels_last and CUDA graphs, against eager FP32."""
    if not available("torch"):
        return []
    import torch

    if not torch.cuda.is_available():
        opts.skipped.append("GPU rows (PyTorch CUDA fp16 + CUDA graphs, eager fp32): no CUDA device")
        return []
    return [Config("u2edge torch cuda fp32 eager", "u2edge", official, "torch",
                   options={"device": "cuda", "half": False, "cuda_graph": False}),
            Config("u2edge torch cuda fp16 + CUDA graphs", "u2edge", official, "torch", "fp16",
                   options={"device": "cuda", "half": True, "cuda_graph": True})]


def _run_worker(config: Config, opts: BenchOptions, tmp: Path, index: int) -> dict:
    spec_path, result_path = tmp / f"spec{index}.json", tmp / f"result{index}.json"
    spec = {"kind": config.kind, "model": config.model, "backend": config.backend, "options": config.options,
            "repeats": opts.repeats,
            "batches": list(opts.batches), "images": [str(p) for p in opts.images]}
    spec_path.write_text(json.dumps(spec))
    if config.kind == "rembg":
        models = tmp / "rembg-models"  # rembg finds the same official weights here and downloads nothing
        for link in (models / "u2netp.onnx", models / "models" / "u2netp" / "u2netp.onnx"):  # old and new layouts
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(default_onnx())
        cmd = [config.model, str(Path(__file__).with_name("rembg_peer.py")), str(spec_path), str(result_path)]
        env = {**os.environ, "U2NET_HOME": str(models)}
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


def run(opts: BenchOptions, progress=lambda name: None) -> dict:
    configs = configurations(opts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="u2edge-bench-") as tmp:
        for i, config in enumerate(configs):
            progress(config.name)
            raw = _run_worker(config, opts, Path(tmp), i)
            with np.load(raw["masks"]) as data:
                masks = {name: data[name].astype(np.float32) for name in data.files}
            model_bytes = Path(config.model).stat().st_size if config.kind != "rembg" else \
                Path(default_onnx()).stat().st_size
            rows.append({**asdict(config), "describe": raw.get("describe", config.name),
                         "inference": _stats(raw["inference"]), "end_to_end": _stats(raw["end_to_end"]),
                         "batches": {k: {"images_per_s": statistics.mean(v), "spread": statistics.pstdev(v)}
                                     for k, v in raw.get("batches", {}).items()},
                         "fixed_batch": raw.get("fixed_batch"),
                         "peak_rss_mb": raw["peak_rss_mb"], "gpu_memory_mb": raw.get("gpu_memory_mb"),
                         "model_mb": round(model_bytes / 1e6, 2), "_masks": masks})
    reference = rows[0]["_masks"]
    for row in rows:
        per_image = {name: agreement(mask, reference[name]) for name, mask in row.pop("_masks").items()}
        ious = [v["iou"] for v in per_image.values() if v["subject"]]
        row["accuracy"] = {"min_iou": min(ious, default=1.0),
                           "mean_mae": float(np.mean([v["mae"] for v in per_image.values()])), "per_image": per_image}
    _add_ratios(rows)
    return {"u2edge": __version__, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "images": [p.name for p in opts.images], "repeats": opts.repeats, "batch_sizes": list(opts.batches),
            "reference": rows[0]["name"], "rows": rows, "skipped": opts.skipped}


def _add_ratios(rows: list[dict]) -> None:
    peers = {row["kind"]: row["end_to_end"]["images_per_s"] for row in rows if row["peer"]}
    for row in rows:
        row["vs"] = {kind: round(row["end_to_end"]["images_per_s"] / speed, 3) for kind, speed in peers.items()}


def machine() -> dict:
    from ..info import collect

    info = collect()
    return {"cpu": info["cpu"]["name"], "cores": info["cpu"]["cores"], "int8_features": info["cpu"]["int8_features"],
            "gpus": info["gpus"], "platform": platform.platform(), "python": info["python"]}
