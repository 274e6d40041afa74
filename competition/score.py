"""Local scoring: Kaggle's metric (mean per-image dice at native 1918x1280) on held-out folds.

The held-out images go through the submission's own path (decode, TTA, resize to native,
threshold); the article's batch-global soft dice at model resolution is reported beside it.
Per-image results are a pandas table joined with metadata.csv (make, model, year), so the dice
breaks down by view and by make/model. Scoring computes and saves; `report` draws from what it saved
(the per-image table, score.json and the worst images' predicted masks in worst.npz).
"""
from __future__ import annotations

import heapq
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import refine_words
from .data.folds import check_fold, read_folds
from .data.layout import car_of, open_dataset, view_of
from . import NATIVE_SHAPE
from .errors import UserError
from .fileio import write_bytes, write_json, write_text
from .geometry import Geometry
from .predict import Predictor, load_models, probabilities, threshold_native, trained_folds
from .progress import bar, say
from .submission import iter_rows

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)
METADATA_COLUMNS = ["make", "model", "year"]
UNKNOWN = "unknown"  # make/model of a car that metadata.csv does not list (or with no metadata.csv)
WORST_FILE = "worst.npz"  # the worst images' predicted masks, bit-packed, for the report to draw


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Kaggle's dice of two 0/1 masks: 2|A and B| / (|A| + |B|); both empty -> 1."""
    t, p = true.astype(bool, copy=False), pred.astype(bool, copy=False)
    total = int(np.count_nonzero(t)) + int(np.count_nonzero(p))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(t & p)) / total


def threshold_curve(native_u8: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Dice at each of THRESHOLDS from one image's 8-bit native probabilities (histograms, one pass)."""
    all_hist = np.bincount(native_u8.ravel(), minlength=256)
    true_hist = np.bincount(native_u8[true.astype(bool)], minlength=256)
    # pixels predicted at threshold t: value > t * 255  ->  suffix sums from floor(t * 255) + 1
    pred_counts = np.cumsum(all_hist[::-1])[::-1]
    tp_counts = np.cumsum(true_hist[::-1])[::-1]
    cut = np.minimum(np.floor(THRESHOLDS * 255).astype(int) + 1, 255)
    n_true = int(true_hist.sum())
    denom = n_true + pred_counts[cut]
    return np.where(denom > 0, 2.0 * tp_counts[cut] / np.maximum(denom, 1), 1.0)


@dataclass
class FoldScore:
    """Per-image results of one fold, and the predicted masks of its worst images."""

    rows: list[dict] = field(default_factory=list)
    curves: list[np.ndarray] = field(default_factory=list)
    inter: float = 0.0
    sums: float = 0.0
    worst: list[tuple[float, int, str, np.ndarray]] = field(default_factory=list)  # heap: (-dice, n, id, packed)

    @property
    def dice(self) -> np.ndarray:
        return np.array([r["dice"] for r in self.rows])

    def global_dice(self) -> float:
        """The article's soft dice with all pixels of all images flattened together (model resolution)."""
        return (2 * self.inter + 1e-5) / (self.sums + 1e-5)

    def best_threshold(self) -> tuple[float, float]:
        mean = np.mean(self.curves, axis=0)
        i = int(np.argmax(mean))
        return float(THRESHOLDS[i]), float(mean[i])

    def keep_if_worst(self, image_id: str, d: float, pred: np.ndarray, n: int) -> None:
        """Keep `pred` (bit-packed) while it is among the n lowest dice seen so far."""
        if n <= 0:
            return
        item = (-d, -len(self.rows), image_id, np.packbits(pred.astype(bool)))
        (heapq.heappush if len(self.worst) < n else heapq.heappushpop)(self.worst, item)

    def worst_masks(self) -> list[tuple[str, np.ndarray]]:
        """(image id, packed predicted mask) of the kept worst images, worst first (ties: earlier first)."""
        return [(image_id, packed) for _, _, image_id, packed in sorted(self.worst, reverse=True)]


def evaluate(predictor: Predictor, ds, ids: list[str], threshold: float, batch: int, worst: int = 0) -> FoldScore:
    """Predict `ids` like a submission and score each at native resolution; keep the `worst` lowest masks."""
    g = predictor.geometry
    out = FoldScore()
    stream = probabilities(predictor, ids, ds.read_train_image, ds.where_train, batch)
    for image_id, prob in bar(stream, total=len(ids), desc="scoring"):
        true = ds.read_mask(image_id)
        native = predictor.native(prob, lambda: ds.read_train_image(image_id), ds.where_train(image_id))  # once,
        # for the mask and the threshold curve alike
        pred = threshold_native(native, threshold)
        d = dice(true, pred)
        out.keep_if_worst(image_id, d, pred, worst)
        out.rows.append({"img": f"{image_id}.jpg", "car": car_of(image_id), "view": view_of(image_id), "dice": d,
                         "true_pixels": int(true.sum()), "pred_pixels": int(pred.sum())})
        out.curves.append(threshold_curve(native, true))
        t_model = g.to_model(true[..., None], "nearest")[..., 0].astype(np.float32)
        out.inter += float((prob * t_model).sum())
        out.sums += float(prob.sum() + t_model.sum())
    return out


# --- per-image tables -----------------------------------------------------------------------------
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


def _means(stats: pd.DataFrame) -> dict[str, float]:
    return {" ".join(map(str, k)) if isinstance(k, tuple) else str(k): float(v) for k, v in stats["dice_mean"].items()}


def score_fold(run_dir: Path, fold: int, data: str | None, tta: str = "hflip", worst: int = 10,
               tune_threshold: bool = False, threshold: float | None = None, refine: str | None = None) -> dict:
    """Score fold `fold`'s held-out images; writes score.json, scores.csv (per image, with make/model/year)
    and worst.npz (the `worst` lowest images' predicted masks, which `report` draws).
    refine: "none" | "guided" | "net", else the run's; "net" refines with R/refiner/fold<k>.keras, which never saw
    this fold's photos."""
    from .config import check_threshold, load_config, save_config
    from .train import select_ids
    ds = open_dataset(data)
    cfg, _, models = load_models(run_dir, [fold])
    folds_path = run_dir / "folds.csv"
    if not folds_path.is_file():
        raise UserError(f"{folds_path}: missing; was {run_dir} made by `competition train`?")
    folds = read_folds(folds_path)
    check_fold(fold, cfg.k)
    ids = [i for i in select_ids(sorted(folds), cfg.max_images, cfg.seed) if folds[i] == fold]
    threshold = cfg.threshold if threshold is None else check_threshold(threshold)
    refine = refine or cfg.refine
    refiner = None
    if refine == "net":
        from .refinenet import load_refiner
        refiner = load_refiner(run_dir, fold)
    predictor = Predictor(models, Geometry(cfg.height, cfg.width, cfg.fit), tta, cfg.image_interp, refine, refiner)
    result = evaluate(predictor, ds, ids, threshold, cfg.eval_batch, worst=worst)
    table, common = summarise(result, ds, worst)
    out = run_dir / f"fold{fold}"
    summary = {"fold": fold, "tta": tta, "threshold": threshold, "refine": predictor.refine, **common,
               "article_global_dice_model_res": result.global_dice(),
               "by_model": _means(breakdown(table, ["make", "model"]))}
    write_fold_score(out, table, result, summary)
    if tune_threshold:  # with the refinement it was tuned under, which predict then uses too
        for cfg_path in (out / "config.json", run_dir / "config.json"):
            save_config(cfg_path, load_config(cfg_path).replace(threshold=summary["best_threshold"],
                                                                refine=predictor.refine))
    _print_summary(summary, run_dir, tune_threshold)
    return summary


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
        "by_make": _means(breakdown(table, "make")),
        "worst": [{"img": r.img, "dice": float(r.dice)} for r in worst_rows.itertuples()],
    }


def write_fold_score(out: Path, table: pd.DataFrame, result: FoldScore, summary: dict) -> None:
    """scores.csv, worst.npz (the worst images' predicted masks, which `report` draws) and score.json in `out`."""
    write_text(out / "scores.csv", table_csv(table))
    write_bytes(out / WORST_FILE, _packed_npz(result.worst_masks()))
    write_json(out / "score.json", summary)


def _print_summary(s: dict, run_dir: Path, tuned: bool) -> None:
    refined = refine_words(s.get("refine", "none"))
    say(f"fold {s['fold']}: Kaggle dice (per image, native 1918x1280, TTA {s['tta']}{refined}, threshold "
        f"{s['threshold']}): {s['dice_mean']:.5f} +- {s['dice_std']:.5f} over {s['images']} held-out images")
    say(f"  beside it, the article's batch-global soft dice at model resolution: "
        f"{s['article_global_dice_model_res']:.5f}")
    say(f"  best threshold {s['best_threshold']:.2f} -> {s['dice_at_best_threshold']:.5f}"
        + (" (saved to the run's config; predict uses it)" if tuned else " (--tune-threshold saves it)"))
    say("  by view: " + "  ".join(f"{v}:{x:.4f}" for v, x in s["by_view"].items()))
    say("  by make, worst first: " + "  ".join(f"{m}:{x:.4f}" for m, x in list(s["by_make"].items())[:8]))
    say("  worst: " + ", ".join(f"{w['img']} {w['dice']:.4f}" for w in s["worst"]))
    say(f"  per image (with make, model, year): {run_dir}/fold{s['fold']}/scores.csv")


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


def pooled_threshold(summaries: list[dict]) -> tuple[float, float]:
    """The threshold whose mean dice over every image of the scored folds is highest (each fold's mean curve
    weighted by its images), and that dice: what a fold ensemble should use, rather than one fold's best."""
    mean = np.average([s["threshold_curve"]["dice_mean"] for s in summaries], axis=0,
                      weights=[s["images"] for s in summaries])
    i = int(np.argmax(mean))
    return float(THRESHOLDS[i]), float(mean[i])


def cross_validate(run_dir: Path, data: str | None, tta: str = "hflip", tune_threshold: bool = False,
                   refine: str | None = None) -> str:
    """Score every trained fold; write runs/<name>/cv.md (per fold, mean +- std, out-of-fold, by view and
    by make/model) and runs/<name>/scores.csv (every held-out image with its fold, make, model, year).
    tune_threshold: save the out-of-fold best threshold (`pooled_threshold`) in the run's config.json."""
    from .config import load_config, save_config
    folds = trained_folds(run_dir)
    if not folds:
        raise UserError(f"{run_dir}: no trained fold (no fold*/model.keras)")
    summaries = [score_fold(run_dir, k, data, tta, refine=refine) for k in folds]  # each at the run's threshold
    threshold, refined = summaries[0]["threshold"], summaries[0]["refine"]
    oof = fold_scores(run_dir, folds)
    means = [s["dice_mean"] for s in summaries]
    how = f"TTA {tta}{refine_words(refined)}"
    lines = [f"# Cross-validation of `{run_dir.name}` (Kaggle dice: per image, native 1918x1280, {how})", "",
             "| fold | images | dice mean | dice std | worst | article's global dice (model res) | training |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        trained = training_time(run_dir / f"fold{s['fold']}")
        lines.append(f"| {s['fold']} | {s['images']} | {s['dice_mean']:.5f} | {s['dice_std']:.5f} | "
                     f"{s['dice_min']:.5f} | {s['article_global_dice_model_res']:.5f} | {trained} |")
    best_t, best_dice = pooled_threshold(summaries)
    lines += ["", f"Threshold {threshold:g} (the run's). Out-of-fold best threshold: {best_t:.2f} -> {best_dice:.5f} "
              + ("(saved to the run's config.json: predict uses it)" if tune_threshold
                 else "(`cv --tune-threshold` saves it for predict)")]
    if tune_threshold:
        save_config(run_dir / "config.json", load_config(run_dir / "config.json").replace(threshold=best_t,
                                                                                          refine=refined))
    return write_cv(run_dir, lines, means, oof)


def training_time(fold_dir: Path) -> str:
    """How long the fold trained: its epochs' seconds (history.csv, which resumes keep), e.g. '30 epochs, 70.8
    min'; '-' for a fold trained elsewhere without one."""
    path = fold_dir / "history.csv"
    if not path.is_file():
        return "-"
    seconds = pd.read_csv(path).get("seconds")
    if seconds is None or seconds.empty:
        return "-"
    return f"{len(seconds)} epochs, {seconds.sum() / 60:.1f} min"


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


def score_submission(path: Path, data: str | None) -> dict:
    """Score a submission CSV whose ids are training images against their masks, streaming."""
    from . import rle
    ds = open_dataset(data)
    known = set(ds.train_ids)
    rows: list[dict] = []
    for lineno, img, mask_rle in bar(iter_rows(path), desc="scoring"):
        image_id = img[:-4] if img.endswith(".jpg") else img
        if image_id not in known:
            raise UserError(f"{path} line {lineno}: {img} is not a training image of {ds.root}; "
                            f"only submissions of training ids can be scored locally")
        try:
            pred = rle.decode(mask_rle)
        except ValueError as e:
            raise UserError(f"{path} line {lineno}: {img}: {e}") from e
        rows.append({"img": f"{image_id}.jpg", "dice": dice(ds.read_mask(image_id), pred)})
    if not rows:
        raise UserError(f"{path}: no rows to score")
    table = image_table(rows, car_metadata(ds))
    d = table["dice"].to_numpy()
    worst = table.sort_values("dice", kind="stable").head(5)
    say(f"{path}: Kaggle dice {d.mean():.5f} +- {d.std():.5f} over {len(d)} of {len(known)} training images")
    say("  by make, worst first: " + "  ".join(f"{m}:{x:.4f}" for m, x in
                                                 list(_means(breakdown(table, "make")).items())[:8]))
    say("  worst: " + ", ".join(f"{r.img} {r.dice:.4f}" for r in worst.itertuples()))
    return {"dice_mean": float(d.mean()), "images": len(d)}
