"""Local scoring: Kaggle's metric (mean per-image dice at native 1918x1280) on held-out folds.

The held-out images go through the submission's own path (decode, TTA, resize to native,
threshold); the article's batch-global soft dice at model resolution is reported beside it.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.folds import check_fold, read_folds
from .data.layout import car_of, open_dataset, view_of
from .errors import UserError
from .fileio import write_json, write_text
from .geometry import Geometry
from .predict import Predictor, load_models, probabilities, threshold_native, to_native_u8, trained_folds
from .progress import bar, say
from .submission import iter_rows

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)


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
    """Per-image results of one fold."""

    rows: list[dict] = field(default_factory=list)
    curves: list[np.ndarray] = field(default_factory=list)
    inter: float = 0.0
    sums: float = 0.0

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


def evaluate(predictor: Predictor, ds, ids: list[str], threshold: float, batch: int) -> FoldScore:
    """Predict `ids` like a submission and score each at native resolution."""
    g = predictor.geometry
    out = FoldScore()
    stream = probabilities(predictor, ids, ds.read_train_image, ds.where_train, batch)
    for image_id, prob in bar(stream, total=len(ids), desc="scoring"):
        true = ds.read_mask(image_id)
        native = to_native_u8(prob, g)  # resized once, for the mask and the threshold curve alike
        pred = threshold_native(native, threshold)
        d = dice(true, pred)
        out.rows.append({"img": f"{image_id}.jpg", "car": car_of(image_id), "view": view_of(image_id), "dice": d,
                         "true_pixels": int(true.sum()), "pred_pixels": int(pred.sum())})
        out.curves.append(threshold_curve(native, true))
        t_model = g.to_model(true[..., None], "nearest")[..., 0].astype(np.float32)
        out.inter += float((prob * t_model).sum())
        out.sums += float(prob.sum() + t_model.sum())
    return out


def by_view(rows: list[dict]) -> dict[int, float]:
    views: dict[int, list[float]] = {}
    for r in rows:
        views.setdefault(int(r["view"]), []).append(r["dice"])
    return {v: float(np.mean(d)) for v, d in sorted(views.items())}


def scores_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "dice": f"{r['dice']:.6f}"})
    return buf.getvalue()


def score_fold(run_dir: Path, fold: int, data: str | None, tta: str = "hflip", worst: int = 10,
               tune_threshold: bool = False, threshold: float | None = None) -> dict:
    """Score fold `fold`'s held-out images; writes score.json, scores.csv, worst overlays, report.html."""
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
    predictor = Predictor(models, Geometry(cfg.height, cfg.width, cfg.fit), tta, cfg.image_interp)
    result = evaluate(predictor, ds, ids, threshold, max(1, cfg.batch))
    d = result.dice
    best_t, best_dice = result.best_threshold()
    order = np.argsort(d, kind="stable")
    out = run_dir / f"fold{fold}"
    summary = {
        "fold": fold, "images": len(d), "tta": tta, "threshold": threshold,
        "dice_mean": float(d.mean()), "dice_std": float(d.std()), "dice_min": float(d.min()),
        "article_global_dice_model_res": result.global_dice(),
        "best_threshold": best_t, "dice_at_best_threshold": best_dice,
        "by_view": {f"{v:02d}": s for v, s in by_view(result.rows).items()},
        "worst": [{"img": result.rows[i]["img"], "dice": float(d[i])} for i in order[:worst]],
    }
    write_text(out / "scores.csv", scores_csv(result.rows))
    write_json(out / "score.json", summary)
    if tune_threshold:
        for cfg_path in (out / "config.json", run_dir / "config.json"):
            save_config(cfg_path, load_config(cfg_path).replace(threshold=best_t))
    from .report import write_fold_report
    worst_ids = [result.rows[i]["img"][:-4] for i in order[:worst]]
    write_fold_report(out, summary, result.rows, predictor, ds, worst_ids, threshold)
    _print_summary(summary, run_dir, tune_threshold)
    return summary


def _print_summary(s: dict, run_dir: Path, tuned: bool) -> None:
    say(f"fold {s['fold']}: Kaggle dice (per image, native 1918x1280, TTA {s['tta']}, threshold {s['threshold']}): "
        f"{s['dice_mean']:.5f} +- {s['dice_std']:.5f} over {s['images']} held-out images")
    say(f"  beside it, the article's batch-global soft dice at model resolution: "
        f"{s['article_global_dice_model_res']:.5f}")
    say(f"  best threshold {s['best_threshold']:.2f} -> {s['dice_at_best_threshold']:.5f}"
        + (" (saved to the run's config; predict uses it)" if tuned else " (--tune-threshold saves it)"))
    say("  by view: " + "  ".join(f"{v}:{x:.4f}" for v, x in s["by_view"].items()))
    say("  worst: " + ", ".join(f"{w['img']} {w['dice']:.4f}" for w in s["worst"]))
    say(f"  report: {run_dir}/fold{s['fold']}/report.html")


def cross_validate(run_dir: Path, data: str | None, tta: str = "hflip") -> str:
    """Score every trained fold and write runs/<name>/cv.md (per fold, mean +- std, out-of-fold)."""
    folds = trained_folds(run_dir)
    if not folds:
        raise UserError(f"{run_dir}: no trained fold (no fold*/model.keras)")
    summaries = [score_fold(run_dir, k, data, tta) for k in folds]
    all_dice = []
    for k in folds:
        with open(run_dir / f"fold{k}" / "scores.csv", newline="") as f:
            all_dice += [float(r["dice"]) for r in csv.DictReader(f)]
    means = [s["dice_mean"] for s in summaries]
    lines = [f"# Cross-validation of `{run_dir.name}` (Kaggle dice: per image, native 1918x1280, TTA {tta})", "",
             "| fold | images | dice mean | dice std | worst | article's global dice (model res) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        lines.append(f"| {s['fold']} | {s['images']} | {s['dice_mean']:.5f} | {s['dice_std']:.5f} | "
                     f"{s['dice_min']:.5f} | {s['article_global_dice_model_res']:.5f} |")
    std = float(np.std(means)) if len(means) > 1 else math.nan
    lines += ["", f"Folds: {np.mean(means):.5f} +- {std:.5f} (mean +- std of the fold means)",
              f"Out-of-fold over all {len(all_dice)} images: {np.mean(all_dice):.5f}", ""]
    text = "\n".join(lines)
    write_text(run_dir / "cv.md", text)
    say(text)
    return text


def score_submission(path: Path, data: str | None) -> dict:
    """Score a submission CSV whose ids are training images against their masks, streaming."""
    from . import rle
    ds = open_dataset(data)
    known = set(ds.train_ids)
    scores: list[tuple[str, float]] = []
    for lineno, img, mask_rle in bar(iter_rows(path), desc="scoring"):
        image_id = img[:-4] if img.endswith(".jpg") else img
        if image_id not in known:
            raise UserError(f"{path} line {lineno}: {img} is not a training image of {ds.root}; "
                            f"only submissions of training ids can be scored locally")
        try:
            pred = rle.decode(mask_rle)
        except ValueError as e:
            raise UserError(f"{path} line {lineno}: {img}: {e}") from e
        scores.append((img, dice(ds.read_mask(image_id), pred)))
    if not scores:
        raise UserError(f"{path}: no rows to score")
    d = np.array([s for _, s in scores])
    worst = sorted(scores, key=lambda s: s[1])[:5]
    say(f"{path}: Kaggle dice {d.mean():.5f} +- {d.std():.5f} over {len(d)} of {len(known)} training images")
    say("  worst: " + ", ".join(f"{i} {s:.4f}" for i, s in worst))
    return {"dice_mean": float(d.mean()), "images": len(d)}
