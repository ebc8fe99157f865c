"""Cut out or mask images: files, folders or globs -> OUTDIR/<name>.png.

Examples:
  u2edge image photo.jpg -o out/                    # out/photo.png, 8-bit mask
  u2edge image photos/ -o out/ --mode cutout        # RGBA cutouts
  u2edge image 'shots/*.jpg' -o out/ --bg-color '#00ff00'
  u2edge image photo.jpg -o out/ --bg-blur 31 --engine u2netp.onnx

Inputs are never overwritten, every output is written atomically, and an unreadable input (corrupt,
truncated, not an image, or over --max-pixels) is reported on one line while the others go on (the
exit code is then 1). Decoding, inference and encoding overlap, through the same pipeline as
`u2edge video`; outputs keep the input order.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .._files import output_folder
from ..errors import U2EdgeError
from ..images import expand_inputs, pixel_limit, read_image
from ..render import Background, Mode, parse_color, render
from ..video import ImageSequenceSource, PerFileSink, Pipeline, Stats
from ..video.sources import CorruptFrame
from .options import (add_engine_option, add_json_option, add_max_pixels_option, add_render_options, open_engine,
                      print_json)
from .progress import Progress

log = logging.getLogger("u2edge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the PNG outputs")
    add_max_pixels_option(parser)
    add_engine_option(parser)
    add_render_options(parser)
    add_json_option(parser)


def resolve_rendering(args: argparse.Namespace) -> tuple[Mode, Background | None]:
    """The mode and background the options ask for; --bg-* implies the background mode."""
    background = None
    if args.bg_color is not None:
        background = Background(color=parse_color(args.bg_color))
    elif args.bg_image is not None:
        background = Background(image=read_image(args.bg_image, max_pixels=args.max_pixels))
    elif args.bg_blur is not None:
        if args.bg_blur < 1:
            raise U2EdgeError(f"--bg-blur {args.bg_blur} must be a positive kernel size, such as 31")
        background = Background(blur=args.bg_blur)
    mode = Mode(args.mode) if args.mode else (Mode.BACKGROUND if background else Mode.MASK)
    if background is not None and mode is not Mode.BACKGROUND:
        raise U2EdgeError(f"--bg-color/--bg-image/--bg-blur need --mode background, not --mode {mode.value}")
    if mode is Mode.BACKGROUND and background is None:
        raise U2EdgeError("--mode background needs --bg-color, --bg-image or --bg-blur")
    return mode, background


def plan_outputs(inputs: list[Path], outdir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pairs (input, output) and one problem line for each input that cannot be written safely."""
    sources = {p.resolve() for p in inputs}
    taken: dict[Path, Path] = {}
    jobs, problems = [], []
    for path in inputs:
        out = outdir / f"{path.stem}.png"
        key = out.resolve()
        if key in sources:
            problems.append(f"{path}: its output {out} is an input; refusing to overwrite it (choose another -o)")
        elif key in taken:
            problems.append(f"{path}: its output {out} is already the output of {taken[key]}; rename one of them")
        else:
            taken[key] = path
            jobs.append((path, out))
    return jobs, problems


def plan(args: argparse.Namespace) -> tuple[int, Mode, Background | None, Path, list, list[str]]:
    """What ``u2edge image`` (and ``batch``) will do, checked before any work: the pixel limit, the
    rendering, the output folder, the (input, output) jobs, and the inputs' problems (each logged)."""
    limit = pixel_limit(args.max_pixels)  # a bad limit is one line before any work
    mode, background = resolve_rendering(args)
    paths, problems = expand_inputs(args.inputs)
    outdir = output_folder(Path(args.output), "-o", "give a folder for the outputs")
    jobs, unsafe = plan_outputs(paths, outdir)
    problems += unsafe
    for line in problems:
        log.error("%s", line)
    return limit, mode, background, outdir, jobs, problems


def run(args: argparse.Namespace) -> int:
    limit, mode, background, outdir, jobs, problems = plan(args)
    results, pipeline_stats, total = [], None, 0.0
    if jobs:
        with open_engine(args) as engine:
            log.debug("engine: %s", engine.describe())
            progress = Progress(len(jobs), "image", enabled=not args.quiet)
            sink, stats, total = process(engine, jobs, mode, background, problems, progress, max_pixels=limit,
                                         spell=lambda name: args.flags.get(name, name))
        # one latency per file written, in the same order: both are recorded by the output thread
        results = [{"input": str(src), "output": str(out), "height": height, "width": width,
                    "seconds": round(seconds, 4)}
                   for (src, out, (height, width)), seconds in zip(sink.files, stats.latencies)]
        pipeline_stats = stats.summary()
        log.debug("stage ms/image: %s", ", ".join(f"{k} {v:.1f}" for k, v in pipeline_stats["stage_ms"].items()))
    return report(args, outdir, mode, results, problems, total, pipeline=pipeline_stats)


def report(args: argparse.Namespace, outdir: Path, mode: Mode, images: list[dict], problems: list[str],
           total: float, *, failed: int | None = None, **extra) -> int:
    """What ``u2edge image`` (and ``batch``) did: JSON with --json, else one line; then the exit code,
    1 if anything failed. ``failed`` counts the inputs lost (default: one per problem); ``extra`` adds
    the command's own fields."""
    failed = len(problems) if failed is None else failed
    summary = {"written": len(images), "failed": failed, "outdir": str(outdir), "mode": mode.value,
               "seconds": round(total, 3),
               "seconds_per_image": round(total / len(images), 4) if images else None,
               "images": images, "errors": problems, **extra}
    if args.json:
        print_json(summary)
    elif not args.quiet:
        per = f" ({summary['seconds_per_image'] * 1000:.0f} ms/image)" if images else ""
        print(f"{len(images)} written to {outdir} in {total:.1f} s{per}, {failed} failed")
    return 1 if problems else 0


def process(engine, jobs: list[tuple[Path, Path]], mode: Mode, background: Background | None,
            problems: list[str], progress: Progress, *, max_pixels: int | None = None,
            spell=lambda name: name) -> tuple[PerFileSink, Stats, float]:
    """Run the planned (input, output) jobs through the video pipeline, in order: decoding (the
    capture thread), inference (this thread), then rendering and PNG encoding (the output thread)
    overlap. An unreadable input is logged on one line (its parameters named by ``spell``) and
    added to ``problems``; the others go on. Returns the sink (what was written), the pipeline's
    stats, and the seconds it took."""

    def unreadable(exc: CorruptFrame) -> None:  # called in the capture thread
        line = exc.message(spell)
        log.error("%s", line)
        problems.append(line)

    def step(stats: Stats) -> None:  # called in this thread, after each inference
        while progress.done < stats.processed + stats.corrupt:
            progress.step()

    sink = PerFileSink(jobs)
    # queues of one: enough to overlap the three stages, and few large frames in memory at once
    source = ImageSequenceSource(f"{len(jobs)} images", [src for src, _ in jobs], max_pixels=max_pixels)
    pipeline = Pipeline(source, engine, sink,
                        render=lambda frame, mask: render(frame, mask, mode, background), queue_size=1, retries=0,
                        on_frame=step, on_corrupt=unreadable)
    started = time.perf_counter()
    try:
        stats = pipeline.run()
        step(stats)
    finally:
        progress.close()
    if stats.error:  # an image list fails only frame by frame; this would be a source that stopped early
        log.error("%s", stats.error)
        problems.append(stats.error)
    return sink, stats, time.perf_counter() - started
