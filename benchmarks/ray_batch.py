"""``u2edge batch`` (Ray Data, a private local Ray) against ``u2edge image`` on the same photos.

    python benchmarks/ray_batch.py [--images 40] [--model u2netp] [--precision auto] [--actors N]
                                   [--json-out ray_batch.json]

Both commands run whole, as a user runs them, on the same folder of real photos (scikit-image's,
repeated to --images files), with the same model and precision, so they write the same masks (the
largest difference between the two is reported). Each runs twice: on all the images, and on one
image, whose time is mostly start-up (Ray's, the engine's); the images/s after start-up are the
difference of the two. ``u2edge batch`` sizes its own pool (on 2 CPUs: one actor of one CPU,
the other left to the driver and Ray), unless --actors is given. One run of each, no warm-up: a
rough number, as a user would see it.

Runs itself inside private network and PID namespaces (``unshare``, as root): Ray reaches nothing
outside, and nothing it starts outlives the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from u2edge.bench.run import machine, skimage_photos

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png")
INSIDE = "U2EDGE_BENCH_PRIVATE_NAMESPACES"


def in_private_namespaces(argv: list[str]) -> int:
    """Run this script again inside new PID and network namespaces, with loopback alone."""
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"',
           "u2edge-netns", sys.executable, os.path.abspath(__file__), *argv]
    env = {**os.environ, INSIDE: "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(cmd, env=env).returncode


def only_loopback() -> bool:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
    return [line.split(":")[1].strip() for line in links] == ["lo"]


def photo_folder(folder: Path, count: int) -> Path:
    """``count`` photos, scikit-image's repeated under names of their own (a jpg stays a jpg)."""
    folder.mkdir(parents=True)
    photos = skimage_photos(PHOTOS)
    for i in range(count):
        src = photos[i % len(photos)]
        shutil.copy(src, folder / f"{i:03d}_{src.name}")
    return folder


def timed(argv: list[str]) -> tuple[float, dict]:
    """Seconds the whole command took, and its --json summary."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "u2edge", *argv, "--json", "-q"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"u2edge {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return seconds, json.loads(proc.stdout)


def bench(images: int, options: list[str], actors: int | None, tmp: Path) -> dict:
    many, one = photo_folder(tmp / "many", images), photo_folder(tmp / "one", 1)
    pool = ["--actors", str(actors)] if actors else []
    commands = {"u2edge image": ["image"], "u2edge batch (local Ray)": ["batch", *pool]}
    rows, outputs, ray = [], {}, None
    for name, command in commands.items():
        out = tmp / f"out_{command[0]}"
        start_up, _ = timed([*command, str(one), "-o", str(tmp / f"one_{command[0]}"), *options])
        seconds, summary = timed([*command, str(many), "-o", str(out), *options])
        if summary["written"] != images:
            raise SystemExit(f"{name} wrote {summary['written']} of {images} images: {summary['errors']}")
        ray = summary.get("ray") or ray
        outputs[name] = out
        rows.append({"command": name, "images": images, "seconds": round(seconds, 2),
                     "images_per_s": round(images / seconds, 2), "one_image_seconds": round(start_up, 2),
                     "images_per_s_after_start_up": round((images - 1) / (seconds - start_up), 2)
                     if seconds > start_up else None})
    first, second = outputs.values()
    diff = max(int(np.abs(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.int16)
                          - cv2.imread(str(second / p.name), cv2.IMREAD_UNCHANGED)).max())
               for p in first.iterdir())
    return {"rows": rows, "max_mask_difference": diff, "ray_pool": ray}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="photos in the folder (default: 40)")
    parser.add_argument("--model", default="u2netp", help="the model both commands run (default: u2netp)")
    parser.add_argument("--precision", default="auto", help="the precision both commands run (default: auto)")
    parser.add_argument("--actors", type=int, help="u2edge batch --actors (default: its own sizing)")
    parser.add_argument("--json-out", help="also write the results here")
    parser.add_argument("--result", help=argparse.SUPPRESS)  # inside the namespaces: where to put the result
    args = parser.parse_args(argv)
    options = ["--model", args.model, "--precision", args.precision]
    if os.environ.get(INSIDE) == "1":
        if not only_loopback():
            print("refusing to run: this network namespace has interfaces other than loopback", file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory(prefix="u2edge-ray-bench-") as tmp:
            result = bench(args.images, options, args.actors, Path(tmp))
        Path(args.result).write_text(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="u2edge-ray-bench-") as tmp:
        path = Path(tmp) / "result.json"
        forwarded = ["--images", str(args.images), "--model", args.model, "--precision", args.precision,
                     *(["--actors", str(args.actors)] if args.actors else []), "--result", str(path)]
        rc = in_private_namespaces(forwarded)
        if rc != 0:
            return rc
        result = json.loads(path.read_text())
    info = machine()
    pool = result["ray_pool"]
    print(f"{args.images} photos, {args.model} at precision {args.precision}, on {info['cpu']} ({info['cores']} "
          f"cores); Ray pool: {pool['actors']} actor(s) of {pool['cpus_per_actor']} CPU, {pool['batch_size']} "
          f"images a batch; masks differ by at most {result['max_mask_difference']}/255")
    print(f"{'command':<26} {'seconds':>8} {'images/s':>9} {'1 image s':>10} {'images/s after start-up':>24}")
    for row in result["rows"]:
        after = row["images_per_s_after_start_up"]
        print(f"{row['command']:<26} {row['seconds']:8.2f} {row['images_per_s']:9.2f} {row['one_image_seconds']:10.2f} "
              f"{after if after is not None else float('nan'):24.2f}")
    image, batch = result["rows"]
    print(f"u2edge image is {batch['seconds'] / image['seconds']:.1f}x faster end to end here"
          if batch["seconds"] >= image["seconds"] else
          f"u2edge batch is {image['seconds'] / batch['seconds']:.1f}x faster end to end here")
    if args.json_out:
        out = {"date": time.strftime("%Y-%m-%d"), "machine": info, "images": args.images, "model": args.model,
               "precision": args.precision, **result}
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
