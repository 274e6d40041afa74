"""Per-image score tables: one row per image joined with metadata.csv (make, model, year), breakdowns by view and
by make/model, the files scoring writes (scores.csv, score.json, worst.npz, cv.md) and reads back."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import NATIVE_SHAPE
from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import write_bytes, write_json, write_text
from ..data.layout import car_of, view_of
from ..runs.history import read_history
from ..runs.resume import retrain
from .metrics import THRESHOLDS, FoldScore

METADATA_COLUMNS = ["make", "model", "year"]
UNKNOWN = "unknown"  # make/model of a car that metadata.csv does not list (or with no metadata.csv)
WORST_FILE = "worst.npz"  # the worst images' predicted masks, bit-packed, for the report to draw


def car_metadata(ds) -> pd.DataFrame:
    """metadata.csv as a table indexed by car id (make, model, year); empty when the data root has none."""
    text = ds.csv_text("metadata.csv")
    if text is None:
        return pd.DataFrame(columns=METADATA_COLUMNS, index=pd.Index([], name="car"))
    table = pd.read_csv(io.StringIO(text), dtype={"id": str, "make": str, "model": str})
    missing = {"id", *METADATA_COLUMNS} - set(table.columns)
    if missing:
        raise UserError(f"{ds.root}/metadata.csv: no column {', '.join(sorted(missing))} "
                        f"(expected Kaggle's id,year,make,model,trim1,trim2)")
    table["year"] = pd.to_numeric(table["year"], errors="coerce").astype("Int64")
    return table.drop_duplicates("id").set_index("id").rename_axis("car")[METADATA_COLUMNS]


def image_table(rows: list[dict], metadata: pd.DataFrame) -> pd.DataFrame:
    """One row per image (img, car, view, dice, ...) joined with its car's make, model and year."""
    table = pd.DataFrame(rows)
    if "car" not in table:
        table["car"] = table["img"].map(lambda name: car_of(name.removesuffix(".jpg")))
    if "view" not in table:
        table["view"] = table["img"].map(lambda name: view_of(name.removesuffix(".jpg")))
    table = table.drop(columns=[c for c in METADATA_COLUMNS if c in table]).join(metadata, on="car")
    table[["make", "model"]] = table[["make", "model"]].fillna(UNKNOWN)
    return table


def breakdown(table: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Dice per group (images, mean, std over the group's images, min), worst mean first."""
    stats = table.groupby(by, sort=True)["dice"].agg(images="size", dice_mean="mean",
                                                     dice_std=lambda d: d.std(ddof=0), dice_min="min")
    return stats.sort_values("dice_mean", kind="stable")


def table_csv(table: pd.DataFrame) -> str:
    """CSV text of a per-image table (dice with 6 decimals); `pd.read_csv` loads it back."""
    return table.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def _packed_npz(masks: list[tuple[str, np.ndarray]]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"{rank:02d}_{image_id}": packed for rank, (image_id, packed) in
                                enumerate(masks, start=1)})
    return buf.getvalue()


def read_worst(fold_dir: Path) -> list[tuple[str, np.ndarray]]:
    """The worst images' predicted 0/1 masks that `score_fold` saved, worst first: [(image id, mask)]."""
    path = fold_dir / WORST_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; score the fold first (`python -m competition score`)")
    n = NATIVE_SHAPE[0] * NATIVE_SHAPE[1]
    with np.load(path) as z:
        keys = sorted(z.files, key=lambda k: int(k.split("_", 1)[0]))  # "<rank>_<image id>"
        return [(k.split("_", 1)[1], np.unpackbits(z[k])[:n].reshape(NATIVE_SHAPE)) for k in keys]


def by_view(rows: list[dict]) -> dict[int, float]:
    """Mean dice per view (1..16)."""
    return {int(v): float(x) for v, x in pd.DataFrame(rows).groupby("view")["dice"].mean().items()}


def group_means(stats: pd.DataFrame) -> dict[str, float]:
    return {" ".join(map(str, k)) if isinstance(k, tuple) else str(k): float(v) for k, v in stats["dice_mean"].items()}


def summarise(result: FoldScore, ds, worst: int) -> tuple[pd.DataFrame, dict]:
    """The per-image table (with make, model, year) and the summary fields of every fold score, one run's or a
    blend's: images, dice mean/std/min, the best threshold, dice by view and by make, the `worst` images."""
    table = image_table(result.rows, car_metadata(ds))
    d = table["dice"].to_numpy()
    best_t, best_dice = result.best_threshold()
    worst_rows = table.sort_values("dice", kind="stable").head(worst)
    return table, {
        "images": len(d), "dice_mean": float(d.mean()), "dice_std": float(d.std()), "dice_min": float(d.min()),
        "best_threshold": best_t, "dice_at_best_threshold": best_dice,
        "threshold_curve": {"thresholds": THRESHOLDS.tolist(), "dice_mean": np.mean(result.curves, axis=0).tolist()},
        "by_view": {f"{v:02d}": s for v, s in by_view(result.rows).items()},
        "by_make": group_means(breakdown(table, "make")),
        "worst": [{"img": r.img, "dice": float(r.dice)} for r in worst_rows.itertuples()],
    }


def write_fold_score(out: Path, table: pd.DataFrame, result: FoldScore, summary: dict) -> None:
    """scores.csv, worst.npz (the worst images' predicted masks, which `report` draws) and score.json in `out`."""
    write_text(out / "scores.csv", table_csv(table))
    write_bytes(out / WORST_FILE, _packed_npz(result.worst_masks()))
    write_json(out / "score.json", summary)


def _markdown(stats: pd.DataFrame, top: int) -> list[str]:
    """A breakdown as a markdown table (its `top` worst groups)."""
    keys = list(stats.index.names)
    lines = ["| " + " | ".join(keys) + " | images | dice mean | dice std | worst |",
             "|" + "---|" * len(keys) + "---:|---:|---:|---:|"]
    for key, r in stats.head(top).iterrows():
        cells = key if isinstance(key, tuple) else (key,)
        lines.append("| " + " | ".join(str(c) for c in cells) +
                     f" | {int(r.images)} | {r.dice_mean:.5f} | {r.dice_std:.5f} | {r.dice_min:.5f} |")
    return lines


def training_time(fold_dir: Path) -> str:
    """How long the fold trained: its epochs' seconds (history.csv, which resumes keep), e.g. '30 epochs, 70.8
    min'; '-' for a fold trained elsewhere without one."""
    path = fold_dir / "history.csv"
    if not path.is_file():
        return "-"
    rows = read_history(path, retrain(fold_dir) + " (or delete it: the fold's training time is then not shown)")
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    if not seconds:
        return "-"
    return f"{len(seconds)} epochs, {sum(seconds) / 60:.1f} min"


def fold_scores(folder: Path, folds: list[int]) -> pd.DataFrame:
    """Every held-out image's row of each fold's scores.csv under `folder`, with its fold."""
    return pd.concat([pd.read_csv(folder / f"fold{k}" / "scores.csv", dtype={"car": str, "make": str, "model": str})
                      .assign(fold=k) for k in folds], ignore_index=True)


def write_cv(folder: Path, lines: list[str], means: list[float], oof: pd.DataFrame) -> str:
    """cv.md (the per-fold table in `lines`, then the fold spread, out-of-fold dice and its breakdowns by view
    and by make/model) and scores.csv (every held-out image) in `folder`; returns the markdown."""
    std = float(np.std(means)) if len(means) > 1 else math.nan
    lines = [*lines, "", f"Folds: {np.mean(means):.5f} +- {std:.5f} (mean +- std of the fold means)",
             f"Out-of-fold over all {len(oof)} images: {oof['dice'].mean():.5f}", "",
             "## Out-of-fold dice by view (worst first)", "", *_markdown(breakdown(oof, "view"), 16), "",
             "## Out-of-fold dice by make and model (the 15 worst)", "",
             *_markdown(breakdown(oof, ["make", "model"]), 15), "",
             f"Every image: `{folder}/scores.csv` (`pandas.read_csv` it; columns {', '.join(oof.columns)}).", ""]
    text = "\n".join(lines)
    write_text(folder / "scores.csv", table_csv(oof))
    write_text(folder / "cv.md", text)
    say(text)
    return text
