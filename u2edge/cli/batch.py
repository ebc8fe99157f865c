"""Mask many images on a Ray cluster (Ray Data): files, folders or globs -> OUTDIR/<name>.png.

Examples:
  u2edge batch photos/ -o out/                                  # a private Ray on this machine
  u2edge batch '/data/shots/*.jpg' -o /data/masks --address auto  # the cluster of `ray start --head`
  u2edge batch /data/shots -o /data/masks --address ray://head:10001 --gpus-per-actor 1 \\
      --engine /models/u2netp_fp16.engine                        # one TensorRT actor per GPU

Each actor opens one engine (the same options as `u2edge image`: the same masks) and gets
--batch-size images at a time. Outputs are named as `u2edge image` names them and written
atomically; an input that cannot be read is reported on one line while the others go on (the
exit code is then 1). An actor that crashes is restarted and its batch run again. On a cluster,
the inputs and OUTDIR must be at the same paths on every node (a shared file system).

Ray needs Python 3.10+ (JetPack 5 has 3.8): pip install 'u2edge[ray]'. On one machine,
`u2edge image` is faster: Ray pays off on many cores and nodes.
"""

from __future__ import annotations

import argparse
import logging
import time

from ..batch import DEFAULT_BATCH_SIZE, check_python, run_batch
from .image import plan, report
from .options import add_engine_option, add_json_option, add_max_pixels_option, add_render_options
from .progress import Progress

log = logging.getLogger("u2edge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the PNG outputs")
    ray = parser.add_argument_group("Ray")
    ray.add_argument("--address", metavar="ADDR",
                     help="an existing Ray cluster: auto (the one `ray start` runs here), HOST:6379, or "
                          "ray://HOST:10001; default: a private Ray on this machine, stopped at the end")
    ray.add_argument("--actors", type=int, metavar="N",
                     help="actors, each with one engine (default: one per CPU but one, or one per GPU share "
                          "with --gpus-per-actor); on CPUs the spare CPUs are shared out among them")
    ray.add_argument("--gpus-per-actor", type=float, default=0, metavar="G",
                     help="GPUs each actor takes, such as 1 or 0.5 (default: 0, the actors run on CPUs)")
    ray.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="B",
                     help=f"images an actor gets at once (default: {DEFAULT_BATCH_SIZE}); a crashed actor's "
                          "batch is run again whole")
    add_max_pixels_option(parser)
    add_engine_option(parser)
    add_render_options(parser)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    check_python()
    limit, mode, background, outdir, jobs, problems = plan(args)  # bad options are one line before Ray starts
    rows, pool, total, stopped = [], None, 0.0, None
    if jobs:
        progress = Progress(len(jobs), "image", enabled=not args.quiet)

        def arrived(row) -> None:
            if row.error:
                log.error("%s", row.error)
            progress.step()

        started = time.perf_counter()
        try:
            result = run_batch(jobs, engine={"path": args.engine, "model": args.model, "precision": args.precision},
                               mode=mode, background=background, max_pixels=limit, address=args.address,
                               actors=args.actors, gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size,
                               flags=args.flags, verbose=args.verbose, on_row=arrived)
        finally:
            progress.close()
        total = time.perf_counter() - started
        rows, pool = result.rows, result.pool
        if result.stopped is not None:
            stopped = result.stopped.message(lambda name: args.flags.get(name, name))
            log.error("%s", stopped)
    failed = len(problems) + sum(1 for row in rows if row.error)  # inputs: the line of a stopped job is not one
    if stopped:
        problems.append(stopped)
    problems += [row.error for row in rows if row.error]
    written = [row for row in rows if not row.error]
    images = [{"input": row.input, "output": row.output, "height": row.height, "width": row.width,
               "seconds": round(row.seconds, 4)} for row in written]
    status = [{"input": row.input, "output": row.output, "status": row.error or "ok", "pid": row.pid} for row in rows]
    ray = None if pool is None else {"address": args.address or "local", "actors": pool.actors,
                                     "cpus_per_actor": pool.cpus, "gpus_per_actor": pool.gpus,
                                     "batch_size": pool.batch_size}
    return report(args, outdir, mode, images, problems, total, failed=failed, status=status, ray=ray)
