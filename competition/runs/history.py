"""A fold's training history: history.csv (one row an epoch) and curves.png (loss and dice per epoch)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..base.fileio import atomic_open, damaged


def history_csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def read_history(path: Path, rebuild: str) -> list[dict]:
    """history.csv read back, checked: a header with `epoch`, then one row an epoch of numbers (`epoch` a whole
    number, every other column a finite number or empty); a damaged one is the damaged-file line with `rebuild`."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise damaged(path, f"unreadable ({e})", rebuild) from e
    if not rows:
        raise damaged(path, "no epochs" if path.stat().st_size else "empty", rebuild)
    out = []
    for lineno, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise damaged(path, f"line {lineno} has {len(row)} cells, the header another count", rebuild)
        try:
            values = {k: float(v) for k, v in row.items() if v != ""}
        except ValueError:
            raise damaged(path, f"line {lineno} holds something other than numbers", rebuild) from None
        if "epoch" not in values or values["epoch"] != int(values["epoch"]) or not all(
                math.isfinite(v) for v in values.values()):
            raise damaged(path, f"line {lineno}: no whole epoch number, or a value that is not finite", rebuild)
        out.append(values)
    return out


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
