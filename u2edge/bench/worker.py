"""One benchmark configuration in a process of its own:

    python -m u2edge.bench.worker SPEC.json RESULT.json

SPEC names the kind ("u2edge": a model file on a u2edge backend, or with no file the official
model by name at ``--precision auto``; "torch": the official-style PyTorch eager pipeline), the
images, the repeats and the batch sizes. RESULT gets the inference latencies, the batch
throughputs, the end-to-end timings (decode to encoded PNG, as ``u2edge image`` does it), the peak
memory, the model file that ran, and the path of an .npz holding every image's mask.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from .timing import measure, peak_rss_mb

__all__ = ["main"]


def _u2edge(spec: dict, out: dict) -> dict[str, np.ndarray]:
    from .. import U2EdgeEngine, read_image
    from ..images import write_image
    from ..processing import preprocess
    from ..render import render

    paths = [Path(p) for p in spec["images"]]
    if spec["path"] is None:  # the default: the model by name, at the precision auto picks here
        engine = U2EdgeEngine(model=spec["model"], precision="auto", **spec.get("options", {}))
    else:
        engine = U2EdgeEngine(spec["path"], backend=spec.get("backend"), **spec.get("options", {}))
    with engine, tempfile.TemporaryDirectory(prefix="u2edge-bench-") as tmp:
        out["describe"], out["path"] = engine.describe(), str(engine.path)
        frames = [read_image(p) for p in paths]
        if engine.backend.gpu_frames:  # a backend that takes frames (a server, the GPU frame path): frames in
            out["inference"] = measure(lambda frame: engine.backend.infer_frames([frame]), frames, spec["repeats"])
            out["batches"], out["fixed_batch"] = {}, None
        else:
            inputs = [preprocess(f, engine.preprocessing)[None] for f in frames]
            out["inference"] = measure(engine.backend.infer, inputs, spec["repeats"])
            out["batches"], out["fixed_batch"] = {}, engine.backend.batch_size
        for size in spec["batches"] if not engine.backend.gpu_frames else ():
            if size == 1 or engine.backend.batch_size not in (None, size):
                continue  # batch 1 is the row above; a fixed-batch model runs only its own batch
            stacked = np.concatenate([inputs[i % len(inputs)] for i in range(size)])
            timed = measure(engine.backend.infer, [stacked], spec["repeats"])
            out["batches"][str(size)] = [size * p for p in timed["passes"]]

        def end_to_end(path: Path) -> None:
            frame = read_image(path)
            write_image(Path(tmp) / f"{path.stem}.png", render(frame, engine(frame), "mask"))

        out["end_to_end"] = measure(end_to_end, paths, spec["repeats"])
        if spec.get("options", {}).get("device", "cpu").startswith("cuda"):
            import torch

            out["gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return {p.name: engine(f) for p, f in zip(paths, frames)}


def _torch(spec: dict, out: dict) -> dict[str, np.ndarray]:
    """The official U-2-Net test script's pipeline: PIL in, every side output computed, normPRED,
    PIL bilinear resize back, PNG out. Only the model file format differs (u2edge's loader), and
    images are decoded as every other row decodes them (``read_image``: the same checks, the same
    EXIF orientation), then handed to PIL."""
    import torch
    from PIL import Image

    from ..images import read_image
    from ..model import from_file

    model = from_file(spec["path"])
    out["path"] = spec["path"]
    out["describe"] = f"torch {torch.__version__} eager (cpu, fp32, {torch.get_num_threads()} threads)"
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def tensor_of(image: Image.Image):
        x = np.asarray(image.resize((320, 320), Image.BILINEAR), np.float64)
        x = (x / max(x.max(), 1e-6) - mean) / std
        return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))

    def infer(x):
        with torch.inference_mode():
            return model(x)  # all seven outputs, as the official script computes them

    def mask_of(image: Image.Image) -> Image.Image:
        d0 = infer(tensor_of(image))[0][0, 0]
        d0 = (d0 - d0.min()) / (d0.max() - d0.min())
        return Image.fromarray((d0.numpy() * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)

    def open_rgb(path: Path) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(read_image(path)[:, :, ::-1]))

    paths = [Path(p) for p in spec["images"]]
    images = [open_rgb(p) for p in paths]
    out["inference"] = measure(infer, [tensor_of(im) for im in images], spec["repeats"])
    out["batches"] = {}
    with tempfile.TemporaryDirectory(prefix="u2edge-bench-") as tmp:
        out["end_to_end"] = measure(lambda p: mask_of(open_rgb(p)).save(Path(tmp) / f"{p.stem}.png"), paths,
                                    spec["repeats"])
    return {p.name: np.asarray(mask_of(im), np.float32) / 255.0 for p, im in zip(paths, images)}


KINDS = {"u2edge": _u2edge, "torch": _torch}


def main(argv: list[str] | None = None) -> int:
    spec_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text())
    out: dict = {}
    masks = KINDS[spec["kind"]](spec, out)
    out["masks"] = str(Path(result_path).with_suffix(".npz"))
    np.savez(out["masks"], **{name: m.astype(np.float16) for name, m in masks.items()})
    out["peak_rss_mb"] = peak_rss_mb()
    Path(result_path).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
