"""Option groups shared by several subcommands, defined once."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..images import MAX_PIXELS, MAX_PIXELS_ENV
from ..render import Mode
from ..precision import RUNTIME_PRECISIONS, Precision
from ..video.smooth import DEFAULT_STRENGTH
from ..video.sinks import CODECS, DEFAULT_CRF
from ..weights import WEIGHTS


def logging_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="store_true", help="log details (backend, timings)")
    group.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bar")
    return parent


def setup_logging(verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("u2edge: %(message)s"))
    log = logging.getLogger("u2edge")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # a damaged file is u2edge's one line; OpenCV's own [ WARN ] lines only with -v
        import cv2

        try:
            from cv2.utils import logging as cv_logging

            cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
        except ImportError:  # OpenCV 4.6 (Debian's, JetPack's) has it at the top level only
            cv2.setLogLevel(0)  # LOG_LEVEL_SILENT


def add_model_option(parser, help: str = "architecture (default: u2netp)", default: str | None = "u2netp") -> None:
    """--model, for every command that takes a model: the names of the weights table."""
    parser.add_argument("--model", choices=sorted(WEIGHTS), default=default, help=help)


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    """The model a runtime command runs: --model and --precision, or a model file (--engine)."""
    group = parser.add_argument_group("model")
    add_model_option(group, "official model, fetched once into the user cache (default: u2netp)", default=None)
    group.add_argument("--precision", choices=[p.value for p in RUNTIME_PRECISIONS], default=Precision.AUTO.value,
                       help="auto (default): the fastest precision that passes the accuracy gate on this CPU "
                            "(INT8 on VNNI/AMX, else FP32); fp32: the reference; int8, bf16: ask for those")
    group.add_argument("--engine", metavar="PATH",
                       help="a model file instead: .engine/.plan (TensorRT), .onnx (OpenVINO or ONNX Runtime) "
                            "or .pth/.pt (PyTorch), run at its own precision; or a Triton server's model: "
                            "triton://HOST:8001/u2edge (gRPC), triton+http://HOST:8000/u2edge")


def open_engine(args: argparse.Namespace, **options):
    """The U2EdgeEngine the model options ask for."""
    from ..engine import U2EdgeEngine

    return U2EdgeEngine(args.engine, model=args.model, precision=args.precision, **options)


def add_render_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output rendering")
    group.add_argument("--mode", choices=[m.value for m in Mode],
                       help="mask: 8-bit grayscale (default); cutout: RGBA with the mask as alpha "
                            "(over a checkerboard on screens and in videos); background: the subject over "
                            "--bg-color/--bg-image/--bg-blur (implied by those options); overlay: the mask "
                            "tinted over the frame, with its contour; side-by-side: frame and mask")
    bg = group.add_mutually_exclusive_group()
    bg.add_argument("--bg-color", metavar="COLOR", help="background color, '#RRGGBB' or 'R,G,B'")
    bg.add_argument("--bg-image", metavar="PATH", help="background image, resized to each frame")
    bg.add_argument("--bg-blur", metavar="K", type=int, help="blur the frame's own background (kernel size)")


def add_max_pixels_option(parser: argparse.ArgumentParser) -> None:
    """--max-pixels, for every command that decodes images or video frames."""
    parser.add_argument("--max-pixels", type=int, metavar="N",
                        help=f"refuse images with more pixels than this, from their header, before decoding "
                             f"(a guard against decompression bombs; default: {MAX_PIXELS_ENV} or {MAX_PIXELS:,})")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def add_stream_options(parser: argparse.ArgumentParser, *, live: bool) -> None:
    """Capture settings, the frame limit and the retry policy of ``u2edge camera`` and ``video``."""
    group = parser.add_argument_group("stream")
    if live:
        group.add_argument("--input-width", type=int, metavar="W", help="capture width (cameras)")
        group.add_argument("--input-height", type=int, metavar="H", help="capture height (cameras)")
        group.add_argument("--input-rate", type=float, metavar="FPS", help="capture frame rate (cameras)")
        group.add_argument("--input-codec", choices=("MJPG", "YUYV"), help="V4L2 pixel format, e.g. MJPG for "
                                                                           "full-rate USB cameras")
        group.add_argument("--headless", action="store_true", help="no window: display://0 becomes null")
        group.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    group.add_argument("--max-frames", type=int, metavar="N",
                       help="stop after N frames written to the sink (a live source's dropped frames do not count)")
    group.add_argument("--retries", type=int, default=5, metavar="N",
                       help="failed reads retried (with backoff, live sources reopened) before stopping (default: 5)")
    group.add_argument("--smooth", type=float, nargs="?", const=DEFAULT_STRENGTH, metavar="S",
                       help=f"steady the masks over time: each is averaged with the one before, with weight S "
                            f"(0 to 1; {DEFAULT_STRENGTH} without a value) where the image did not change, and "
                            "not where it did, so moving objects leave no ghost")
    video = parser.add_argument_group("video file output")
    video.add_argument("--codec", choices=CODECS, default="auto",
                       help="auto (default): H.264 in .mp4/.mkv/.mov when PyAV is installed "
                            "(pip install 'u2edge[h264]'), else mp4v; MJPG in .avi")
    video.add_argument("--crf", type=int, metavar="N",
                       help=f"H.264 quality, 0 (lossless) to 51 (smallest); default {DEFAULT_CRF}")
