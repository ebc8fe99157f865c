"""One 1080p frame's whole path through ``U2EdgeEngine`` (upload, preprocess, infer,
postprocess, download), with pre- and post-processing on the GPU (u2edge's CUDA kernels) against
the same on the CPU (OpenCV and numpy), same model, same run.

    python benchmarks/frame_path.py [--frames 30] [--json-out frame_path.json]

Rows, each in ms per frame (p50, p95) and frames/s:
- ``cpu preprocess`` and ``cpu postprocess``: the CPU stages alone on a 1920x1080 frame, which is
  what the kernels take off the CPU (and what a Jetson's ARM cores struggle with);
- ``<backend> frame path, CPU pre/post``: ``engine(frame)`` end to end;
- on a CUDA GPU with the native part built: PyTorch CUDA (FP16, channels_last, CUDA graphs) with
  CPU pre/post, and the same model with GPU pre/post. Their ratio is the gain.
Without a GPU the GPU rows are listed as not measured, with the reason. The frame is a real photo
(scikit-image's astronaut) scaled to 1080p; warm-ups are excluded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np

from u2edge import U2EdgeEngine, U2EdgeError, read_image
from u2edge.bench.run import machine, skimage_photos
from u2edge.native import load as load_native
from u2edge.processing import postprocess, preprocess
from u2edge.weights import default_onnx


def timed(fn, frames: int) -> dict:
    fn()  # warm-up: allocations, CUDA graph capture
    latencies = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - start)
    ms = np.asarray(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "fps": round(1000 / float(np.mean(ms)), 1)}


def gpu_engines() -> tuple[list[tuple[str, dict]], str | None]:
    """The GPU rows' engine options, or why there are none."""
    try:
        import torch
    except ImportError:
        return [], "PyTorch is not installed"
    if not torch.cuda.is_available():
        return [], "no CUDA device"
    rows = [("torch cuda fp16, CPU pre/post", {"gpu_frames": False})]
    if load_native() is None:
        return rows, "the native part is not built (pip install -e . with nvcc), so no GPU pre/post row"
    return rows + [("torch cuda fp16, GPU pre/post", {"gpu_frames": True})], None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="timed frames per row (default: 30)")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)
    (photo,) = skimage_photos(("astronaut.png",))
    frame = cv2.resize(read_image(photo), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    model = default_onnx()
    with U2EdgeEngine(model) as engine:
        spec = engine.preprocessing
        pred = engine.backend.infer(engine.inputs([frame]))[0]  # the network's real map for this frame
        rows = [{"row": "cpu preprocess (1080p -> 3x320x320)", **timed(lambda: preprocess(frame, spec), args.frames)},
                {"row": "cpu postprocess (320x320 -> 1080p mask)",
                 **timed(lambda: postprocess(pred, 1080, 1920), args.frames)}]
        rows.append({"row": f"{engine.backend.name} frame path, CPU pre/post", "describe": engine.describe(),
                     **timed(lambda: engine(frame), args.frames)})
    configs, skipped = gpu_engines()
    for name, options in configs:
        with U2EdgeEngine(model, backend="torch", device="cuda", **options) as engine:
            rows.append({"row": name, "describe": engine.describe(), **timed(lambda: engine(frame), args.frames)})
    by_name = {row["row"]: row for row in rows}
    cpu, gpu = by_name.get("torch cuda fp16, CPU pre/post"), by_name.get("torch cuda fp16, GPU pre/post")
    if cpu and gpu:
        gpu["speedup_vs_cpu_pre_post"] = round(cpu["p50_ms"] / gpu["p50_ms"], 2)

    print(f"{'row':42} {'p50 ms':>8} {'p95 ms':>8} {'fps':>7}")
    for row in rows:
        print(f"{row['row']:42} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['fps']:7.1f}")
    if gpu and "speedup_vs_cpu_pre_post" in gpu:
        print(f"GPU pre/post-processing: {gpu['speedup_vs_cpu_pre_post']}x the frame rate of CPU pre/post (p50)")
    if skipped:
        print(f"not measured: GPU rows: {skipped}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": machine(), "frame": [1080, 1920], "rows": rows, "skipped": skipped}, f, indent=2)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except U2EdgeError as exc:
        sys.exit(f"frame_path: {exc}")
