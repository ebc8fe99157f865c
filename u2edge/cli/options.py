"""Option groups shared by several subcommands, defined once."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..render import Mode


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


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", metavar="PATH",
                        help="model file: .onnx (ONNX Runtime) or .pth/.pt (PyTorch); "
                             "default: the official U2-NetP, fetched once into the user cache")


def add_render_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output rendering")
    group.add_argument("--mode", choices=[m.value for m in Mode],
                       help="mask: 8-bit grayscale (default); cutout: RGBA with the mask as alpha; "
                            "background: the subject over --bg-color/--bg-image/--bg-blur "
                            "(implied by those options)")
    bg = group.add_mutually_exclusive_group()
    bg.add_argument("--bg-color", metavar="COLOR", help="background color, '#RRGGBB' or 'R,G,B'")
    bg.add_argument("--bg-image", metavar="PATH", help="background image, resized to each frame")
    bg.add_argument("--bg-blur", metavar="K", type=int, help="blur the frame's own background (kernel size)")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
