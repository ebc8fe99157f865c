"""``u2edge image`` with its defaults against ``rembg p`` on the same photos: whole commands, end to end.

    python benchmarks/image_vs_rembg.py [--model u2netp,u2net] [--rounds 3] [--photos 20]
                                        [--peak-gmacs G] [--json-out PATH]

For each model, in one run and on one folder of scikit-image photos (those with a subject,
repeated under new names up to --photos):
- ``u2edge image PHOTOS -o OUT --model M --json``: u2edge's defaults (``--precision auto``; --json
  only changes what it prints, and gives the inference time per image);
- ``rembg p -om -m M PHOTOS OUT``: rembg's CLI from its own environment (benchmarks/setup_rembg.sh),
  writing masks as u2edge does, with U2NET_HOME pointing at u2edge's official weights (no download).
Each command runs once untimed first (u2edge makes its INT8 model on first use; file caches warm
up), then --rounds times, u2edge and rembg alternating, each timed by the wall clock from start
to exit: process start, imports, model load, every photo decoded, masked and written. The ratio
is rembg's seconds over u2edge's, per round, then the median. ``u2edge image --precision fp32``
runs once per model, and the default's masks are scored against its masks (min IoU at 0.5 over
photos with >= 1% subject, mean MAE). Throughput is reported in G MAC/s; this script does not
know the CPU's INT8 peak: give it with --peak-gmacs to see the fraction reached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from u2edge.bench.run import PHOTOS, machine, rembg_home, rembg_python, skimage_photos
from u2edge.cpu import cpu_features
from u2edge.metrics import agreement
from u2edge.weights import WEIGHTS

# multiply-accumulates of one 320x320 frame through each network
GMACS = {"u2netp": 19.8, "u2net": 58.6}
# scikit-image photos with a subject: the bench's five (held out from INT8 calibration), then others
SUBJECT_PHOTOS = PHOTOS + ("motorcycle_right.png", "camera.png", "horse.png", "logo.png", "coins.png",
                           "clock_motion.png", "retina.jpg")


def photo_folder(folder: Path, count: int) -> dict[str, str]:
    """``count`` photos in ``folder``, the subject photos repeated under new names; returns the
    source photo of each file stem."""
    folder.mkdir(parents=True)
    sources = skimage_photos(SUBJECT_PHOTOS)
    stems = {}
    for i in range(count):
        source = sources[i % len(sources)]
        copy = i // len(sources)
        stem = source.stem if copy == 0 else f"{source.stem}_{copy}"
        shutil.copyfile(source, folder / f"{stem}{source.suffix}")
        stems[stem] = source.name
    return stems


def u2edge_command() -> list[str]:
    script = Path(sys.executable).with_name("u2edge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "u2edge"]


def timed(cmd: list[str], out: Path, expected: int, env: dict | None = None) -> tuple[float, str]:
    """Run ``cmd`` to completion; its wall-clock seconds and stdout. It must write ``expected`` PNGs to ``out``."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    written = len(list(out.glob("*.png"))) if out.is_dir() else 0
    if proc.returncode != 0 or written != expected:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:] + proc.stdout.strip().splitlines()[-5:])
        sys.exit(f"{' '.join(cmd)}: exit code {proc.returncode}, {written} of {expected} masks written\n{tail}")
    return seconds, proc.stdout


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
            for p in sorted(folder.glob("*.png"))}


def score(got: dict[str, np.ndarray], reference: dict[str, np.ndarray], stems: dict[str, str]) -> dict:
    """Min IoU (over photos whose reference has a subject) and mean MAE; also min IoU over the
    photos held out from INT8 calibration alone."""
    per = {stem: agreement(got[stem], reference[stem]) for stem in reference}
    ious = [v["iou"] for v in per.values() if v["subject"]]
    held_out = [v["iou"] for stem, v in per.items() if v["subject"] and stems[stem] in PHOTOS]
    worst = min((stem for stem, v in per.items() if v["subject"]), key=lambda stem: per[stem]["iou"], default=None)
    return {"min_iou": min(ious, default=1.0), "min_iou_held_out": min(held_out, default=1.0),
            "mean_mae": float(np.mean([v["mae"] for v in per.values()])), "subject_photos": len(ious),
            "worst": stems.get(worst), "per_image": {stems[stem]: v for stem, v in per.items()}}


def measure(model: str, photos: Path, stems: dict[str, str], rounds: int, rembg: Path, tmp: Path) -> dict:
    count = len(stems)
    env = {**os.environ, "U2NET_HOME": str(rembg_home(tmp / "rembg-home", (model,)))}
    outs = iter(range(10**6))

    def u2edge(*extra: str) -> tuple[float, dict, Path]:
        out = tmp / f"{model}-u2edge-{next(outs)}"
        seconds, stdout = timed(u2edge_command() + ["image", str(photos), "-o", str(out), "--model", model,
                                                     "--json", *extra], out, count)
        return seconds, json.loads(stdout), out

    def rembg_p() -> tuple[float, Path]:
        out = tmp / f"{model}-rembg-{next(outs)}"
        seconds, _ = timed([str(rembg), "p", "-om", "-m", model, str(photos), str(out)], out, count, env)
        return seconds, out

    print(f"{model}: warm-up runs (untimed)", file=sys.stderr, flush=True)
    u2edge()
    rembg_p()
    runs = []
    for r in range(rounds):
        if r % 2 == 0:  # alternate which goes first, so that neither always follows the other
            (u_s, u_json, u_out), (r_s, r_out) = u2edge(), rembg_p()
        else:
            (r_s, r_out), (u_s, u_json, u_out) = rembg_p(), u2edge()
        infer_ms = (u_json.get("pipeline") or {}).get("stage_ms", {}).get("infer")
        runs.append({"u2edge_s": round(u_s, 3), "rembg_s": round(r_s, 3), "ratio": round(r_s / u_s, 3),
                     "u2edge_infer_ms": infer_ms})
        print(f"{model} round {r + 1}/{rounds}: u2edge {u_s:.2f} s, rembg {r_s:.2f} s", file=sys.stderr, flush=True)
    _, _, fp32_out = u2edge("--precision", "fp32")
    reference = masks(fp32_out)
    u2edge_s = statistics.median(run["u2edge_s"] for run in runs)
    rembg_s = statistics.median(run["rembg_s"] for run in runs)
    infer = [run["u2edge_infer_ms"] for run in runs if run["u2edge_infer_ms"]]
    infer_ms = statistics.median(infer) if infer else None
    return {"model": model, "photos": count, "rounds": runs, "u2edge_s": u2edge_s, "rembg_s": rembg_s,
            "ratio": statistics.median(run["ratio"] for run in runs),
            "u2edge_infer_ms": infer_ms,
            "gmacs_per_frame": GMACS[model],
            "u2edge_infer_gmac_s": GMACS[model] / (infer_ms / 1e3) if infer_ms else None,
            "u2edge_end_to_end_gmac_s": GMACS[model] * count / u2edge_s,
            "rembg_end_to_end_gmac_s": GMACS[model] * count / rembg_s,
            "accuracy_vs_fp32": score(masks(u_out), reference, stems),
            "rembg_vs_fp32": score(masks(r_out), reference, stems)}


def report(rows: list[dict], auto: dict, peak: float | None) -> None:
    head = (f"{'model':<7} {'auto':<5} {'u2edge s':>8} {'rembg s':>8} {'rembg/u2edge':>12} {'infer ms':>8} "
            f"{'GMAC/s infer':>12} {'GMAC/s e2e u2edge':>17} {'rembg':>6} {'min IoU':>8} {'MAE':>7}"
            + (f" {'infer % of peak':>15}" if peak else ""))
    print(head)
    print("-" * len(head))
    for row in rows:
        acc = row["accuracy_vs_fp32"]
        infer = f"{row['u2edge_infer_ms']:8.1f}" if row["u2edge_infer_ms"] else f"{'-':>8}"
        gmac = f"{row['u2edge_infer_gmac_s']:12.1f}" if row["u2edge_infer_gmac_s"] else f"{'-':>12}"
        line = (f"{row['model']:<7} {auto[row['model']]['precision'] or '-':<5} {row['u2edge_s']:8.2f} "
                f"{row['rembg_s']:8.2f} {row['ratio']:11.2f}x {infer} {gmac} {row['u2edge_end_to_end_gmac_s']:17.1f} "
                f"{row['rembg_end_to_end_gmac_s']:6.1f} {acc['min_iou']:8.4f} {acc['mean_mae']:7.4f}")
        if peak:
            share = row["u2edge_infer_gmac_s"] or row["u2edge_end_to_end_gmac_s"]
            line += f" {100 * share / peak:14.1f}%"
        print(line)
    print()
    for row in rows:
        acc, peer = row["accuracy_vs_fp32"], row["rembg_vs_fp32"]
        print(f"{row['model']}: auto = {auto[row['model']]['reason']}")
        print(f"{row['model']}: default vs fp32: lowest IoU on {acc['worst']}; on the {len(PHOTOS)} photos held out "
              f"from INT8 calibration min IoU {acc['min_iou_held_out']:.4f}; rembg vs u2edge fp32: min IoU "
              f"{peer['min_iou']:.4f}, mean MAE {peer['mean_mae']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=",".join(GMACS), help="models, a comma list (default: u2netp,u2net)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each command (default: 3)")
    parser.add_argument("--photos", type=int, default=20, help="photos in the folder (default: 20)")
    parser.add_argument("--peak-gmacs", type=float, metavar="G",
                        help="the CPU's INT8 peak in G MAC/s, to print the share of it reached (default: none)")
    parser.add_argument("--json-out", default=str(Path(tempfile.gettempdir()) / "image_vs_rembg.json"),
                        help="write the results here (default: %(default)s)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not models or any(m not in WEIGHTS for m in models):
        parser.error(f"--model {args.model}: known models are {', '.join(WEIGHTS)}")
    if args.rounds < 1 or args.photos < 1:
        parser.error("--rounds and --photos must be at least 1")
    rembg = rembg_python().with_name("rembg")
    if not rembg.exists():
        sys.exit(f"no rembg CLI at {rembg}: run benchmarks/setup_rembg.sh")
    info = json.loads(subprocess.run(u2edge_command() + ["info", "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    features = cpu_features()
    with tempfile.TemporaryDirectory(prefix="u2edge-vs-rembg-") as tmp:
        photos = Path(tmp) / "photos"
        stems = photo_folder(photos, args.photos)
        rows = [measure(model, photos, stems, args.rounds, rembg, Path(tmp)) for model in models]
    print(f"CPU: {features.name}, {features.cores} cores; INT8 units: {', '.join(features.int8) or 'none'}; "
          f"BF16: {', '.join(features.bf16) or 'none'}")
    print(f"{args.photos} photos ({len(set(stems.values()))} distinct scikit-image photos with a subject); "
          f"median of {args.rounds} round(s); u2edge: `u2edge image PHOTOS -o OUT --model M`; "
          f"rembg: `rembg p -om -m M PHOTOS OUT`")
    report(rows, info["auto"], args.peak_gmacs)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "u2edge": info["u2edge"],
              "cpu": {"name": features.name, "cores": features.cores, "int8": features.int8, "bf16": features.bf16},
              "peak_gmacs": args.peak_gmacs, "photos": sorted(set(stems.values())), "auto": info["auto"],
              "commands": {"u2edge": "u2edge image PHOTOS -o OUT --model M --json",
                           "u2edge_reference": "u2edge image PHOTOS -o OUT --model M --json --precision fp32",
                           "rembg": "rembg p -om -m M PHOTOS OUT"},
              "rows": rows}
    Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
