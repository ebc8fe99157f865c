"""The benchmark's table and its plot (latency against accuracy, one point per configuration)."""

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
             f"{result['repeats']} passes; accuracy against {result['reference']}", ""]
    peers = [k for k in PEER_LABELS if any(r["kind"] == k for r in result["rows"])]
    head = (f"{'configuration':<40} {'p50 ms':>7} {'p90':>7} {'p99':>7} {'infer/s':>8} {'end-to-end/s':>14} "
            f"{'RSS MB':>7} {'model MB':>8} {'min IoU':>8} {'MAE':>7}" + "".join(f" {PEER_LABELS[k]:>9}" for k in peers))
    lines += [head, "-" * len(head)]
    for row in result["rows"]:
        inf, e2e, acc = row["inference"], row["end_to_end"], row["accuracy"]
        lines.append(f"{row['name']:<40} {inf['p50_ms']:7.1f} {inf['p90_ms']:7.1f} {inf['p99_ms']:7.1f} "
                     f"{inf['images_per_s']:8.2f} {e2e['images_per_s']:8.2f} +-{e2e['spread']:4.2f} "
                     f"{row['peak_rss_mb']:7.0f} {row['model_mb']:8.1f} {acc['min_iou']:8.4f} {acc['mean_mae']:7.4f}"
                     + "".join(f" {row['vs'][k]:8.2f}x" for k in peers))
        for size, speed in row["batches"].items():
            lines.append(f"{'  batch ' + size:<40} {'':>7} {'':>7} {'':>7} {speed['images_per_s']:8.2f}")
        if row.get("fixed_batch") and max(result["batch_sizes"]) > 1:
            lines.append(f"  (its model has a fixed batch of {row['fixed_batch']}: no other batch size runs)")
    lines.append("")
    lines += [f"{row['name']}: {row['describe']}"
              + (f"; peak GPU memory {row['gpu_memory_mb']:.0f} MB" if row.get("gpu_memory_mb") else "")
              for row in result["rows"]]
    lines += [f"not measured: {reason}" for reason in result["skipped"]]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """End-to-end p50 latency (x) against min mask IoU (y), one labelled point per configuration."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, row in enumerate(result["rows"]):
        x, y = row["end_to_end"]["p50_ms"], row["accuracy"]["min_iou"]
        ax.scatter([x], [y], s=60, marker="s" if row["peer"] else "o")
        # labels alternate above and below, so that neighbouring points stay readable
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(6, 5 if i % 2 else -12), fontsize=8)
    ax.margins(x=0.3, y=0.15)
    ax.set_xlabel("end-to-end latency per image, p50 ms (decode to PNG; lower is better)")
    ax.set_ylabel(f"min mask IoU vs {result['reference']}")
    m = result["machine"]
    ax.set_title(f"U2-NetP on {m['cpu']} ({m['cores']} cores), {result['date']}", fontsize=10)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())
