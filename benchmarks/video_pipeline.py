"""Pipelined ``u2edge video`` throughput on a 720p clip against the backend's inference-only
throughput, in the same run; and camera-to-render latency on a simulated live source.

    python benchmarks/video_pipeline.py [--engine MODEL] [--frames 60] [--json-out video.json]

The clip is made from scikit-image photos (a cat sliding over grass, 1280x720, 30 FPS). Rows:
- inference only: the backend on the clip's preprocessed frames, nothing else;
- ``u2edge video``: decode, preprocess, infer, postprocess, render and encode, through the
  three-thread pipeline into an .mp4 (mask and cutout modes);
- live: the same frames from a simulated 30 FPS camera (newest frame only) into a null sink, for
  the latency from capture to written frame and the stale frames dropped.
Warm-ups are excluded. The goal is pipelined >= 90% of inference-only throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from u2edge import U2EdgeEngine, read_image
from u2edge.bench.clips import moving_subject_frames, write_clip
from u2edge.bench.run import machine, skimage_photos
from u2edge.processing import preprocess
from u2edge.render import render
from u2edge.video import Pipeline, Source, open_sink, open_source


class SimulatedCamera(Source):
    """The clip's frames at a camera's pace, forever in a loop, like a live device."""

    live = True

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self.uri, self.frames, self.period, self.fps = f"simulated://{fps:g}fps", frames, 1.0 / fps, fps
        self._i, self._next = 0, time.perf_counter()

    def read(self) -> np.ndarray:
        self._next += self.period
        time.sleep(max(0.0, self._next - time.perf_counter()))
        frame = self.frames[self._i % len(self.frames)]
        self._i += 1
        return frame


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="model file (default: the official U2-NetP, on the backend u2edge picks)")
    parser.add_argument("--frames", type=int, default=60, help="frames in the clip (default: 60)")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)
    cat, grass = (read_image(p) for p in skimage_photos(("chelsea.png", "grass.png")))
    frames = moving_subject_frames(cat, grass, frames=args.frames, size=(1280, 720))
    rows = []
    with U2EdgeEngine(args.engine) as engine, tempfile.TemporaryDirectory(prefix="u2edge-video-") as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", frames, 30)
        decoded = []
        with open_source(str(clip)) as source:
            while (frame := source.read()) is not None:
                decoded.append(frame)
        inputs = [preprocess(f, engine.preprocessing)[None] for f in decoded]
        for x in inputs[:3]:  # warm-up
            engine.backend.infer(x)
        start = time.perf_counter()
        for x in inputs:
            engine.backend.infer(x)
        infer_fps = len(inputs) / (time.perf_counter() - start)
        rows.append({"name": "inference only", "fps": infer_fps, "vs_inference": 1.0})
        for mode in ("mask", "cutout"):
            sink = open_sink(str(Path(tmp) / f"{mode}.mp4"), fps=30)
            stats = Pipeline(open_source(str(clip)), engine, sink,
                             render=lambda f, m, mode=mode: render(f, m, mode)).run().summary()
            rows.append({"name": f"u2edge video, {mode} -> mp4", "fps": stats["end_to_end_fps"],
                         "network_fps": stats["network_fps"], "vs_inference": stats["end_to_end_fps"] / infer_fps,
                         "frames": stats["frames"]["written"], "stage_ms": stats["stage_ms"]})
        live = Pipeline(SimulatedCamera(decoded, 30), engine, open_sink("null"), max_frames=args.frames,
                        render=lambda f, m: render(f, m, "mask")).run().summary()
        rows.append({"name": "live 30 FPS camera, newest frame -> null", "fps": live["end_to_end_fps"],
                     "network_fps": live["network_fps"], "vs_inference": live["end_to_end_fps"] / infer_fps,
                     "frames": live["frames"]["written"], "dropped": live["frames"]["dropped"],
                     "latency_ms": live["latency_ms"], "stage_ms": live["stage_ms"]})
        backend = engine.describe()
    print(f"{args.frames} frames of 1280x720; {backend}")
    print(f"{'configuration':<44} {'FPS':>6} {'vs inference':>13}  notes")
    for row in rows:
        notes = ""
        if "latency_ms" in row:
            lat = row["latency_ms"]
            notes = f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms; {row['dropped']} stale dropped"
        elif "stage_ms" in row:
            notes = ", ".join(f"{k} {v:.1f}" for k, v in row["stage_ms"].items()) + " ms/frame"
        print(f"{row['name']:<44} {row['fps']:6.2f} {row['vs_inference'] * 100:12.1f}%  {notes}")
    if args.json_out:
        result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "backend": backend,
                  "frames": args.frames, "size": [1280, 720], "rows": rows}
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
