"""A fold's training history: history.csv (one row an epoch) and curves.png (loss and dice per epoch)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..base.fileio import atomic_open


def history_csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """curves.png: loss and dice per epoch, training and validation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key in zip(axes, ("loss", "dice")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [r.get(prefix + key) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=prefix + key, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
