"""The benchmark's table and its plot (latency against accuracy, one point per configuration),
both grouped by model: each model's rows are scored against, and compared with, its own rows only."""

from __future__ import annotations

from pathlib import Path

from .._deps import require
from .._files import write_bytes_atomic

__all__ = ["table", "plot"]

PEER_LABELS = {"rembg": "vs rembg", "torch": "vs torch"}


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"u2edge {result['u2edge']} bench, {result['date']}: {m['cpu']}, {m['cores']} cores"
             f"{', ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU'}; {len(result['images'])} images x "
             f"{result['repeats']} passes; accuracy and ratios within each model"]
    peers = [k for k in PEER_LABELS if any(r["kind"] == k for r in result["rows"])]
    head = (f"{'configuration':<46} {'p50 ms':>7} {'p90':>7} {'p99':>7} {'infer/s':>8} {'end-to-end/s':>14} "
            f"{'RSS MB':>7} {'model MB':>8} {'min IoU':>8} {'MAE':>7}"
            + "".join(f" {PEER_LABELS[k]:>9}" for k in peers))
    for model in result["models"]:
        rows = [row for row in result["rows"] if row["model"] == model]
        if not rows:
            continue
        lines += ["", f"{model}: accuracy against {result['reference'][model]}", head, "-" * len(head)]
        for row in rows:
            inf, e2e, acc = row["inference"], row["end_to_end"], row["accuracy"]
            vs = "".join(f" {row['vs'][k]:8.2f}x" if k in row["vs"] else f" {'':>9}" for k in peers)
            lines.append(f"{row['name']:<46} {inf['p50_ms']:7.1f} {inf['p90_ms']:7.1f} {inf['p99_ms']:7.1f} "
                         f"{inf['images_per_s']:8.2f} {e2e['images_per_s']:8.2f} +-{e2e['spread']:4.2f} "
                         f"{row['peak_rss_mb']:7.0f} {_megabytes(row['model_mb'])} {acc['min_iou']:8.4f} "
                         f"{acc['mean_mae']:7.4f}{vs}")
            for size, speed in row["batches"].items():
                lines.append(f"{'  batch ' + size:<46} {'':>7} {'':>7} {'':>7} {speed['images_per_s']:8.2f}")
            if row.get("fixed_batch") and max(result["batch_sizes"]) > 1:
                lines.append(f"  (its model has a fixed batch of {row['fixed_batch']}: no other batch size runs)")
    lines.append("")
    lines += [f"{row['name']}: {row['describe']}"
              + (f"; peak GPU memory {row['gpu_memory_mb']:.0f} MB" if row.get("gpu_memory_mb") else "")
              for row in result["rows"]]
    lines += [f"not measured: {reason}" for reason in result["skipped"]]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """End-to-end p50 latency (x, log scale) against min mask IoU (y, against the row's own model's
    reference), one labelled point per configuration, one colour per model."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for colour, model in zip(colours, result["models"]):
        rows = [row for row in result["rows"] if row["model"] == model]
        for row in rows:
            x, y = row["end_to_end"]["p50_ms"], row["accuracy"]["min_iou"]
            ax.scatter([x], [y], s=60, color=colour, marker="s" if row["peer"] else "o",
                       label=model if row is rows[0] else None)
            # labels alternate above and below, so that neighbouring points stay readable
            ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(6, 5 if i % 2 else -12), fontsize=7)
            i += 1
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 400, not 4 x 10^2
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.margins(x=0.3, y=0.15)
    ax.set_xlabel("end-to-end latency per image, p50 ms, log scale (decode to PNG; lower is better)")
    ax.set_ylabel("min mask IoU vs the model's ONNX Runtime FP32 row")
    ax.legend(title="model (squares: peers)", fontsize=8)
    m = result["machine"]
    ax.set_title(f"{' and '.join(result['models'])} on {m['cpu']} ({m['cores']} cores), {result['date']}",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def _megabytes(size: float | None) -> str:
    """A model's size, or a dash for a model on a server."""
    return f"{size:8.1f}" if size is not None else f"{'-':>8}"
