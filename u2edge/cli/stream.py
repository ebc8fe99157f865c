"""What ``u2edge camera`` and ``u2edge video`` share: running a pipeline and reporting its stats."""

from __future__ import annotations

import argparse
import logging
import time

from ..errors import U2EdgeError
from ..render import Background, Mode, render
from ..video import Pipeline, Sink, Source, Stats
from ..video.smooth import DEFAULT_STRENGTH
from ..video.sources import CorruptFrame
from .image import resolve_rendering
from .options import open_engine, print_json
from .progress import Progress

log = logging.getLogger("u2edge")


def renderer(args: argparse.Namespace):
    mode, background = resolve_rendering(args)

    def draw(frame, mask, mode: Mode = mode, background: Background | None = background):
        return render(frame, mask, mode, background)

    return draw


def run_pipeline(args: argparse.Namespace, source: Source, sink: Sink) -> int:
    """Run to the end; print the stats (a table, or JSON with --json). 1 if the source failed, or
    if frames of a file or folder could not be decoded (each is one line; the others are written)."""
    try:
        if args.max_frames is not None and args.max_frames < 1:
            raise U2EdgeError(f"--max-frames {args.max_frames} must be at least 1")
        if args.retries < 0:
            raise U2EdgeError(f"--retries {args.retries} must be 0 or more")
        if args.smooth is not None and not 0 <= args.smooth < 1:
            raise U2EdgeError(f"--smooth {args.smooth} must be at least 0 and below 1 (without a value: "
                              f"{DEFAULT_STRENGTH})")
        draw = renderer(args)
        engine = open_engine(args)
    except BaseException:  # nothing ran: leave no output behind
        sink.abort()
        source.close()
        raise
    deadline = time.perf_counter() + args.duration if getattr(args, "duration", None) else None
    with engine:
        log.debug("engine: %s; source %s (%s); sink %s", engine.describe(), source.uri,
                  "live" if source.live else "lossless", sink.uri)
        total = min((n for n in (source.count, args.max_frames) if n), default=0)
        progress = Progress(total, "video", enabled=not args.quiet and bool(total))

        def on_frame(stats: Stats) -> None:
            progress.step()
            if deadline is not None and time.perf_counter() > deadline:
                raise _Duration()

        def on_corrupt(exc: CorruptFrame) -> None:
            log.warning("skipping a frame: %s", exc.message(lambda name: args.flags.get(name, name)))

        pipeline = Pipeline(source, engine, sink, render=draw, retries=args.retries, max_frames=args.max_frames,
                            smooth=args.smooth, on_frame=on_frame, on_corrupt=on_corrupt)
        try:
            stats = pipeline.run()
        except _Duration:
            stats = pipeline.stats
            stats.stop_reason = "duration"
        except KeyboardInterrupt:
            progress.close()
            report(args, pipeline.stats, source, sink)
            raise
        finally:
            progress.close()
        report(args, stats, source, sink)
    if stats.error:
        raise U2EdgeError(stats.error)
    return 1 if stats.corrupt and not source.live else 0  # a live camera's glitches are not lost input


class _Duration(KeyboardInterrupt):
    """--duration is over: stop the way Ctrl-C does, then exit normally."""


def report(args: argparse.Namespace, stats: Stats, source: Source, sink: Sink) -> None:
    summary = {"source": source.uri, "sink": sink.uri, **stats.summary()}
    if args.json:
        print_json(summary)
        return
    if args.quiet:
        return
    frames, stage = summary["frames"], summary["stage_ms"]
    print(f"{frames['written']} frames written to {sink.uri} in {summary['seconds']:.1f} s "
          f"({summary['stop']}): {summary['end_to_end_fps'] or 0:.2f} FPS end to end, "
          f"network {summary['network_fps'] or 0:.2f} FPS")
    print(f"  captured {frames['captured']}, dropped {frames['dropped']} stale, {frames['corrupt']} corrupt, "
          f"{summary['retries']} retries")
    print("  stage ms/frame: " + ", ".join(f"{k} {v:.1f}" for k, v in stage.items()))
    lat = summary["latency_ms"]
    if lat["p50"] is not None:
        print(f"  latency capture->written: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms")
