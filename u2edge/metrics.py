"""Salient-object-detection metrics in numpy: MAE, max F-beta, S-measure and E-measure; and the
agreement of a mask with a reference mask (IoU and MAE), which the INT8 gate and ``u2edge bench`` use.

Definitions follow the papers the SOD literature reports (and PySODMetrics implements, which the
tests compare against): predictions are min-max normalised to [0, 1], ground truth is ``> 0.5``.

- MAE: mean absolute error per image, averaged over images.
- F-beta (beta^2 = 0.3): precision and recall of ``pred >= t`` for the 256 thresholds t = 255..0
  (8-bit), the F curve averaged over images; max F is its maximum (Achanta et al. 2009).
- S-measure: 0.5 * object-aware + 0.5 * region-aware structural similarity (Fan et al. 2017).
- E-measure: enhanced alignment of the binarised prediction with the ground truth, averaged over
  pixels, at each of the 256 thresholds; mean E and max E over the image-averaged curve (Fan et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SODMetrics", "normalize_pair", "mae", "f_curve", "s_measure", "e_curve", "SUBJECT_FRACTION", "agreement"]

_EPS = np.spacing(1)
BETA2 = 0.3


def normalize_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 or float prediction and mask -> (float64 prediction in [0, 1], bool ground truth)."""
    pred = np.asarray(pred, np.float64)
    if pred.max() > 1.0:
        pred = pred / 255.0
    lo, hi = pred.min(), pred.max()
    if hi > lo:
        pred = (pred - lo) / (hi - lo)
    gt = np.asarray(gt)
    gt = gt > (128 if gt.dtype == np.uint8 or gt.max() > 1 else 0.5)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    return pred, gt


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.abs(pred - gt).mean())


# a reference mask with less foreground than this has no subject, and IoU against it measures stray pixels
SUBJECT_FRACTION = 0.01


def agreement(mask: np.ndarray, reference: np.ndarray) -> dict:
    """IoU (at 0.5) and MAE of a [0, 1] mask against a reference mask of the same size, and
    whether the reference has a subject (IoU is meaningful only then)."""
    a, b = mask > 0.5, reference > 0.5
    union = int((a | b).sum())
    return {"iou": round(float((a & b).sum() / union) if union else 1.0, 5),
            "mae": round(float(np.abs(mask.astype(np.float32) - reference.astype(np.float32)).mean()), 6),
            "subject": bool(b.mean() >= SUBJECT_FRACTION)}


def _counts_above(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For thresholds 255, 254, ..., 0: how many foreground and background pixels have pred >= t."""
    levels = (pred * 255).astype(np.uint8)
    fg = np.bincount(levels[gt], minlength=256)[::-1].cumsum()
    bg = np.bincount(levels[~gt], minlength=256)[::-1].cumsum()
    return fg.astype(np.float64), bg.astype(np.float64)


def f_curve(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """F-beta at the 256 thresholds (255 down to 0)."""
    tp, fp = _counts_above(pred, gt)
    predicted = tp + fp
    precision = tp / np.where(predicted == 0, 1, predicted)
    recall = tp / max(int(gt.sum()), 1)
    denominator = BETA2 * precision + recall
    return np.where(denominator == 0, 0.0, (1 + BETA2) * precision * recall / np.where(denominator == 0, 1,
                                                                                         denominator))


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    n = pred.size
    if n < 2:
        return 1.0 if n == 0 else float(1.0 - abs(pred.mean() - gt.mean()))
    x, y = pred.mean(), gt.mean()
    var_x = ((pred - x) ** 2).sum() / (n - 1)
    var_y = ((gt - y) ** 2).sum() / (n - 1)
    cov = ((pred - x) * (gt - y)).sum() / (n - 1)
    alpha = 4 * x * y * cov
    beta = (x ** 2 + y ** 2) * (var_x + var_y)
    if alpha != 0:
        return float(alpha / (beta + _EPS))
    return 1.0 if beta == 0 else 0.0


def _object_score(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    mean = values.mean()
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return float(2 * mean / (mean ** 2 + 1 + std + _EPS))


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    ratio = gt.mean()
    if ratio == 0:
        return float(1 - pred.mean())
    if ratio == 1:
        return float(pred.mean())
    gt_f = gt.astype(np.float64)
    objects = ratio * _object_score(pred[gt]) + (1 - ratio) * _object_score(1 - pred[~gt])
    # region: split at the ground truth's centroid into four blocks, weighted by area
    h, w = gt.shape
    rows, cols = np.nonzero(gt)
    cy, cx = int(np.round(rows.mean())) + 1, int(np.round(cols.mean())) + 1
    region = 0.0
    for ys, xs in ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)),
                   (slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w))):
        block = gt_f[ys, xs]
        region += block.size / (h * w) * _ssim(pred[ys, xs], block)
    return float(max(alpha * objects + (1 - alpha) * region, 0.0))


def e_curve(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """E-measure at the 256 thresholds (255 down to 0)."""
    total = gt.size
    fg_total = int(gt.sum())
    tp, fp = _counts_above(pred, gt)
    predicted = tp + fp
    if fg_total == 0:
        enhanced = total - predicted  # all background: agreement is the pixels predicted background
    elif fg_total == total:
        enhanced = predicted
    else:
        fn = fg_total - tp
        tn = (total - predicted) - fn
        mean_pred = predicted / total
        mean_gt = fg_total / total
        enhanced = np.zeros(256)
        # the four (prediction, truth) combinations of binary values, each with its pixel count
        for count, p_value, g_value in ((tp, 1.0, 1.0), (fp, 1.0, 0.0), (fn, 0.0, 1.0), (tn, 0.0, 0.0)):
            dp, dg = p_value - mean_pred, g_value - mean_gt
            align = 2 * dp * dg / (dp ** 2 + dg ** 2 + _EPS)
            enhanced += (align + 1) ** 2 / 4 * count
    return enhanced / (total - 1 + _EPS)


@dataclass
class SODMetrics:
    """Accumulates images; ``results()`` gives the dataset numbers in the paper's format."""

    maes: list[float] = field(default_factory=list)
    f_curves: list[np.ndarray] = field(default_factory=list)
    s_scores: list[float] = field(default_factory=list)
    e_curves: list[np.ndarray] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = normalize_pair(pred, gt)
        self.maes.append(mae(pred, gt))
        self.f_curves.append(f_curve(pred, gt))
        self.s_scores.append(s_measure(pred, gt))
        self.e_curves.append(e_curve(pred, gt))

    def results(self) -> dict[str, float]:
        if not self.maes:
            raise ValueError("no images were added")
        f = np.mean(self.f_curves, axis=0)
        e = np.mean(self.e_curves, axis=0)
        return {"images": len(self.maes), "max_f": float(f.max()), "mae": float(np.mean(self.maes)),
                "s_measure": float(np.mean(self.s_scores)), "mean_e": float(e.mean()), "max_e": float(e.max())}
