"""Steady masks on video: what ``MaskSmoother`` does to flicker, to moving subjects and to the frame time.

    python benchmarks/smoothing.py [--frames 16] [--size 640x480] [--json-out smoothing.json]

Clips from scikit-image photos, a static camera: a subject photo pasted on a background photo (a
cat on grass, an astronaut on bricks, a coffee cup on gravel). Each clean frame gets a camera's
sensor noise: seeded Gaussian noise, new for each frame. The official U2-NetP (FP32, on the backend
u2edge picks) computes each clip's single-frame masks once; the smoothers then run on those masks
offline, so every row sees the same masks.

- Flicker: a still scene (the subject in the middle). The mean absolute frame-to-frame mask change
  on pixels whose image did not change (equal in consecutive clean frames: here, every pixel), at
  noise sigma 3 and 8 gray levels; and the same on the pixels at the mask's edges (where the
  noise-free frame's mask is between 0.02 and 0.98), where flicker shows.
- Moving subject: the subject sliding right at about 2 px a frame (slow) and 12 px a frame (fast),
  noise sigma 3. On the pixels the subject covers or just left: MAE and IoU at 0.5 of the smoothed
  masks against the single-frame masks; ghosting: the mean mask on the pixels the subject just left
  (background now, subject a frame ago), smoothed minus single-frame; MAE against the masks of the
  noise-free frames (what smoothing tries to recover); and IoU at 0.5 against the pasted region, over
  the whole frame (for the astronaut the mask is the person, not the whole pasted photo). Also the
  flicker on the pixels whose image did not change: near the subject it counts the mask's soft edge
  moving with it, so it is reported in the JSON only.
- Cost: ms per frame of the smoother at 320x240, 640x480 and 1280x720 beside the engine's time per
  frame (preprocess, inference and postprocess) at that size, in the same run.

Rows: single-frame masks; ``MaskSmoother`` at strengths 0.3, 0.6 (the default) and 0.8; and, for
reference, the first version of the filter (gray level, 5x5 blur, change 24, full resolution).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from u2edge import U2EdgeEngine, read_image
from u2edge.bench.clips import add_noise, moving_subject_frames, subject_regions
from u2edge.bench.run import machine, skimage_photos
from u2edge.video.smooth import DEFAULT_CHANGE, DEFAULT_STRENGTH, MaskSmoother

SCENES = (("chelsea.png", "grass.png"), ("astronaut.png", "brick.png"), ("coffee.png", "gravel.png"))
SPEEDS = {"slow": 2, "fast": 12}  # px a frame at 640 wide; scaled with --size
SIGMAS = (3.0, 8.0)  # static-clip noise; moving clips use the first
COST_SIZES = ((320, 240), (640, 480), (1280, 720))
EDGE = (0.02, 0.98)


class FirstVersion:
    """The filter as first written: weight from the 5x5-blurred gray level's change, at full resolution."""

    def __init__(self, strength: float, change: float) -> None:
        self.strength, self.change = strength, change
        self._gray = self._out = None

    def reset(self) -> None:
        self._gray = self._out = None

    def __call__(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        gray = cv2.blur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5)).astype(np.float32)
        if self._out is None:
            self._gray, self._out = gray, mask.astype(np.float32, copy=True)
            return mask
        weight = np.clip(self.strength * (1 - cv2.absdiff(gray, self._gray) / self.change), 0, self.strength)
        self._out = mask + weight * (self._out - mask)
        self._gray = gray
        return self._out


def filters() -> list[tuple[str, Callable | None]]:
    return [("single-frame", None),
            ("strength 0.3", lambda: MaskSmoother(0.3)),
            (f"strength {DEFAULT_STRENGTH} (default)", lambda: MaskSmoother()),
            ("strength 0.8", lambda: MaskSmoother(0.8)),
            ("first version, 0.6 (gray, change 24)", lambda: FirstVersion(0.6, 24.0))]


def smooth(make: Callable | None, frames: list[np.ndarray], masks: np.ndarray) -> np.ndarray:
    if make is None:
        return masks
    smoother = make()
    return np.stack([smoother(f, m) for f, m in zip(frames, masks)])


def unchanged(clean: list[np.ndarray]) -> np.ndarray:
    """(n-1)xHxW: pixels equal in consecutive clean frames."""
    return np.stack([np.all(a == b, axis=-1) for a, b in zip(clean[:-1], clean[1:])])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def still_metrics(out: np.ndarray, clean: list[np.ndarray], reference: np.ndarray) -> dict:
    change = np.abs(np.diff(out, axis=0))
    edge = (reference > EDGE[0]) & (reference < EDGE[1])
    return {"flicker": float(change[unchanged(clean)].mean()), "flicker_edge": float(change[:, edge].mean())}


def moving_metrics(out: np.ndarray, single: np.ndarray, clean: list[np.ndarray], noise_free: np.ndarray,
                   regions: np.ndarray) -> dict:
    out, single, noise_free = out[1:], single[1:], noise_free[1:]  # the first frame starts the filter
    area = regions[1:] | regions[:-1]
    left = regions[:-1] & ~regions[1:]
    return {"mae_vs_single": float(np.abs(out - single)[area].mean()),
            "iou_vs_single": iou(out[area] > 0.5, single[area] > 0.5),
            "ghost": float(out[left].mean() - single[left].mean()),
            "mae_vs_noise_free": float(np.abs(out - noise_free)[area].mean()),
            "iou_vs_pasted": iou(out > 0.5, regions[1:]),
            "flicker_unchanged": float(np.abs(np.diff(out, axis=0))[unchanged(clean[1:])].mean())}


def masks_of(engine: U2EdgeEngine, frames: list[np.ndarray]) -> np.ndarray:
    return np.stack(engine.batch(frames))


def measure_scene(engine: U2EdgeEngine, subject: np.ndarray, background: np.ndarray, args, seed: int) -> dict:
    """Every filter's metrics on one scene's clips."""
    width = args.size[0]
    makers = filters()
    result = {name: {} for name, _ in makers}
    still = [moving_subject_frames(subject, background, frames=3, size=args.size)[1]] * args.frames
    reference = engine(still[0])
    for i, sigma in enumerate(SIGMAS):
        noisy = add_noise(still, sigma=sigma, seed=seed * 100 + i)
        single = masks_of(engine, noisy)
        for name, make in makers:
            for key, value in still_metrics(smooth(make, noisy, single), still, reference).items():
                result[name][f"still_sigma{sigma:g}_{key}"] = value
    for i, (speed, px) in enumerate(SPEEDS.items()):
        total = (width - width // 2) * 640 // (px * width) + 1  # frames to cross at px per frame (at 640 wide)
        clean = moving_subject_frames(subject, background, frames=total, size=args.size)[:args.frames]
        regions = np.stack(subject_regions(frames=total, size=args.size)[:args.frames])
        noisy = add_noise(clean, sigma=SIGMAS[0], seed=seed * 100 + 50 + i)
        single, noise_free = masks_of(engine, noisy), masks_of(engine, clean)
        for name, make in makers:
            for key, value in moving_metrics(smooth(make, noisy, single), single, clean, noise_free, regions).items():
                result[name][f"{speed}_{key}"] = value
    return result


def measure_cost(engine: U2EdgeEngine, photo: np.ndarray, repeats: int) -> list[dict]:
    rows = []
    for size in COST_SIZES:
        frames = add_noise([cv2.resize(photo, size, interpolation=cv2.INTER_AREA)] * 2, sigma=SIGMAS[0], seed=7)
        engine(frames[0])  # warm-up at this size
        started = time.perf_counter()
        masks = [engine(frames[i % 2]) for i in range(repeats)]
        infer_ms = (time.perf_counter() - started) / repeats * 1e3
        smoother = MaskSmoother()
        smoother(frames[0], masks[0])
        calls = 100
        started = time.perf_counter()
        for i in range(calls):
            smoother(frames[i % 2], masks[i % 2])
        smooth_ms = (time.perf_counter() - started) / calls * 1e3
        rows.append({"size": list(size), "smoother_ms": smooth_ms, "engine_ms": infer_ms,
                     "share": smooth_ms / (smooth_ms + infer_ms)})
    return rows


def mean_over_scenes(scenes: dict[str, dict]) -> dict[str, dict]:
    names = next(iter(scenes.values()))
    return {name: {key: float(np.mean([s[name][key] for s in scenes.values()])) for key in names[name]}
            for name in names}


def table(report: dict) -> str:
    rows, single = report["mean"], report["mean"]["single-frame"]
    m = report["machine"]
    w, h = report["size"]
    lines = [(f"{report['frames']}-frame clips of {w}x{h}, mean of {len(report['scenes'])} scenes; "
              f"{report['backend']}; {m['cpu']}, {m['cores']} cores"),
             "", "still scene, static camera: flicker = mean |frame-to-frame mask change| on unchanged pixels (x1e-3)",
             f"{'filter':<40}" + "".join(f"{f'sigma {s:g}':>10}{'ratio':>7}{'edges':>9}{'ratio':>7}" for s in SIGMAS)]
    for name, r in rows.items():
        cells = ""
        for s in SIGMAS:
            k = f"still_sigma{s:g}_"
            cells += (f"{r[k + 'flicker'] * 1e3:10.3f}{r[k + 'flicker'] / single[k + 'flicker']:7.2f}"
                      f"{r[k + 'flicker_edge'] * 1e3:9.2f}{r[k + 'flicker_edge'] / single[k + 'flicker_edge']:7.2f}")
        lines.append(f"{name:<40}{cells}")
    lines += ["", ("moving subject, sigma 3, on the pixels it covers or just left: MAE and IoU vs single-frame, "
                   "ghost = excess mask where it just left (x1e-3),"),
              "MAE vs the noise-free frames' masks (x1e-3); IoU vs the pasted region over the frame"]
    head = f"{'filter':<40}"
    for speed, px in SPEEDS.items():
        head += f"{f'{speed} ({px}px/f): MAE':>20}{'IoU':>7}{'ghost':>7}{'vs clean':>9}{'vs pasted':>10}"
    lines.append(head)
    for name, r in rows.items():
        cells = ""
        for speed in SPEEDS:
            k = f"{speed}_"
            cells += (f"{r[k + 'mae_vs_single'] * 1e3:20.3f}{r[k + 'iou_vs_single']:7.4f}{r[k + 'ghost'] * 1e3:7.2f}"
                      f"{r[k + 'mae_vs_noise_free'] * 1e3:9.3f}{r[k + 'iou_vs_pasted']:10.4f}")
        lines.append(f"{name:<40}{cells}")
    lines += ["", (f"cost of MaskSmoother() (strength {DEFAULT_STRENGTH}, change {DEFAULT_CHANGE:g}) beside the "
                   "engine (preprocess + inference + postprocess), ms a frame"),
              f"{'size':<12}{'smoother':>10}{'engine':>10}{'share':>8}"]
    for c in report["cost"]:
        lines.append(f"{'x'.join(map(str, c['size'])):<12}{c['smoother_ms']:10.2f}{c['engine_ms']:10.1f}"
                     f"{c['share'] * 100:7.2f}%")
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: give WIDTHxHEIGHT, e.g. 640x480") from None
    return w, h


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames in each clip (default: 16)")
    parser.add_argument("--size", type=parse_size, default=(640, 480), help="clip size (default: 640x480)")
    parser.add_argument("--repeats", type=int, default=5, help="engine calls timed at each size (default: 5)")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    photos = {p.name: read_image(p) for p in skimage_photos(tuple({n for pair in SCENES for n in pair}))}
    with U2EdgeEngine(precision="fp32") as engine:
        backend = engine.describe()
        scenes = {f"{sub[:-4]} on {back[:-4]}": measure_scene(engine, photos[sub], photos[back], args, seed)
                  for seed, (sub, back) in enumerate(SCENES)}
        cost = measure_cost(engine, moving_subject_frames(photos[SCENES[0][0]], photos[SCENES[0][1]], frames=3,
                                                          size=(1280, 720))[1], args.repeats)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "backend": backend, "frames": args.frames,
              "size": list(args.size), "sigmas": list(SIGMAS), "speeds_px_per_frame": SPEEDS,
              "mean": mean_over_scenes(scenes), "scenes": scenes, "cost": cost,
              "seconds": round(time.perf_counter() - started, 1)}
    print(table(report))
    print(f"\n{report['seconds']:.0f} s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
