"""The soak run: resident memory over a long stream through the real pipeline (Linux).

    python benchmarks/soak.py [--frames 10000] [--size 640x480] [--sink video|null] [--json-out soak.json]

A video file of ``--frames`` frames is written with OpenCV from scikit-image photos (each subject
slides over a background for 100 frames, then the next one comes), opened with
``u2edge.video.open_source`` and run through ``Pipeline`` with ``U2EdgeEngine()`` (the default
model and precision) into a video file (``--sink video``, the default) or the null sink. The
resident set size (VmRSS in /proc/self/status) is read after every frame, from the pipeline's
``on_frame`` callback. Reported: RSS at the start (the engine open, before the first frame), at
10% of the frames, its maximum after that and at the end, the growth from 10% to that maximum,
and frames per second. A leak shows as growth after 10%; the first 10% hold the warm-up (thread
pools, the encoder's buffers).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2

from u2edge import U2EdgeEngine, read_image
from u2edge.bench.run import machine, skimage_photos
from u2edge.render import render
from u2edge.video import Pipeline, open_sink, open_source

SUBJECTS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png")
BACKGROUNDS = ("grass.png", "brick.png", "gravel.png")
SCENE = 100  # frames each subject slides for


def status_mib(field: str) -> float:
    """A memory line of /proc/self/status in MiB: VmRSS (resident now) or VmHWM (the peak so far)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status: the soak run needs Linux")


def rss_mib() -> float:
    return status_mib("VmRSS")


def peak_rss_mib() -> float:
    return status_mib("VmHWM")


def write_stream(path: Path, frames: int, size: tuple[int, int], fps: float = 30.0) -> Path:
    """An .mp4 of ``frames`` frames made from real photos, written one frame at a time (10,000
    frames of 640x480 would not fit in memory as a list)."""
    width, height = size
    subjects = [cv2.resize(read_image(p), (width // 2, height // 2), interpolation=cv2.INTER_AREA)
                for p in skimage_photos(SUBJECTS)]
    backgrounds = [cv2.resize(read_image(p), size, interpolation=cv2.INTER_AREA) for p in skimage_photos(BACKGROUNDS)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    try:
        for i in range(frames):
            scene, step = divmod(i, SCENE)
            sub = subjects[scene % len(subjects)]
            frame = backgrounds[scene % len(backgrounds)].copy()
            x, y = (width - sub.shape[1]) * step // (SCENE - 1), height // 4
            frame[y:y + sub.shape[0], x:x + sub.shape[1]] = sub
            writer.write(frame)
    finally:
        writer.release()
    return path


def soak(clip: Path, sink_uri: str, frames: int, mode: str) -> dict:
    """Run the clip through the pipeline, reading RSS after every frame."""
    samples: list[tuple[int, float]] = []  # (frames processed, RSS MiB)

    def on_frame(stats) -> None:
        samples.append((stats.processed, rss_mib()))

    with U2EdgeEngine() as engine:
        source = open_source(str(clip))
        if source.count is not None and source.count != frames:
            raise RuntimeError(f"{clip} holds {source.count} frames, not {frames}")
        sink = open_sink(sink_uri, fps=source.fps)
        start_rss = rss_mib()
        started = time.perf_counter()
        stats = Pipeline(source, engine, sink, render=lambda frame, mask: render(frame, mask, mode),
                         on_frame=on_frame).run()
        seconds = time.perf_counter() - started
        describe = engine.describe()
    summary = stats.summary()
    tenth = max(1, frames // 10)
    at_tenth = next(rss for n, rss in samples if n >= tenth)
    after = [rss for n, rss in samples if n > tenth]
    peak_after = max(after) if after else at_tenth
    # one RSS sample for each 1% of the stream, for a plot
    step = max(1, len(samples) // 100)
    return {
        "engine": describe, "frames": frames, "sink": sink_uri, "mode": mode,
        "written": summary["frames"]["written"], "corrupt": summary["frames"]["corrupt"],
        "stop": summary["stop"], "error": summary["error"], "seconds": round(seconds, 1),
        "end_to_end_fps": summary["end_to_end_fps"], "network_fps": summary["network_fps"],
        "stage_ms": summary["stage_ms"],
        "rss_mib": {"start": round(start_rss, 1), "first_frame": round(samples[0][1], 1) if samples else None,
                    "at_10_percent": round(at_tenth, 1), "max_after_10_percent": round(peak_after, 1),
                    "end": round(samples[-1][1], 1) if samples else None,
                    "growth_after_10_percent": round(peak_after - at_tenth, 1),
                    # the kernel updates VmHWM lazily: a later sample can be above it
                    "peak": round(max([peak_rss_mib()] + [rss for _, rss in samples]), 1)},
        "rss_samples": [[n, round(rss, 1)] for n, rss in samples[::step]],
    }


def table(report: dict) -> str:
    rss = report["rss_mib"]
    frames = f"{report['written']} written of {report['frames']} ({report['stop']}), {report['corrupt']} corrupt"
    rows = [("engine", report["engine"]), ("frames", frames),
            ("sink", report["sink"]), ("seconds", f"{report['seconds']}"),
            ("frames/s", f"{report['end_to_end_fps']} end to end, {report['network_fps']} network"),
            ("RSS at start", f"{rss['start']} MiB (engine open, no frame yet)"),
            ("RSS first frame", f"{rss['first_frame']} MiB"),
            ("RSS at 10%", f"{rss['at_10_percent']} MiB"),
            ("RSS max after", f"{rss['max_after_10_percent']} MiB ({rss['growth_after_10_percent']:+.1f} from 10%)"),
            ("RSS at end", f"{rss['end']} MiB"), ("RSS peak", f"{rss['peak']} MiB")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: give WIDTHxHEIGHT, such as 640x480") from None
    if width < 64 or height < 64:
        raise argparse.ArgumentTypeError(f"size {text!r}: at least 64x64")
    return width, height


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000, help="frames in the stream (default: 10000)")
    parser.add_argument("--size", type=parse_size, default=(640, 480), help="frame size (default: 640x480)")
    parser.add_argument("--sink", choices=("video", "null"), default="video",
                        help="an .mp4 file in a temp folder (default) or the null sink")
    parser.add_argument("--mode", default="mask", choices=("mask", "cutout", "side-by-side"),
                        help="what is rendered (default: mask)")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)
    if args.frames < 20:
        parser.error("--frames must be at least 20")
    with tempfile.TemporaryDirectory(prefix="u2edge-soak-") as tmp:
        clip = write_stream(Path(tmp) / "stream.mp4", args.frames, args.size)
        sink = str(Path(tmp) / "out.mp4") if args.sink == "video" else "null"
        report = soak(clip, sink, args.frames, args.mode)
        report["clip_mb"] = round(clip.stat().st_size / 1e6, 1)
    report = {"machine": machine(), "size": list(args.size), **report}
    print(table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["written"] == args.frames and report["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
