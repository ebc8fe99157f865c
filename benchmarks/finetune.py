"""Fine-tuning: how far ``u2edge train`` moves the official U2-NetP on a task it was not trained
for, at what speed, and how close a student gets to its teacher without any masks.

    python benchmarks/finetune.py [--train 64] [--test 16] [--epochs 6] [--batch 8] [--imgsz 320]
                                  [--teacher-epochs 4] [--json-out finetune.json]

The task: composites of scikit-image photos, a region of one cut out with a random polygon and
pasted onto another (``u2edge.bench.composites``); the polygon is the mask. The test composites
come from photo pairs that the training set never uses. Each run starts from the official
weights; "before" is the official model and "after" the run's last epoch, both scored on the test
composites as ``u2edge eval`` scores (MAE, max F, S, mean E, and IoU at 0.5). Runs:

- the default (lr 1e-4, FP32), then with ``--amp`` (BF16 on the CPU), then at the official
  training rate 1e-3;
- ``--teacher u2net``: no masks, the official U-2-Net's masks of the training composites are the
  targets; scored against U-2-Net's masks of 16 new composites of the same photo pairs (the
  robot's own domain, images it never trained on), so "before" and "after" are how well the
  student agrees with its teacher;
- the training speed of the full U-2-Net, FP32 and BF16 (one epoch of 16 composites).

Images/s is the training speed (forward, backward and step), the mean of the epochs. Run it on a
quiet machine: the speeds are only as steady as the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from u2edge.bench.composites import PHOTOS, photo_pairs, write_composites, write_dataset
from u2edge.bench.run import machine, skimage_photos
from u2edge.images import read_image
from u2edge.train import TrainConfig, train

KEYS = ("mae", "max_f", "s_measure", "mean_e", "iou")


def runs(args) -> list[tuple[str, dict]]:
    base = {"epochs": args.epochs, "batch": args.batch, "imgsz": args.imgsz}
    speed = {"epochs": 1, "batch": args.batch, "imgsz": args.imgsz, "model": "u2net", "val_split": 0.0}
    return [("u2netp, lr 1e-4 (default), fp32", base, "test"),
            ("u2netp, lr 1e-4, --amp (bf16)", {**base, "amp": True}, "test"),
            ("u2netp, lr 1e-3 (official), fp32", {**base, "lr": 1e-3}, "test"),
            ("u2netp, --teacher u2net", {**base, "epochs": args.teacher_epochs, "teacher": "u2net"}, "same_kind"),
            ("u2net, speed, fp32", speed, "speed"),
            ("u2net, speed, --amp (bf16)", {**speed, "amp": True}, "speed")]


def one_run(label: str, options: dict, data: dict[str, Path], scored_on: str, folder: Path) -> dict:
    teacher = options.get("teacher")
    train_set = data["speed" if scored_on == "speed" else "train"]
    val = {} if scored_on == "speed" else {"val_images": str(data[scored_on] / "images"),
                                           "val_masks": None if teacher else str(data[scored_on] / "masks")}
    config = TrainConfig(output=str(folder), images=str(train_set / "images"),
                         masks=None if teacher else str(train_set / "masks"), **val, **options)
    started = time.perf_counter()
    result = train(config)
    trained = [h for h in result.history if h["loss"] is not None]
    return {"run": label, "options": options, "scored_on": scored_on, "before": result.before, "after": result.after,
            "best_epoch": result.best_epoch, "loss": [round(h["loss"], 4) for h in trained],
            "images_per_s": round(sum(h["images_per_s"] for h in trained) / len(trained), 3),
            "seconds": round(time.perf_counter() - started, 1)}


def table(report: dict) -> str:
    lines = [f"fine-tuning U2-NetP on {report['train']} composites, scored on {report['test']} new ones "
             f"({report['machine']['cpu']}, {report['machine']['cores']} cores)",
             f"{'run':<35}{'':7}" + "".join(f"{k:>10}" for k in KEYS) + f"{'img/s':>8}"]
    for r in report["runs"]:
        if r["before"] is None:
            lines.append(f"{r['run']:<35}{'':50}{r['images_per_s']:8.2f}")
            continue
        for when in ("before", "after"):
            name = r["run"] if when == "before" else f"  (on {r['scored_on']})"
            speed = f"{r['images_per_s']:8.2f}" if when == "after" else ""
            lines.append(f"{name:<35}{when:<7}" + "".join(f"{r[when][k]:10.3f}" for k in KEYS) + speed)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=64, help="training composites (default: 64)")
    parser.add_argument("--test", type=int, default=16, help="test composites (default: 16)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--json-out", metavar="PATH")
    args = parser.parse_args(argv)
    photos = [read_image(p) for p in skimage_photos(PHOTOS)]
    report = {"machine": machine(), "train": args.train, "test": args.test, "runs": []}
    with tempfile.TemporaryDirectory(prefix="u2edge-finetune-") as tmp:
        train_set, test_set = write_dataset(Path(tmp), photos, train=args.train, test=args.test)
        data = {"train": train_set, "test": test_set,
                "same_kind": write_composites(Path(tmp) / "same_kind", photos, args.test, seed=7,
                                              pairs=photo_pairs(len(photos))[0]),
                "speed": write_composites(Path(tmp) / "speed", photos, 16, seed=8)}
        for i, (label, options, scored_on) in enumerate(runs(args)):
            print(f"run {i + 1}: {label}", file=sys.stderr)
            report["runs"].append(one_run(label, options, data, scored_on, Path(tmp) / f"run{i}"))
    print(table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
