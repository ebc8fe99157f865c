"""Score a model on a salient-object dataset: MAE, max F-beta, S-measure and E-measure.

Examples:
  u2edge eval --images ECSSD/images --masks ECSSD/ground_truth_mask
  u2edge eval --images DUTS-TE/DUTS-TE-Image --masks DUTS-TE/DUTS-TE-Mask --engine u2netp.onnx --json

Images and masks are paired by file name without its suffix (ECSSD and DUTS-TE lay them out so).
A pair whose image or mask cannot be read is one line on stderr, the others are still scored, and
the exit code is then 1.

Published for comparison (U-2-Net paper, ECSSD): U2-Net max F .951, MAE .033; U2-Net (small,
U2-NetP) max F .943, MAE .041.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2

from ..errors import ImageError, U2EdgeError
from ..images import pair_files, pixel_limit, read_image, read_mask
from ..metrics import SODMetrics
from .options import add_engine_option, add_json_option, add_max_pixels_option, open_engine, print_json
from .progress import Progress

log = logging.getLogger("u2edge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of input images")
    parser.add_argument("--masks", required=True, metavar="DIR", help="folder of ground-truth masks (same names)")
    parser.add_argument("--limit", type=int, metavar="N", help="score only the first N pairs")
    add_max_pixels_option(parser)
    add_engine_option(parser)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    limit = pixel_limit(args.max_pixels)
    found, problems = pair_files(Path(args.images), Path(args.masks))
    if args.limit:
        found = found[:args.limit]
    metrics = SODMetrics()
    with open_engine(args) as engine:
        progress = Progress(len(found), "eval", enabled=not args.quiet)
        for image_path, mask_path in found:
            progress.step(image_path.name)
            try:
                image, gt = read_image(image_path, max_pixels=limit), read_mask(mask_path, max_pixels=limit)
            except ImageError as exc:  # the message names the image or the mask; this pair is not scored
                problems.append(exc.message(lambda name: args.flags.get(name, name)))
                continue
            pred = engine(image)
            if pred.shape != gt.shape:
                pred = cv2.resize(pred, gt.shape[::-1], interpolation=cv2.INTER_LINEAR)
            metrics.add(pred, gt)
        progress.close()
    for line in problems:
        log.error("%s", line)
    if not metrics.maes:
        raise U2EdgeError("no image could be scored")
    results = metrics.results()
    if args.json:
        print_json({"engine": engine.describe(), **results, "errors": problems})
    else:
        print(f"{len(metrics.maes)} images, {engine.describe()}")
        print(f"{'maxF':>7} {'MAE':>7} {'S_m':>7} {'meanE':>7} {'maxE':>7}")
        print(" ".join(f"{results[k]:7.3f}" for k in ("max_f", "mae", "s_measure", "mean_e", "max_e")))
    return 1 if problems else 0
