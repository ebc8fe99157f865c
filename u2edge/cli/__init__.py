"""The ``u2edge`` command: one module per subcommand, each with ``add_arguments`` and ``run``.

A ``U2EdgeError`` becomes one line on stderr and exit code 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from .. import __version__
from ..errors import U2EdgeError
from .options import logging_options, setup_logging

__all__ = ["main", "build_parser"]

COMMANDS = ("image", "video", "camera", "ros", "batch", "triton", "export", "build", "eval", "train", "bench", "info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="u2edge", description="U-2-Net salient-object masks and background removal on NVIDIA edge "
        "hardware, with an ONNX Runtime CPU fallback.")
    parser.add_argument("--version", action="version", version=f"u2edge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = logging_options()
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        doc = module.__doc__.strip()
        sub = commands.add_parser(name, help=doc.splitlines()[0], description=doc, parents=[common],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, flags=_flags(sub))
    return parser


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter name -> how this command spells it (``calib_dir`` -> ``--calib-dir``), so that a
    library error reads in the command's terms. argparse lists its actions only in ``_actions``."""
    flags = {}
    for action in parser._actions:
        if action.option_strings:
            flags[action.dest] = max(action.option_strings, key=len)
        elif action.dest != argparse.SUPPRESS:
            flags[action.dest] = str(action.metavar or action.dest).upper()
    return flags


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C so that outputs stay complete or absent."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.run(args)
    except U2EdgeError as exc:
        print(f"u2edge: error: {exc.message(lambda name: args.flags.get(name, name))}", file=sys.stderr)
        return 1
    except Terminated:
        print("u2edge: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("u2edge: interrupted", file=sys.stderr)
        return 130
