"""Make the quantization file that ships with u2edge for the CPU INT8 model (``u2edge/data``).

    python -m u2edge.export.cpu_int8 --model u2netp     # writes u2edge/data/int8_u2netp.json
    python -m u2edge.export.cpu_int8 --model u2net

It calibrates the official ONNX on 15 scikit-image photos (MinMax: U-2-Net's largest activations
carry the salient signal, so nothing is clipped) and keeps in float the layers the accuracy gate
needs, found on 5 other photos that never calibrate: the OpenVINO INT8 model is scored against the
FP32 masks on those 5 (the gate with a margin, so that other CPUs pass it too) and on the 15
calibration photos too (the gate itself: a user's folder holds such photos). Where it misses, a
sensitivity pass runs each conv alone in INT8 on the hardest photos, and the most damaging stay in
float, a few more at a time; then the costliest of those go back to INT8 one by one wherever the
gate still passes without them. The file holds the ranges, the float layers and what was measured;
``u2edge.cpu`` turns it into the INT8 model on a user's machine without any image.

``tests/test_cpu.py`` checks that the shipped file is what this produces (the search's result,
the float layers, is taken from the file there: the search runs minutes, the rest seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from .._deps import require
from .._files import write_bytes_atomic
from ..cpu import PARAMS_FORMAT, cpu_features, params_path
from ..images import read_image
from ..metrics import agreement
from ..onnxgraph import fused_graph
from ..processing import postprocess, preprocess
from ..qdq import conv_nodes, layer_names, nonnegative_inputs, quantize, tail_convs
from ..weights import WEIGHTS, default_onnx
from .precision import Gate, conv_macs
from .quantize import calibrate

__all__ = ["CALIBRATION_PHOTOS", "HELD_OUT_PHOTOS", "MARGIN", "passes_gate", "make_params", "main"]

log = logging.getLogger("u2edge")

CALIBRATION_PHOTOS = ("camera.png", "coins.png", "ihc.png", "hubble_deep_field.jpg", "brick.png", "grass.png",
                      "gravel.png", "color.png", "logo.png", "page.png", "moon.png", "horse.png", "retina.jpg",
                      "cell.png", "motorcycle_right.png")
HELD_OUT_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
MARGIN = 0.005  # the search asks for min IoU >= gate + MARGIN, so that other CPUs' kernels pass the gate
_KEEP_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24)


def photo_dir() -> Path:
    data = require("skimage.data")
    return Path(data.__file__).parent


class OpenVinoScorer:
    """Masks of candidate graphs on OpenVINO (what runs), scored against the FP32 graph's masks."""

    def __init__(self, fp32, frames: dict[str, np.ndarray], spec) -> None:
        self.frames, self.spec = frames, spec
        self.inputs = {name: preprocess(frame, spec)[None] for name, frame in frames.items()}
        self.reference = self.masks(fp32, inference="f32")

    def masks(self, proto, names: Sequence[str] | None = None, inference: str = "f32") -> dict[str, np.ndarray]:
        from ..backends.openvino import OpenVinoBackend

        with tempfile.TemporaryDirectory(prefix="u2edge-int8-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            path.write_bytes(proto.SerializeToString())
            backend = OpenVinoBackend(path, inference_precision=inference)
        try:
            return {name: postprocess(backend.infer(self.inputs[name])[0], *self.frames[name].shape[:2])
                    for name in names or list(self.frames)}
        finally:
            backend.close()

    def score(self, proto, names: Sequence[str] | None = None, inference: str = "f32") -> dict:
        """Per image: IoU, MAE and whether the FP32 mask has a subject."""
        return {name: agreement(mask, self.reference[name])
                for name, mask in self.masks(proto, names, inference).items()}


def summary(per_image: dict, names: Sequence[str] | None = None) -> dict:
    """Min IoU over the images with a subject and mean MAE over all, among ``names``."""
    chosen = {k: v for k, v in per_image.items() if names is None or k in names}
    ious = [v["iou"] for v in chosen.values() if v["subject"]]
    return {"min_iou": round(min(ious, default=1.0), 4),
            "mean_mae": round(float(np.mean([v["mae"] for v in chosen.values()])), 5)}


def passes_gate(per_image: dict, gate: Gate = Gate()) -> bool:
    """The search's gate: on the held-out photos with the margin, and on every photo with a subject
    (the calibration ones too: a user's folder holds such photos) without it. ``auto`` runs the
    INT8 model only where it passed this when the file was made."""
    held, every = summary(per_image, HELD_OUT_PHOTOS), summary(per_image)
    return (held["min_iou"] >= gate.min_iou + MARGIN and held["mean_mae"] <= gate.max_mae
            and every["min_iou"] >= gate.min_iou and every["mean_mae"] <= gate.max_mae)


def make_params(model: str, *, photos: Path | None = None, keep_float: Sequence[str] | None = None,
                gate: Gate = Gate(), progress=None) -> dict:
    """The quantization file's content for ``model``. With ``keep_float`` the search is skipped."""
    onnx = require("onnx")
    progress = progress or (lambda stage, done, total: None)
    photos = photos or photo_dir()
    spec = WEIGHTS[model].preprocessing
    fp32 = fused_graph(onnx.load(str(default_onnx(model))), spec.imgsz, 1)  # batch 1, as u2edge.cpu makes it
    batches = [preprocess(read_image(photos / name), spec)[None] for name in CALIBRATION_PHOTOS]
    amax = calibrate(fp32, batches, "minmax", progress=lambda n: progress("calibrating", n, len(batches)))
    names = layer_names(fp32)
    tail = tail_convs(fp32)
    positive = nonnegative_inputs(fp32)
    convs = [n for n in conv_nodes(fp32) if n.name not in tail]
    ranges = {names[n.name]: round(float(amax[n.input[0]]), 6) for n in convs}
    signed = [names[n.name] for n in convs if n.input[0] not in positive]  # the first conv: always float
    by_layer = {layer: node for node, layer in names.items()}
    rounded = {n.input[0]: ranges[names[n.name]] for n in convs}

    def graph(floats: Sequence[str]):
        return quantize(fp32, rounded, keep_float=[by_layer[k] for k in floats], unsigned=positive)

    every = HELD_OUT_PHOTOS + CALIBRATION_PHOTOS
    scorer = OpenVinoScorer(fp32, {name: read_image(photos / name) for name in every}, spec)
    search: list[dict] = []
    if keep_float is None:
        macs = {names[node]: count for node, count in conv_macs(fp32).items()}
        keep_float = _search(graph, scorer, signed, [names[n.name] for n in convs if names[n.name] not in signed],
                             macs, gate, search, progress)
    per_image = scorer.score(graph(keep_float))
    measured = {**summary(per_image, HELD_OUT_PHOTOS), "images": list(HELD_OUT_PHOTOS),
                "passed": passes_gate(per_image, gate),
                "all_photos": {**summary(per_image), "images": list(every)},
                "per_image": {k: {"iou": round(v["iou"], 4), "mae": round(v["mae"], 5), "subject": v["subject"]}
                              for k, v in per_image.items()}}
    features = cpu_features()
    openvino = require("openvino")
    return {
        "format": PARAMS_FORMAT,
        "model": model,
        "onnx_sha256": WEIGHTS[model].sha256,
        "scheme": "Q/DQ on every conv but the fused tail and keep_float: per-channel symmetric INT8 weights, "
                  "per-tensor unsigned INT8 activations (zero point 0) after ReLU, biases in float",
        "calibration": {"method": "minmax", "images": list(CALIBRATION_PHOTOS)},
        "ranges": ranges,
        "keep_float": list(keep_float),
        "gate": {"min_iou": gate.min_iou, "max_mae": gate.max_mae, "search_margin": MARGIN},
        "measured": {**measured, "cpu": features.name,
                     "cpu_int8": features.int8, "openvino": openvino.__version__.split("-")[0],
                     "u2edge": __version__, "search": search},
    }


def _search(graph, scorer: OpenVinoScorer, signed: list[str], candidates: list[str], macs: dict[str, int],
            gate: Gate, search: list[dict], progress) -> list[str]:
    """The float layers the gate needs (see ``passes``)."""
    def passes(per_image: dict) -> bool:
        return passes_gate(per_image, gate)

    def record(keep: list[str], per_image: dict, what: str) -> None:
        held, every = summary(per_image, HELD_OUT_PHOTOS), summary(per_image)
        search.append({"keep": list(keep), "held_out": held, "all_photos": every})
        log.info("%s: held out min IoU %.4f, MAE %.4f; all photos min IoU %.4f, MAE %.4f", what, held["min_iou"],
                 held["mean_mae"], every["min_iou"], every["mean_mae"])

    naive = scorer.score(graph(signed))
    record(signed, naive, f"all {len(candidates)} convs INT8")
    if passes(naive):
        return signed
    with_subject = [k for k, v in naive.items() if v["subject"]]
    hardest = sorted(with_subject, key=lambda k: naive[k]["iou"])[:2]
    damage = {}
    for i, conv in enumerate(candidates):
        alone = summary(scorer.score(graph(signed + [c for c in candidates if c != conv]), hardest))
        damage[conv] = (1.0 - alone["min_iou"]) + 10.0 * alone["mean_mae"]
        progress("sensitivity", i + 1, len(candidates))
    order = sorted(candidates, key=lambda c: -damage[c])
    best = None
    for step, k in enumerate(_KEEP_STEPS):
        keep = signed + order[:k]
        per_image = scorer.score(graph(keep))
        record(keep, per_image, f"keeping {keep} in float")
        progress("gate search", step + 1, len(_KEEP_STEPS))
        if passes(per_image):
            return _prune(graph, scorer, signed, keep, macs, passes, record)
        worst = summary(per_image)["min_iou"]
        if best is None or worst > best[0]:
            best = (worst, keep)
    log.warning("no search step passed the gate with its margin; keeping the best: %s", best[1])
    return best[1]


def _prune(graph, scorer: OpenVinoScorer, signed: list[str], keep: list[str], macs: dict[str, int], passes,
           record) -> list[str]:
    """Give the costliest float layers back to INT8, one at a time, where the gate still passes:
    layers added for their damage alone may not all be needed together, and a full-resolution
    conv in float costs a tenth of U2-NetP's time."""
    for layer in sorted(keep[len(signed):], key=lambda k: -macs.get(k, 0)):
        trial = [k for k in keep if k != layer]
        per_image = scorer.score(graph(trial))
        record(trial, per_image, f"without {layer} in float")
        if passes(per_image):
            keep = trial
    return keep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m u2edge.export.cpu_int8", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(WEIGHTS), default="u2netp")
    parser.add_argument("-o", "--output", type=Path, help="default: u2edge/data/int8_MODEL.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    params = make_params(args.model)
    out = args.output or params_path(args.model)
    write_bytes_atomic(out, (json.dumps(params, indent=1) + "\n").encode())
    measured = params["measured"]
    print(f"{out}: {len(params['keep_float'])} layers in float ({', '.join(params['keep_float'])}); held out: "
          f"min IoU {measured['min_iou']:.4f}, mean MAE {measured['mean_mae']:.4f}; all photos: min IoU "
          f"{measured['all_photos']['min_iou']:.4f}; {'passed' if measured['passed'] else 'MISSED'} the gate on "
          f"{measured['cpu']} "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
