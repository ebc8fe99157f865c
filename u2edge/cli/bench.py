"""Benchmark every backend and precision this machine runs, beside rembg and PyTorch, on the same images.

Examples:
  u2edge bench                                  # both models on scikit-image's photos; table and peer ratios
  u2edge bench --model u2netp --json-out bench.json --plot bench.png
  u2edge bench --images shots/ --repeats 10 --batch 1,4,8

Rows, for each model (U2-NetP and U2-Net by default): u2edge on ONNX Runtime FP32 (that model's
reference for accuracy), on OpenVINO FP32, and the default, `--precision auto` (the row says what
auto picked here, e.g. int8 on VNNI/AMX); a CPU INT8 model of your own with --int8-model; peers:
rembg with the same official weights, in its own environment (benchmarks/setup_rembg.sh makes it),
and for U2-NetP the official-style PyTorch eager pipeline. Accuracy and "vs" ratios compare rows of
one model only. Each row runs in its own process. Latency is inference alone; end to end is decode,
preprocess, infer, postprocess and PNG encode of the mask, as `u2edge image` does it. Warm-up
passes are excluded; +- is the spread between passes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .._files import write_bytes_atomic
from ..errors import U2EdgeError
from ..images import expand_inputs
from ..weights import WEIGHTS
from .options import add_json_option, print_json

log = logging.getLogger("u2edge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", metavar="NAME[,NAME]",
                        help=f"models to measure, repeatable or a comma list: {', '.join(WEIGHTS)} "
                             "(default: all)")
    parser.add_argument("--images", nargs="+", metavar="PATH",
                        help="images, folders or globs (default: 5 scikit-image photos)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the images (default: 5)")
    parser.add_argument("--batch", default="1", metavar="N,...", help="batch sizes for throughput (default: 1)")
    parser.add_argument("--int8-model", metavar="MODEL.onnx",
                        help="also measure this CPU INT8 model (u2edge build --precision int8), beside the rows "
                             "of the model it was built from")
    parser.add_argument("--engine", metavar="ADDRESS",
                        help="also measure a model on a Triton server, triton://HOST:PORT/MODEL or triton+http://..., "
                             "beside the rows of the one --model it serves")
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


def _models(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return tuple(WEIGHTS)
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in WEIGHTS]
    if unknown or not names:
        problem = f"unknown model {unknown[0]!r}" if unknown else "no model named"
        raise U2EdgeError(f"--model {','.join(values)}: {problem}; known models: {', '.join(WEIGHTS)}")
    return tuple(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    from ..bench.run import BenchOptions, run as run_bench, skimage_photos

    models = _models(args.model)
    if args.repeats < 1:
        raise U2EdgeError(f"--repeats {args.repeats} must be at least 1")
    if args.int8_model and not Path(args.int8_model).is_file():
        raise U2EdgeError(f"--int8-model {args.int8_model}: no such file")
    if args.engine:
        from ..backends import is_address

        if not is_address(args.engine):
            raise U2EdgeError(f"--engine {args.engine}: bench measures a server's model here "
                              "(triton://HOST:PORT/MODEL); model files are measured through --int8-model")
        if len(models) != 1:
            raise U2EdgeError(f"--engine {args.engine}: name the one model it serves with --model, such as --model "
                              "u2netp, so that its accuracy is held to that model's reference")
    if args.images:
        images, problems = expand_inputs(args.images)
        if problems:
            raise U2EdgeError(problems[0])
    else:
        images = skimage_photos()
    if args.plot:
        from .._deps import require

        require("matplotlib")  # fail before the runs, not after them
    opts = BenchOptions(images=images, models=models, repeats=args.repeats, batches=_batches(args.batch),
                        int8_model=Path(args.int8_model) if args.int8_model else None, server=args.engine,
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
    return 1 if result.get("errors") else 0  # unreadable images were left out of every row, each named once
