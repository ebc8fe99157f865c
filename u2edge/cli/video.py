"""Mask, cut out or restyle a video file, an image folder, a glob or a GStreamer pipeline, frame by frame,
losslessly.

Examples:
  u2edge video clip.mp4 -o masks.mp4                      # 8-bit masks, the source's frame rate
  u2edge video clip.mp4 -o out.mp4 --bg-color '#00ff00'   # green screen
  u2edge video clip.mp4 -o frames/ --mode cutout          # RGBA PNGs, frame_000000.png ...
  u2edge video 'shots/*.jpg' -o review.avi --mode side-by-side
  u2edge video clip.mp4 -o null --json                    # throughput and per-stage timings only
  u2edge video 'filesrc location=clip.mp4 ! qtdemux ! h264parse ! nvv4l2decoder ! nvvidconv !
      video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink' -o masks.mp4
                                                          # Jetson's hardware decoder (system OpenCV)

Every input frame gives exactly one output frame, in order (a corrupt one is skipped and counted).
Outputs are complete or absent: a video is finalized on Ctrl-C or SIGTERM with the frames done so
far, and removed if the disk fills. Network FPS and end-to-end FPS are reported separately.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import U2EdgeError
from ..video import CaptureOptions, open_sink, open_source
from .options import (add_engine_option, add_json_option, add_max_pixels_option, add_render_options,
                      add_stream_options)
from .stream import run_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="video file, image folder, glob or GStreamer pipeline "
                                                            "(read to its end of stream)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="a video file (.mp4, .mkv, .mov, .avi), a folder for PNG frames, null, or a "
                             "GStreamer pipeline starting with appsrc")
    parser.add_argument("--fps", type=float, metavar="FPS", help="output frame rate (default: the source's; "
                                                                "30 for images)")
    add_engine_option(parser)
    add_render_options(parser)
    add_stream_options(parser, live=False)
    add_max_pixels_option(parser)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if args.output not in ("null", "null://") and Path(args.input).exists() and out.exists() \
            and out.resolve() == Path(args.input).resolve():
        raise U2EdgeError(f"-o {out} is the input; refusing to overwrite it (choose another -o)")
    source = open_source(args.input, CaptureOptions(rate=args.fps), max_pixels=args.max_pixels, lossless=True)
    if source.live:
        source.close()
        raise U2EdgeError(f"{args.input} is a live source; use u2edge camera {args.input} for it")
    try:
        sink = open_sink(args.output, fps=args.fps or source.fps, codec=args.codec, crf=args.crf)
    except BaseException:
        source.close()
        raise
    return run_pipeline(args, source, sink)
