"""Benchmark every backend and precision this machine runs, beside rembg and PyTorch, on the same images.

Examples:
  u2edge bench                                  # scikit-image's photos; table and peer ratios
  u2edge bench --json-out bench.json --plot bench.png
  u2edge bench --images shots/ --repeats 10 --batch 1,4,8

Rows: u2edge on ONNX Runtime FP32 (the reference for accuracy), and on OpenVINO FP32 and INT8
(the CPU fast path; the INT8 model is built once from other scikit-image photos, or --int8-model);
peers: the official-style PyTorch eager pipeline and rembg with the same u2netp weights, in its own
environment (benchmarks/setup_rembg.sh makes it). Each row runs in its own process. Latency is
inference alone; end to end is decode, preprocess, infer, postprocess and PNG encode of the mask,
as `u2edge image` does it. Warm-up passes are excluded; +- is the spread between passes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .._files import write_bytes_atomic
from ..errors import U2EdgeError
from ..images import expand_inputs
from .options import add_json_option, print_json

log = logging.getLogger("u2edge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", nargs="+", metavar="PATH",
                        help="images, folders or globs (default: 5 scikit-image photos)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the images (default: 5)")
    parser.add_argument("--batch", default="1", metavar="N,...", help="batch sizes for throughput (default: 1)")
    parser.add_argument("--int8-model", metavar="MODEL.onnx",
                        help="CPU INT8 model to measure (default: built once from scikit-image photos)")
    parser.add_argument("--rembg-python", metavar="PYTHON",
                        help="rembg's own Python (default: the one benchmarks/setup_rembg.sh made)")
    parser.add_argument("--no-peers", action="store_true", help="measure u2edge only, not rembg and PyTorch")
    parser.add_argument("--json-out", metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--plot", metavar="PNG", help="also plot latency against accuracy here (needs matplotlib)")
    add_json_option(parser)


def _batches(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise U2EdgeError(f"--batch {text!r} is not a list of sizes such as 1,4,8") from None
    if not sizes or sizes[0] < 1:
        raise U2EdgeError(f"--batch {text!r}: sizes must be at least 1")
    return sizes


def run(args: argparse.Namespace) -> int:
    from ..bench.run import BenchOptions, run as run_bench, skimage_photos

    if args.repeats < 1:
        raise U2EdgeError(f"--repeats {args.repeats} must be at least 1")
    if args.int8_model and not Path(args.int8_model).is_file():
        raise U2EdgeError(f"--int8-model {args.int8_model}: no such file")
    if args.images:
        images, problems = expand_inputs(args.images)
        if problems:
            raise U2EdgeError(problems[0])
    else:
        images = skimage_photos()
    if args.plot:
        from .._deps import require

        require("matplotlib")  # fail before the runs, not after them
    opts = BenchOptions(images=images, repeats=args.repeats, batches=_batches(args.batch),
                        int8_model=Path(args.int8_model) if args.int8_model else None,
                        rembg_python=Path(args.rembg_python) if args.rembg_python else None, peers=not args.no_peers)
    result = run_bench(opts, progress=lambda name: log.info("measuring %s", name))
    if args.json_out:
        write_bytes_atomic(args.json_out, (json.dumps(result, indent=2) + "\n").encode())
    if args.plot:
        from ..bench.report import plot

        plot(result, Path(args.plot))
    if args.json:
        print_json(result)
    else:
        from ..bench.report import table

        print(table(result))
    return 0
