"""A run's results: ``metrics.json`` and ``curves.png`` (loss and validation MAE per epoch)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from .._deps import available
from .._files import write_bytes_atomic

__all__ = ["write_metrics", "write_curves"]

log = logging.getLogger("u2edge")


def write_metrics(path: Path, summary: dict) -> None:
    write_bytes_atomic(path, (json.dumps(summary, indent=2) + "\n").encode())


def write_curves(path: Path, history: list[dict]) -> bool:
    """Plot the training loss and the validation MAE per epoch (epoch 0: the starting weights).
    Without matplotlib (``pip install 'u2edge[train]'``) nothing is written and False returned."""
    if not available("matplotlib"):
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display: a training box is often headless
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5), tight_layout=True)
    loss, mae = figure.subplots(1, 2)
    trained = [h for h in history if h.get("loss") is not None]
    loss.plot([h["epoch"] for h in trained], [h["loss"] for h in trained], marker="o")
    loss.set(title="training loss (BCE, 7 outputs)", xlabel="epoch")
    validated = [h for h in history if h.get("val")]
    mae.plot([h["epoch"] for h in validated], [h["val"]["mae"] for h in validated], marker="o", color="C1")
    mae.set(title="validation MAE", xlabel="epoch (0: starting weights)")
    for axes in (loss, mae):
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
    return True
