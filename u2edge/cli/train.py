"""Fine-tune U-2-Net on your own images and masks (deep supervision), or on a teacher's masks.

Examples:
  u2edge train --images data/images --masks data/masks -o runs/parts
  u2edge train --images data/images --masks data/masks --val-images val/images --val-masks val/masks \\
      --model u2net --epochs 50 --batch 8 --device cuda --amp -o runs/parts_big
  u2edge train --images shots/ --teacher u2net -o runs/distilled   # no masks: U2-Net's are the targets
  u2edge train --resume runs/parts                                  # after Ctrl-C; --epochs N trains longer

Then the run's best.pth goes wherever weights go:
  u2edge image --engine runs/parts/best.pth photo.jpg -o out/
  u2edge export --weights runs/parts/best.pth -o parts.onnx
  u2edge build --weights runs/parts/best.pth --precision int8 --calib-dir shots/ -o parts.engine

Images and masks pair by file name without its suffix, as in `u2edge eval`. A pair that cannot be
read, whose mask is not its image's size, or whose mask is not single-channel is one line on
stderr; the others train, and the exit code is then 1. The run folder gets last.pth (resumable),
best.pth (lowest validation MAE, the starting weights counted as epoch 0), metrics.json and
curves.png. Ctrl-C finishes the step under way, saves last.pth and stops.
"""

from __future__ import annotations

import argparse

from ..errors import U2EdgeError
from ..train import TrainConfig, resume, train
from ..train.loop import FINE_TUNE_LR, FROM_SCRATCH_LR, RESUME_CHANGES
from .options import add_json_option, add_max_pixels_option, add_model_option, print_json
from .progress import Progress


# the defaults have one owner, TrainConfig: every option is None until given, so that --resume can
# tell what was given
DEFAULT = TrainConfig(output="")
FIXED = tuple(name for name in TrainConfig.__dataclass_fields__ if name not in RESUME_CHANGES + ("output",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--images", metavar="DIR", help="training images")
    data.add_argument("--masks", metavar="DIR", help="their masks, same names (white = object)")
    data.add_argument("--val-images", metavar="DIR", help="validation images (default: --val-split of --images)")
    data.add_argument("--val-masks", metavar="DIR", help="validation masks")
    data.add_argument("--val-split", type=float, metavar="F",
                      help=f"fraction held out for validation without --val-images (default: {DEFAULT.val_split}; "
                           "0: none, and best.pth follows the training loss)")
    data.add_argument("--teacher", metavar="MODEL", help="no masks: train on this model's masks of --images "
                                                         "(u2net, u2netp, or a model file)")
    add_max_pixels_option(data)
    model = parser.add_argument_group("model")
    add_model_option(model, f"architecture to train (default: {DEFAULT.model})", default=None)
    model.add_argument("--weights", metavar="W", help="official (default), none (random), or a .pth/.onnx to "
                                                      "start from")
    opt = parser.add_argument_group("training (defaults: the official u2net_train.py)")
    opt.add_argument("--epochs", type=int, help=f"epochs in all (default: {DEFAULT.epochs})")
    opt.add_argument("--batch", type=int, help=f"batch size (default: {DEFAULT.batch})")
    opt.add_argument("--imgsz", type=int, help=f"input side; training crops 0.9 of it (default: {DEFAULT.imgsz})")
    opt.add_argument("--lr", type=float, help=f"Adam learning rate (default: {FINE_TUNE_LR} from trained weights, "
                                              f"the official {FROM_SCRATCH_LR} from --weights none)")
    opt.add_argument("--workers", type=int, metavar="N", help="loader processes (default: 0 on the CPU, "
                                                              "up to 4 on a GPU)")
    opt.add_argument("--seed", type=int, help=f"seed of the split, the order and the augmentation "
                                              f"(default: {DEFAULT.seed})")
    opt.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    opt.add_argument("--amp", action="store_const", const=True, help="mixed precision: FP16 on CUDA, BF16 on the CPU")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="RUN", help="run folder to create")
    out.add_argument("--resume", metavar="RUN", help="continue this run where it stopped (its options are kept; "
                                                     "--epochs, --workers and --device may change)")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    def progress(total: int, label: str) -> Progress:
        return Progress(total, label, enabled=not args.quiet)

    if args.resume:
        given = [name for name in FIXED if getattr(args, name) is not None]
        if given:
            raise U2EdgeError(lambda spell: f"{spell('resume')} keeps the run's options; drop "
                                            f"{', '.join(spell(n) for n in given)}")
        result = resume(args.resume, progress=progress, epochs=args.epochs, workers=args.workers, device=args.device)
    else:
        options = {name: getattr(args, name) for name in TrainConfig.__dataclass_fields__
                   if getattr(args, name) is not None}
        result = train(TrainConfig(**options), progress=progress)
    summary = {"run": str(result.run), "best_epoch": result.best_epoch, "before": result.before,
               "after": result.after, "problems": result.problems}
    if args.json:
        print_json(summary)
    else:
        print(f"{result.run}: best.pth from epoch {result.best_epoch}")
        if result.before and result.after:
            print(f"{'':8}{'MAE':>8}{'maxF':>8}{'S_m':>8}{'meanE':>8}{'IoU':>8}")
            for label, scores in (("before", result.before), ("after", result.after)):
                print(f"{label:<8}" + "".join(f"{scores[k]:8.3f}" for k in ("mae", "max_f", "s_measure", "mean_e",
                                                                              "iou")))
    return 1 if result.problems else 0
