"""Pictures of where a model fails: overlays of the worst images and a per-fold report.html.

A report only draws what scoring computed and saved in the fold folder (score.json, scores.csv,
worst.npz): it predicts nothing, and scoring never imports it. Overlays are drawn with OpenCV (already
a dependency; exact pixel control); the histogram and bar charts use matplotlib
(see docs/contributing.md, "Dependencies").
"""
from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..base import records
from ..base.console import say
from ..base.fileio import atomic_open, write_bytes, write_text
from ..base.images import decode_jpeg
from ..base.records import ListOf, Shape
from ..data.layout import open_dataset
from .tables import WORST_FILE, breakdown, read_worst

FP_COLOR = (255, 40, 40)     # false positive: predicted car where there is none (red)
FN_COLOR = (255, 0, 255)     # false negative: car the model missed (magenta)
TRUE_EDGE = (40, 220, 40)    # true outline (green)
PRED_EDGE = (255, 220, 0)    # predicted outline (yellow)


SCORE_SHAPE = Shape("a fold's score", required={
    "fold": "count", "tta": "str", "threshold": "finite", "images": "count", "dice_mean": "finite",
    "dice_std": "finite", "best_threshold": "finite", "dice_at_best_threshold": "finite", "by_view": "dict",
    "by_make": "dict", "worst": ListOf(Shape("a worst image", required={"img": "str", "dice": "finite"})),
    "article_global_dice_model_res": "finite"})


def read_score(fold_dir: Path) -> dict:
    """A scored fold's score.json, checked (a damaged one is one line: score the fold again)."""
    return records.load(fold_dir / "score.json", SCORE_SHAPE,
                        f"score it again: `python -m competition score --run {fold_dir.parent} --fold "
                        f"{fold_dir.name[4:]} --data DIR`")


def _edges(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)


def overlay(image: np.ndarray, true: np.ndarray, pred: np.ndarray, label: str, scale: float = 0.5) -> np.ndarray:
    """RGB picture: FP red and FN blue fills, true (green) and predicted (yellow) outlines, label in the corner.

    Error regions are dilated by one pixel before shrinking so that a missed 1-3 px antenna stays visible.
    """
    out = image.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    for region, color in ((pred.astype(bool) & ~true.astype(bool), FP_COLOR),
                          (true.astype(bool) & ~pred.astype(bool), FN_COLOR)):
        grown = cv2.dilate(region.astype(np.uint8), kernel).astype(bool)
        out[grown] = out[grown] * 0.3 + np.array(color, np.float32) * 0.7
    size = (int(image.shape[1] * scale), int(image.shape[0] * scale))
    small = cv2.resize(np.clip(out, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    for mask, color in ((true, TRUE_EDGE), (pred, PRED_EDGE)):
        edge = cv2.resize(_edges(mask).astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.2
        small[edge] = color
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(label, font, 0.8, 2)
    cv2.rectangle(small, (0, 0), (w + 16, h + base + 14), (0, 0, 0), -1)
    cv2.putText(small, label, (8, h + 8), font, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    legend = "red: false positive   magenta: missed   green: true edge   yellow: predicted edge"
    cv2.rectangle(small, (0, small.shape[0] - 26), (small.shape[1], small.shape[0]), (0, 0, 0), -1)
    cv2.putText(small, legend, (8, small.shape[0] - 8), font, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return small


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _chart(path: Path, draw) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    draw(ax)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def worst_overlays(fold_dir: Path, ds, scale: float = 0.5) -> list[tuple[str, np.ndarray]]:
    """(image id, RGB overlay) of the fold's worst images, worst first, from the masks scoring saved."""
    dice_of = {w["img"][:-4]: w["dice"] for w in read_score(fold_dir)["worst"]}
    out = []
    for image_id, pred in read_worst(fold_dir):
        image = decode_jpeg(ds.read_train_image(image_id), ds.where_train(image_id))
        label = f"{image_id}  dice {dice_of[image_id]:.4f}" if image_id in dice_of else image_id
        out.append((image_id, overlay(image, ds.read_mask(image_id), pred, label, scale)))
    return out


def _breakdown_rows(stats: pd.DataFrame) -> str:
    rows = []
    for key, r in stats.iterrows():
        cells = key if isinstance(key, tuple) else (key,)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) +
                    f"<td>{r.images}</td><td>{r.dice_mean:.5f}</td><td>{r.dice_min:.5f}</td></tr>")
    return "".join(rows)


def write_fold_report(out: Path, ds) -> Path:
    """worst/*.png overlays, hist.png, views.png, makes.png and report.html in the fold folder `out`."""
    summary = read_score(out)
    table = pd.read_csv(out / "scores.csv", dtype={"car": str, "make": str, "model": str})
    worst_dir = out / "worst"
    stale = set(worst_dir.glob("*.png"))  # deleted once the new report.html no longer names them
    pictures = []
    for rank, (image_id, picture) in enumerate(worst_overlays(out, ds), start=1):
        name = f"{rank:02d}_{image_id}.png"
        write_bytes(worst_dir / name, png_bytes(picture))
        pictures.append((name, image_id))
        stale.discard(worst_dir / name)
    d = table["dice"].to_numpy()
    _chart(out / "hist.png", lambda ax: (ax.hist(d, bins=30, color="#3b7dd8"), ax.set_xlabel("dice per image"),
                                         ax.set_ylabel("images"), ax.set_title("held-out dice")))
    views = summary["by_view"]
    _chart(out / "views.png", lambda ax: (ax.bar(list(views), list(views.values()), color="#5a9"),
                                          ax.set_ylim(max(0.0, min(views.values()) - 0.02), 1.0),
                                          ax.set_xlabel("view"), ax.set_ylabel("mean dice"),
                                          ax.set_title("dice by view (01-16)")))
    makes = summary["by_make"]
    _chart(out / "makes.png", lambda ax: (ax.barh(list(makes)[:20][::-1], list(makes.values())[:20][::-1],
                                                  color="#d98a3b"),
                                          ax.set_xlim(max(0.0, min(makes.values()) - 0.02), 1.0),
                                          ax.set_xlabel("mean dice"), ax.set_title("dice by make (worst 20)")))
    models = breakdown(table, ["make", "model"]).head(20)
    worst_rows = "".join(f"<tr><td>{html.escape(w['img'])}</td><td>{w['dice']:.5f}</td></tr>" for w in summary["worst"])
    figures = "".join(f'<figure><img src="worst/{html.escape(n)}" alt="{html.escape(i)}">'
                      f"<figcaption>{html.escape(i)}</figcaption></figure>" for n, i in pictures)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(out.parent.name)} fold {summary['fold']}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} img{{max-width:100%}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px}} figure{{margin:1em 0}}</style>
</head><body>
<h1>{html.escape(out.parent.name)} &mdash; fold {summary['fold']}</h1>
<p>Kaggle dice (mean per image at native 1918x1280, TTA {summary['tta']}, threshold {summary['threshold']}):
<b>{summary['dice_mean']:.5f}</b> &plusmn; {summary['dice_std']:.5f} over {summary['images']} held-out images.<br>
The article's batch-global soft dice at model resolution: {summary['article_global_dice_model_res']:.5f}.<br>
Best threshold {summary['best_threshold']:.2f} &rarr; {summary['dice_at_best_threshold']:.5f}.</p>
<h2>Training curves</h2><img src="curves.png" alt="curves">
<h2>Dice per image</h2><img src="hist.png" alt="histogram"> <img src="views.png" alt="by view">
<h2>Dice by make and model</h2><img src="makes.png" alt="by make">
<table><tr><th>make</th><th>model</th><th>images</th><th>dice mean</th><th>worst</th></tr>{_breakdown_rows(models)}</table>
<p>Every image with its make, model and year: <code>scores.csv</code> (<code>pandas.read_csv</code> it).</p>
<h2>Worst images</h2><table><tr><th>image</th><th>dice</th></tr>{worst_rows}</table>
{figures}
</body></html>
"""
    write_text(out / "report.html", page)
    for old in stale:  # after the page that named them is replaced: a Ctrl-C before leaves both intact
        old.unlink(missing_ok=True)
    return out / "report.html"


def report_folds(run_dir: Path, data: str | None, folds: list[int] | None = None) -> list[Path]:
    """report.html for each scored fold of a run (those with score.json and worst.npz), or the given ones."""
    ds = open_dataset(data)
    if folds is None:
        folds = sorted(int(p.parent.name[4:]) for p in run_dir.glob(f"fold*/{WORST_FILE}")
                       if p.parent.name[4:].isdigit() and (p.parent / "score.json").is_file())
    pages = [write_fold_report(run_dir / f"fold{k}", ds) for k in folds]
    for page in pages:
        say(f"  report: {page}")
    return pages
