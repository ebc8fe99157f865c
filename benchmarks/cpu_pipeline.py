"""CPU speed of u2edge against the PyTorch eager reference, on the same real photos, in one run.

    python benchmarks/cpu_pipeline.py [--repeats 5] [--json out.json]

Rows: ONNX Runtime inference alone; u2edge end to end (decode, preprocess, infer, postprocess,
render the mask, encode the PNG) as `u2edge image` does it; and the official-style PyTorch eager
pipeline (fp32) when torch is installed. Warm-up runs are excluded; latencies are per image over
all repeats, with p50/p90 and the spread. Ratios compare rows measured in this same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from u2edge import U2EdgeEngine, read_image
from u2edge.images import write_image
from u2edge.processing import postprocess, preprocess
from u2edge.render import render

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def photo_paths() -> list[Path]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in PHOTOS]


def timed(fn, items, repeats: int) -> list[float]:
    for item in items:  # warm-up, excluded
        fn(item)
    times = []
    for _ in range(repeats):
        for item in items:
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
    return times


def summary(name: str, times: list[float]) -> dict:
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"name": name, "images": len(times), "p50_ms": pick(0.5) * 1e3, "p90_ms": pick(0.9) * 1e3,
            "mean_ms": statistics.mean(times) * 1e3, "stdev_ms": statistics.pstdev(times) * 1e3,
            "images_per_s": len(times) / sum(times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    paths = photo_paths()
    frames = [read_image(p) for p in paths]
    rows = []
    with U2EdgeEngine() as engine, tempfile.TemporaryDirectory() as tmp:
        inputs = [preprocess(f, engine.preprocessing)[None] for f in frames]
        rows.append(summary("onnxruntime inference only", timed(engine.backend.infer, inputs, args.repeats)))

        def end_to_end(path: Path) -> None:
            frame = read_image(path)
            write_image(Path(tmp) / f"{path.stem}.png", render(frame, engine(frame), "mask"))

        rows.append(summary("u2edge end to end (u2edge image)", timed(end_to_end, paths, args.repeats)))
        backend, spec = engine.backend.describe(), engine.preprocessing
    try:
        import torch

        from u2edge.model import u2netp
    except ImportError:
        torch = None
    if torch is not None:
        model = u2netp(weights="official")

        def torch_eager(frame: np.ndarray) -> None:
            x = torch.from_numpy(preprocess(frame, spec)[None])
            with torch.inference_mode():
                d0 = model(x)[0]
            postprocess(d0.numpy()[0, 0], *frame.shape[:2])

        rows.append(summary(f"PyTorch {torch.__version__} eager fp32 (reference)",
                            timed(torch_eager, frames, args.repeats)))
    reference = rows[-1]["images_per_s"] if torch is not None else None
    print(f"{len(paths)} scikit-image photos x {args.repeats} repeats; {backend}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'configuration':<48} {'p50 ms':>8} {'p90 ms':>8} {'stdev':>7} {'img/s':>7} {'vs torch':>9}")
    for row in rows:
        ratio = f"{row['images_per_s'] / reference:.2f}x" if reference else "-"
        print(f"{row['name']:<48} {row['p50_ms']:8.1f} {row['p90_ms']:8.1f} {row['stdev_ms']:7.1f} "
              f"{row['images_per_s']:7.2f} {ratio:>9}")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "photos": list(PHOTOS), "repeats": args.repeats, "backend": backend, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
