"""Fine-tuning U-2-Net with the official objective: deep supervision, the sum of BCE over the
fused map and the six side maps, with Adam (betas 0.9/0.999, eps 1e-8, no weight decay). The
learning rate is the official 1e-3 from random weights; from trained weights it is 1e-4, since
1e-3 (measured by ``benchmarks/finetune.py``) first wrecks what the official weights know.

A run lives in one folder: ``last.pth`` (weights plus what resuming needs), ``best.pth`` (the
lowest validation MAE so far, the starting weights counted as epoch 0), ``metrics.json`` and
``curves.png``. Every file is written atomically. Ctrl-C or SIGTERM finishes the step under way,
saves ``last.pth`` and stops; ``resume`` continues exactly where it stopped: the same batches,
the same augmentation and the same optimizer state, so the loss curve is the uninterrupted one.

Starting from trained weights (official or a file), BatchNorm keeps its statistics (the official
ONNX has them folded into the convs, and a dozen images a batch cannot re-estimate them); its
scale and shift still train. From random weights (``weights="none"``) BatchNorm trains as usual.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable  # collections.abc.Callable cannot be subscripted on 3.8

import numpy as np

from .._deps import require
from .._files import output_folder
from ..errors import ImageError, U2EdgeError, WeightsError
from ..images import expand_inputs, pair_files, pixel_limit
from ..metrics import SODMetrics, agreement
from ..processing import postprocess, preprocess
from ..weights import WEIGHTS, default_onnx, get_weights
from . import report
from .data import Pair, check_pairs, crop_size, epoch_order, read_target, sample, split_pairs
from .teacher import open_teacher, teacher_pairs

__all__ = ["TrainConfig", "TrainResult", "train", "resume", "deep_supervision_loss", "RESUME_CHANGES"]

log = logging.getLogger("u2edge")

# what a resumed run may change; anything else would make it another run
RESUME_CHANGES = ("epochs", "workers", "device")
FROM_SCRATCH_LR = 1e-3  # the official u2net_train.py
FINE_TUNE_LR = 1e-4
STATE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """The options of a training run; each is named as its ``u2edge train`` flag."""

    output: str
    images: str | None = None
    masks: str | None = None  # None with a teacher: its masks are the targets
    val_images: str | None = None
    val_masks: str | None = None
    val_split: float = 0.1  # of the pairs, held out when no validation folders are given
    model: str = "u2netp"
    weights: str = "official"  # "official", "none" (random) or a weights file
    teacher: str | None = None  # an official model name or a model file
    epochs: int = 20
    batch: int = 12
    imgsz: int = 320
    lr: float | None = None  # None: FROM_SCRATCH_LR with weights="none", else FINE_TUNE_LR
    workers: int | None = None  # loader processes; None: 0 on the CPU, up to 4 on a GPU
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    amp: bool = False  # FP16 autocast on CUDA, BF16 on the CPU
    max_pixels: int | None = None

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return FROM_SCRATCH_LR if self.weights == "none" else FINE_TUNE_LR

    def check(self) -> None:
        from ..export import check_imgsz

        get_weights(self.model)
        check_imgsz(self.imgsz)
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise U2EdgeError(lambda spell, name=name: f"{spell(name)} {getattr(self, name)} must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise U2EdgeError(lambda spell: f"{spell('lr')} {self.lr} must be above 0")
        if not 0 <= self.val_split < 1:
            raise U2EdgeError(lambda spell: f"{spell('val_split')} {self.val_split} must be in [0, 1)")
        _check_workers(self.workers)
        if self.images is None:
            raise U2EdgeError(lambda spell: f"give the training images with {spell('images')}")
        if (self.masks is None) == (self.teacher is None):
            raise U2EdgeError(lambda spell: f"give {spell('masks')} (hand-made masks) or {spell('teacher')} "
                                            f"(a model's masks as targets), one of them")
        if self.teacher is None and (self.val_images is None) != (self.val_masks is None):
            raise U2EdgeError(lambda spell: f"give {spell('val_images')} and {spell('val_masks')} together")
        if self.teacher is not None and self.val_masks is not None:
            raise U2EdgeError(lambda spell: f"with {spell('teacher')} the teacher labels {spell('val_images')} "
                                            f"too; drop {spell('val_masks')}")
        if self.weights not in ("official", "none") and not Path(self.weights).is_file():
            raise WeightsError(lambda spell: f"{spell('weights')} {self.weights}: no such file; give 'official', "
                                             "'none' or a weights file (.pth, .onnx)")
        if self.teacher is not None and self.teacher not in WEIGHTS and not Path(self.teacher).is_file():
            raise WeightsError(lambda spell: f"{spell('teacher')} {self.teacher}: neither a model "
                                             f"({', '.join(sorted(WEIGHTS))}) nor a model file")


def _check_workers(workers: int | None) -> None:
    if workers is not None and workers < 0:
        raise U2EdgeError(lambda spell: f"{spell('workers')} {workers} must be 0 or more")


@dataclass
class TrainResult:
    run: Path
    history: list[dict]  # one entry per epoch; entry 0 validates the starting weights
    best_epoch: int
    problems: list[str]  # one line per input pair left out

    @property
    def before(self) -> dict | None:
        return self.history[0].get("val")

    @property
    def after(self) -> dict | None:
        return self.history[-1].get("val")


def deep_supervision_loss(logits: Sequence, target, weight=None):
    """The official objective: the sum over the seven maps (fused d0 and the sides d1..d6) of the
    mean binary cross-entropy against ``target`` (Nx1xHxW in [0, 1]). On logits, so it is exact
    and safe under autocast. ``weight`` (N) zeroes samples that could not be read."""
    torch = require("torch")
    F = torch.nn.functional
    per_sample = sum(F.binary_cross_entropy_with_logits(d.float(), target, reduction="none").mean(dim=(1, 2, 3))
                     for d in logits)
    if weight is None:
        return per_sample.mean()
    return (per_sample * weight).sum() / weight.sum().clamp(min=1)


ProgressFactory = Callable[[int, str], object]  # (total, label) -> an object with step(note) and close()


class _Quiet:
    def __init__(self, total: int, label: str) -> None:
        pass

    def step(self, note: str = "") -> None:
        pass

    def close(self) -> None:
        pass


def train(config: TrainConfig, *, progress: ProgressFactory = _Quiet) -> TrainResult:
    """Train a new run into ``config.output`` (which must not hold one already)."""
    config.check()
    require("torch")  # before anything is written
    run = Path(config.output)
    if (run / "last.pth").exists():
        raise U2EdgeError(lambda spell: f"{run} already holds a training run; continue it with "
                                        f"{spell('resume')} {run}, or choose another {spell('output')}")
    output_folder(run, "run folder", "choose a folder")
    return _Trainer(config, run, progress).fit()


def resume(run: str | os.PathLike, *, progress: ProgressFactory = _Quiet, **changes) -> TrainResult:
    """Continue the run in folder ``run`` from its ``last.pth``; ``changes`` may set ``epochs``
    (to train longer), ``workers`` and ``device``."""
    unknown = sorted(set(changes) - set(RESUME_CHANGES))
    if unknown:
        raise U2EdgeError(lambda spell: f"a resumed run keeps its options; only "
                                        f"{', '.join(spell(n) for n in RESUME_CHANGES)} can change, not "
                                        f"{', '.join(spell(n) for n in unknown)}")
    run = Path(run)
    state = _read_state(run / "last.pth")
    config = dataclasses.replace(TrainConfig(**state["config"]), output=str(run),
                                 **{k: v for k, v in changes.items() if v is not None})
    _check_workers(config.workers)
    if state["epoch"] >= config.epochs:
        raise U2EdgeError(lambda spell: f"{run} has finished its {state['epoch']} epochs; to train on, give "
                                        f"{spell('epochs')} above {state['epoch']}")
    return _Trainer(config, run, progress, state).fit()


def _read_state(path: Path) -> dict:
    require("torch")
    from ..model import load_pth

    if not path.is_file():
        raise U2EdgeError(f"{path.parent} holds no last.pth to resume from; is it a u2edge train run folder?")
    ckpt = load_pth(path)
    state = ckpt.get("train") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise WeightsError(f"{path} holds no training state that this u2edge can resume (a weights-only "
                           "checkpoint, or one from another version); start a new run with --weights "
                           f"{path}")
    state["state_dict"] = ckpt["state_dict"]
    return state


class _StopRequest:
    """Turns the first Ctrl-C or SIGTERM into a request honoured between steps, so that weights
    and optimizer are never saved half-updated; a second signal acts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach only the main thread; nothing to install
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous[signum])
        log.warning("stopping after this step (%s again stops at once)", "Ctrl-C" if signum == signal.SIGINT
                    else "SIGTERM")

    def stop(self) -> None:
        """Act on the signal as its earlier handler would (Ctrl-C raises KeyboardInterrupt)."""
        handler = self._previous.get(self.signum)
        if callable(handler):
            handler(self.signum, None)
        raise KeyboardInterrupt


class _Samples:
    """The remaining samples of one epoch, for torch's DataLoader (each worker reads its own)."""

    def __init__(self, pairs: list[Pair], order: np.ndarray, start: int, spec, seed: int, epoch: int,
                 max_pixels: int) -> None:
        self.pairs, self.order, self.start, self.spec = pairs, order, start, spec
        self.seed, self.epoch, self.max_pixels = seed, epoch, max_pixels

    def __len__(self) -> int:
        return len(self.order) - self.start

    def __getitem__(self, k: int):
        position = self.start + k
        pair = self.pairs[self.order[position]]
        try:
            image, mask = read_target(pair, max_pixels=self.max_pixels)
        except ImageError as exc:  # the file changed since it was checked: this sample counts for nothing
            log.error("%s; left out of this step", exc)
            side = crop_size(self.spec.imgsz)
            return np.zeros((3, side, side), np.float32), np.zeros((1, side, side), np.float32), np.float32(0)
        x, y = sample(image, mask, self.spec, seed=self.seed, epoch=self.epoch, position=position)
        return x, y, np.float32(1)


def _ignore_sigint(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop


class _Trainer:
    def __init__(self, config: TrainConfig, run: Path, progress: ProgressFactory, state: dict | None = None) -> None:
        torch = self.torch = require("torch")
        from ..config import CONFIGS
        from ..model import U2Net, load_weights

        self.config, self.run, self.progress = config, run, progress
        try:
            self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:  # torch's own list of device types
            self.device = None
        if self.device is None or self.device.type not in ("cpu", "cuda"):
            raise U2EdgeError(lambda spell: f"{spell('device')} {config.device}: use cpu, cuda or cuda:N")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise U2EdgeError(lambda spell: f"{spell('device')} {config.device}: this torch ({torch.__version__}) "
                                            "sees no CUDA device; use cpu, or a CUDA build of torch on a GPU")
        self.workers = config.workers if config.workers is not None else \
            (min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0)
        self.max_pixels = pixel_limit(config.max_pixels)
        self.spec = dataclasses.replace(WEIGHTS[config.model].preprocessing, imgsz=config.imgsz)
        torch.manual_seed(config.seed)  # the random initialisation of weights="none"
        self.model = U2Net(CONFIGS[config.model])
        if state is not None:
            self.model.load_state_dict(state["state_dict"])
        elif config.weights != "none":
            load_weights(self.model, default_onnx(config.model) if config.weights == "official" else config.weights)
        # channels_last: 1.35x faster on a CPU (oneDNN), and what tensor cores want on a GPU
        self.model.to(self.device, memory_format=torch.channels_last)
        self.frozen_bn = config.weights != "none"
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate, betas=(0.9, 0.999),
                                          eps=1e-8, weight_decay=0)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp and self.device.type == "cuda" else None
        if state is None:
            self.train_pairs, self.val_pairs, self.problems = self._data()
            self.epoch, self.step, self.loss_sum, self.loss_count = 0, 0, 0.0, 0
            self.history, self.best = [], None
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.train_pairs = [Pair(Path(i), Path(m)) for i, m in state["train_pairs"]]
            self.val_pairs = [Pair(Path(i), Path(m)) for i, m in state["val_pairs"]]
            self.problems = list(state["problems"])
            self.epoch, self.step = state["epoch"], state["step"]
            self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]
            self.history, self.best = list(state["history"]), state["best"]
            log.info("resuming %s at epoch %d, step %d", run, self.epoch + 1, self.step)

    # --- data ------------------------------------------------------------------------------------------

    def _data(self) -> tuple[list[Pair], list[Pair], list[str]]:
        config = self.config
        problems: list[str] = []
        if config.teacher is None:
            found, missing = pair_files(Path(config.images), Path(config.masks))
            val, val_missing = pair_files(Path(config.val_images), Path(config.val_masks),
                                          names=("val_images", "val_masks")) if config.val_images else ([], [])
            problems += missing + val_missing
            train_pairs, bad = self._checked([Pair(*p) for p in found], "checking")
            val_pairs, val_bad = self._checked([Pair(*p) for p in val], "checking validation")
            problems += bad + val_bad
        else:
            train_pairs, val_pairs = self._teacher_pairs(problems)
        if not config.val_images:
            train_pairs, val_pairs = split_pairs(train_pairs, config.val_split, config.seed)
        for line in problems:
            log.error("%s", line)
        if not train_pairs:
            raise U2EdgeError(f"no training pair left in {config.images}: every one was left out (above)")
        log.info("%d training pairs, %d for validation%s", len(train_pairs), len(val_pairs),
                 f", {len(problems)} left out" if problems else "")
        return train_pairs, val_pairs, problems

    def _checked(self, pairs: list[Pair], label: str) -> tuple[list[Pair], list[str]]:
        bar = self.progress(len(pairs), label)
        try:
            return check_pairs(pairs, max_pixels=self.max_pixels, step=lambda pair: bar.step(pair.image.name))
        finally:
            bar.close()

    def _teacher_pairs(self, problems: list[str]) -> tuple[list[Pair], list[Pair]]:
        config = self.config
        out = []
        with open_teacher(config.teacher, str(self.device)) as engine:
            log.info("teacher %s: %s", config.teacher, engine.describe())
            for folder, sub in ((config.images, "train"), (config.val_images, "val")):
                if folder is None:
                    out.append([])
                    continue
                images, missing = expand_inputs([folder])
                problems += missing
                bar = self.progress(len(images), f"teacher masks ({sub})")
                try:
                    pairs, bad = teacher_pairs(images, engine, self.run / "teacher" / sub, max_pixels=self.max_pixels,
                                               step=lambda path: bar.step(path.name))
                finally:
                    bar.close()
                problems += bad
                out.append(pairs)
        return out[0], out[1]

    # --- training --------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        config = self.config
        if not self.history:
            self.history.append({"epoch": 0, "loss": None, "val": self._validate()})
            self._keep_best(self.history[0])
            self._report()
        stopper = _StopRequest()
        with stopper.installed():
            while self.epoch < config.epochs:
                if stopper.signum is not None:
                    self._stop(stopper)
                started = time.perf_counter()
                images_per_s = self._epoch(stopper)
                if images_per_s is None:
                    self._stop(stopper)
                entry = {"epoch": self.epoch + 1, "loss": self.loss_sum / max(self.loss_count, 1),
                         "val": self._validate(), "seconds": round(time.perf_counter() - started, 3),
                         "images_per_s": round(images_per_s, 3)}
                self.history.append(entry)
                self.epoch, self.step, self.loss_sum, self.loss_count = self.epoch + 1, 0, 0.0, 0
                self._keep_best(entry)  # first, so that last.pth knows the best so far
                self._save_last()
                self._report()
                self._log(entry)
        return TrainResult(self.run, self.history, self.best["epoch"], self.problems)

    def _stop(self, stopper: _StopRequest) -> None:
        self._save_last()
        self._report()
        log.warning("stopped at epoch %d, step %d: saved %s; continue with: u2edge train --resume %s",
                    self.epoch + 1, self.step, self.run / "last.pth", self.run)
        stopper.stop()

    def _epoch(self, stopper: _StopRequest) -> float | None:
        """Train the rest of the current epoch and return its training speed (images a second),
        or None when a stop was requested before its last step."""
        torch, config = self.torch, self.config
        order = epoch_order(len(self.train_pairs), config.seed, self.epoch)
        samples = _Samples(self.train_pairs, order, self.step * config.batch, self.spec, config.seed, self.epoch,
                           self.max_pixels)
        loader = torch.utils.data.DataLoader(samples, batch_size=config.batch, shuffle=False,
                                             num_workers=self.workers, worker_init_fn=_ignore_sigint,
                                             pin_memory=self.device.type == "cuda")
        steps = -(-len(order) // config.batch)
        bar = self.progress(steps - self.step, f"epoch {self.epoch + 1}/{config.epochs}")
        self._train_mode()
        seconds, images = 0.0, 0
        try:
            for x, y, weight in loader:
                started = time.perf_counter()
                loss = self._step(x, y, weight)
                seconds += time.perf_counter() - started
                images += len(x)
                count = int(weight.sum())
                self.loss_sum += loss * count
                self.loss_count += count
                self.step += 1
                bar.step(f"loss {self.loss_sum / max(self.loss_count, 1):.4f}")
                if stopper.signum is not None and self.step < steps:
                    return None
        finally:
            bar.close()
        return images / max(seconds, 1e-9)

    def _step(self, x, y, weight) -> float:
        torch = self.torch
        x, y, weight = (t.to(self.device, non_blocking=True) for t in (x, y, weight))
        x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.model.logits(x)
        loss = deep_supervision_loss(logits, y, weight)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def _autocast(self):
        torch = self.torch
        if not self.config.amp:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.float16 if self.device.type == "cuda" else torch.bfloat16)

    def _train_mode(self) -> None:
        self.model.train()
        if self.frozen_bn:
            for module in self.model.modules():
                if isinstance(module, self.torch.nn.BatchNorm2d):
                    module.eval()

    # --- validation, checkpoints, reports --------------------------------------------------------------

    def _validate(self) -> dict | None:
        """The SOD metrics of the model on the validation pairs, run as ``u2edge image`` runs a
        model (the whole image resized to ``imgsz``, the mask resized back), in FP32; and the mean
        IoU at 0.5 against the targets (the agreement with a teacher's masks)."""
        if not self.val_pairs:
            return None
        torch = self.torch
        self.model.eval()
        metrics, ious = SODMetrics(), []
        bar = self.progress(len(self.val_pairs), "validation")
        try:
            with torch.inference_mode():
                for start in range(0, len(self.val_pairs), self.config.batch):
                    chunk = []
                    for pair in self.val_pairs[start:start + self.config.batch]:
                        bar.step(pair.image.name)
                        try:
                            chunk.append(read_target(pair, max_pixels=self.max_pixels))
                        except ImageError as exc:
                            log.error("%s; left out of validation", exc)
                    if not chunk:
                        continue
                    x = torch.from_numpy(np.stack([preprocess(image, self.spec) for image, _ in chunk]))
                    x = x.to(self.device).contiguous(memory_format=torch.channels_last)
                    pred = torch.sigmoid(self.model.logits(x)[0]).float().cpu().numpy()[:, 0]
                    for p, (image, gt) in zip(pred, chunk):
                        mask = postprocess(p, *image.shape[:2])
                        metrics.add(mask, gt)
                        ious.append(agreement(mask, gt.astype(np.float32) / max(float(gt.max()), 1.0))["iou"])
        finally:
            bar.close()
        self._train_mode()
        if not ious:
            return None
        results = {k: round(v, 6) for k, v in metrics.results().items() if k != "images"}
        return {"images": len(ious), **results, "iou": round(float(np.mean(ious)), 6)}

    def _keep_best(self, entry: dict) -> None:
        """Save ``best.pth`` when ``entry`` has the lowest validation MAE so far (the lowest
        training loss when there is no validation)."""
        score = entry["val"]["mae"] if entry["val"] else entry["loss"]
        if score is None:
            return
        if self.best is None or score < self.best["score"]:
            from ..model import save_checkpoint

            self.best = {"epoch": entry["epoch"], "score": score, "by": "val_mae" if entry["val"] else "train_loss"}
            save_checkpoint(self.model, self.run / "best.pth")

    def _save_last(self) -> None:
        from ..model import save_checkpoint

        state = {"version": STATE_VERSION, "config": dataclasses.asdict(self.config), "epoch": self.epoch,
                 "step": self.step, "loss_sum": self.loss_sum, "loss_count": self.loss_count,
                 "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                 "train_pairs": [[os.path.abspath(p.image), os.path.abspath(p.mask)] for p in self.train_pairs],
                 "val_pairs": [[os.path.abspath(p.image), os.path.abspath(p.mask)] for p in self.val_pairs],
                 "problems": self.problems, "history": self.history, "best": self.best}
        save_checkpoint(self.model, self.run / "last.pth", train=state)

    def _report(self) -> None:
        summary = {"config": dataclasses.asdict(self.config), "device": str(self.device),
                   "train_pairs": len(self.train_pairs), "val_pairs": len(self.val_pairs),
                   "epochs_done": self.epoch, "best": self.best, "before": self.history[0]["val"],
                   "after": self.history[-1]["val"], "history": self.history, "problems": self.problems}
        report.write_metrics(self.run / "metrics.json", summary)
        report.write_curves(self.run / "curves.png", self.history)

    def _log(self, entry: dict) -> None:
        val = entry["val"]
        scores = f", val MAE {val['mae']:.4f} maxF {val['max_f']:.3f} S {val['s_measure']:.3f} " \
                 f"E {val['mean_e']:.3f}" if val else ""
        best = " (best)" if self.best and self.best["epoch"] == entry["epoch"] else ""
        log.info("epoch %d/%d: loss %.4f%s%s, %.1f images/s", entry["epoch"], self.config.epochs, entry["loss"],
                 scores, best, entry["images_per_s"])
