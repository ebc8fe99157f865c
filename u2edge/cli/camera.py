"""Live masks, cutouts or new backgrounds from a camera or stream, newest frame first.

Examples:
  u2edge camera /dev/video0                         # a window with the mask and a HUD (FPS, latency)
  u2edge camera 0 --mode overlay --input-width 1280 --input-height 720 --input-codec MJPG
  u2edge camera csi://0 --bg-blur 41                # Jetson CSI camera (GStreamer)
  u2edge camera rtsp://cam.local/stream out.mp4 --duration 60
  u2edge camera /dev/video0 frames/ --headless --max-frames 300 --json

SOURCE: /dev/videoN or N, csi://N, rtsp://..., a video file, a folder or glob, or a GStreamer
pipeline. SINK: display://0 (default; q or Esc closes it), a video file, a folder, null, or a
GStreamer pipeline starting with appsrc. Live sources keep only the newest frame: stale ones are
dropped and counted, so latency stays bounded. A camera that stops (unplugged) is reopened with
backoff --retries times, then the command stops cleanly with its stats and a finalized output. A
GStreamer pipeline from a camera or the network is live; any other (a file, a test source) is read
in full and ends at its end of stream.
"""

from __future__ import annotations

import argparse

from ..errors import U2EdgeError
from ..video import CaptureOptions, open_sink, open_source
from .options import (add_engine_option, add_json_option, add_max_pixels_option, add_render_options,
                      add_stream_options)
from .stream import run_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="camera, stream, file, folder or GStreamer pipeline")
    parser.add_argument("sink", nargs="?", default="display://0", metavar="SINK",
                        help="display://0 (default), a video file, a folder, null, or a GStreamer "
                             "pipeline starting with appsrc")
    add_engine_option(parser)
    add_render_options(parser)
    add_stream_options(parser, live=True)
    add_max_pixels_option(parser)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise U2EdgeError(f"--duration {args.duration} must be a positive number of seconds")
    options = CaptureOptions(width=args.input_width, height=args.input_height, rate=args.input_rate,
                             fourcc=args.input_codec)
    source = open_source(args.source, options, max_pixels=args.max_pixels)
    try:
        sink = open_sink(args.sink, fps=args.input_rate or source.fps, headless=args.headless, codec=args.codec,
                         crf=args.crf)
    except BaseException:
        source.close()
        raise
    return run_pipeline(args, source, sink)
