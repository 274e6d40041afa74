"""Local scoring: Kaggle's metric (mean per-image dice at native 1918x1280) on held-out folds, for one run or a
blend of runs (each run beside the blend).

The held-out images go through the submission's own path (inference/: decode, TTA, to native, threshold); for
one run the article's batch-global soft dice at model resolution is reported beside it. Per-image results are a
pandas table joined with metadata.csv (tables.py), so the dice breaks down by view and by make/model. Scoring
computes and saves; `report` draws from what it saved (the per-image table, score.json and worst.npz).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import rle
from ..base.console import bar, say
from ..base.errors import UserError
from ..base.fileio import write_json
from ..base.submission_csv import PIXELS, iter_rows
from ..config import check_threshold, load_config, refine_words, save_config
from ..data.layout import car_of, open_dataset, view_of
from ..inference.ensemble import (BLEND_FILE, Member, MemberSpec, as_specs, blend_dir, blend_native, blend_threshold,
                                  default_batch, identity, native_maps, open_members, probabilities)
from ..inference.upsample import threshold_native
from ..runs.folder import check_fold_model, held_out_ids, model_digests, run_folds, trained_folds
from .metrics import FoldScore, dice, pooled_threshold, threshold_curve
from .tables import (breakdown, car_metadata, fold_scores, group_means, image_table, summarise, training_time,
                     write_cv, write_fold_score)


def evaluate(members: list[Member], ds, ids: list[str], threshold: float, batch: int, worst: int = 0) -> FoldScore:
    """Predict `ids` like a submission and score each at native resolution; keep the `worst` lowest masks. A
    blend's rows also hold each run's own dice (at its own threshold); one run's, the article's global dice."""
    one = len(members) == 1
    out = FoldScore()
    stream = probabilities(members, ids, ds.read_train_image, ds.where_train, batch)
    for image_id, probs in bar(stream, total=len(ids), desc="scoring" if one else "scoring blend"):
        true = ds.read_mask(image_id)
        maps = native_maps(members, probs, lambda: ds.read_train_image(image_id), ds.where_train(image_id))
        native = blend_native(maps, [m.weight for m in members])  # once, for the mask and the threshold curve
        pred = threshold_native(native, threshold)
        d = dice(true, pred)
        out.keep_if_worst(image_id, d, pred, worst)
        row = {"img": f"{image_id}.jpg", "car": car_of(image_id), "view": view_of(image_id), "dice": d,
               "true_pixels": int(true.sum()), "pred_pixels": int(pred.sum())}
        if not one:
            row.update({f"dice_{m.label}": dice(true, threshold_native(n, m.cfg.threshold))
                        for m, n in zip(members, maps)})
        out.rows.append(row)
        out.curves.append(threshold_curve(native, true))
        if one:
            t_model = members[0].geometry.to_model(true[..., None], "nearest")[..., 0].astype(np.float32)
            out.inter += float((probs[0] * t_model).sum())
            out.sums += float(probs[0].sum() + t_model.sum())
    return out


def in_data(ds, ids: list[str], run_dir: Path) -> list[str]:
    """`ids` when the data has every one of them (checked before any is scored), else one line."""
    missing = sorted(set(ids) - set(ds.train_ids))
    if missing:
        raise UserError(f"{run_dir / 'folds.csv'} holds out {len(missing)} photos that {ds.root} lacks (e.g. "
                        f"{missing[0]}.jpg): pass the --data the run was trained on")
    return ids


def shared_held_out(members: list[Member], fold: int) -> list[str]:
    """The images every member held out on `fold`; the runs must share folds.csv (else a one-line error)."""
    first, first_folds, first_ids = None, None, None
    for m in members:
        ids = held_out_ids(m.run_dir, m.cfg, fold, f"run {m.label}" if len(members) > 1 else "this run")
        folds = run_folds(m.run_dir)
        if first is None:
            first, first_folds, first_ids = m, folds, ids
        elif folds != first_folds:
            raise UserError(f"{m.run_dir / 'folds.csv'} differs from {first.run_dir / 'folds.csv'}: a blend is scored "
                            f"on images every run held out, so the runs must share their folds (same data, --k and "
                            f"fold seed)")
        elif ids != first_ids:
            raise UserError(f"runs {first.label} and {m.label} hold out different images of fold {fold} "
                            f"(--max-images or --seed differ): score them apart")
    return first_ids


def score_fold(runs: Path | str | list[MemberSpec], fold: int, data: str | None, tta: str = "hflip",
               worst: int = 10, tune_threshold: bool = False, threshold: float | None = None,
               refine: str | None = None, name: str | None = None) -> dict:
    """Score fold `fold`'s held-out images with one run (a folder) or a blend (several MemberSpecs); writes
    score.json, scores.csv (per image, with make/model/year) and worst.npz (the `worst` lowest images' predicted
    masks, which `report` draws) into the run's fold<k>/, or into <runs>/blends/<name>/fold<k>/ for a blend.
    refine: "none" | "guided" | "net", else each run's; "net" refines with R/refiner/fold<k>.keras, which never saw
    this fold's photos. tune_threshold: save the best threshold where predict finds it (config.json, blend.json)."""
    specs = as_specs(runs)
    if len(specs) > 1 and any(s.folds for s in specs):
        raise UserError(f"--run {next(s.run for s in specs if s.folds)}: score blends fold --fold {fold} of every "
                        f"run; leave out @FOLDS")
    ds = open_dataset(data)
    members = open_members(specs, [fold], tta, refine, scored_fold=fold)
    if len(members) == 1:
        return _score_run(members[0], ds, fold, tta, worst, tune_threshold, threshold)
    return _score_blend(members, specs, ds, fold, tta, worst, tune_threshold, threshold, name, refine)


def _score_run(m: Member, ds, fold: int, tta: str, worst: int, tune_threshold: bool,
               threshold: float | None) -> dict:
    ids = in_data(ds, shared_held_out([m], fold), m.run_dir)
    threshold = m.cfg.threshold if threshold is None else check_threshold(threshold)
    result = evaluate([m], ds, ids, threshold, default_batch([m]), worst=worst)
    table, common = summarise(result, ds, worst)
    out = m.run_dir / f"fold{fold}"
    summary = {"fold": fold, "tta": tta, "threshold": threshold, "refine": m.predictor.refine, **common,
               "article_global_dice_model_res": result.global_dice(),
               "by_model": group_means(breakdown(table, ["make", "model"]))}
    write_fold_score(out, table, result, summary)
    if tune_threshold:  # with the refinement it was tuned under, which predict then uses too
        for cfg_path in (out / "config.json", m.run_dir / "config.json"):
            save_config(cfg_path, load_config(cfg_path).replace(threshold=summary["best_threshold"],
                                                                refine=m.predictor.refine))
    _print_summary(summary, m.run_dir, tune_threshold)
    return summary


def _score_blend(members: list[Member], specs: list[MemberSpec], ds, fold: int, tta: str, worst: int,
                 tune_threshold: bool, threshold: float | None, name: str | None, refine: str | None) -> dict:
    if tune_threshold and any(m.predictor.refine != m.cfg.refine for m in members):
        raise UserError(f"--tune-threshold with --refine {refine}: predict refines each run as its config.json says, "
                        f"so a threshold tuned otherwise would not fit it; tune without --refine")
    ids = in_data(ds, shared_held_out(members, fold), members[0].run_dir)
    folder = blend_dir(specs, name)
    threshold, source = blend_threshold(members, folder, threshold)
    result = evaluate(members, ds, ids, threshold, default_batch(members), worst=worst)
    table, common = summarise(result, ds, worst)
    member_dice = [[r[f"dice_{m.label}"] for r in result.rows] for m in members]
    summary = {
        "fold": fold, "tta": tta, "threshold": threshold, "threshold_from": source, **common,
        "members": [{"run": m.label, "path": str(m.run_dir), "weight": m.weight, "threshold": m.cfg.threshold,
                     "refine": m.predictor.refine, "dice_mean": float(np.mean(s)), "dice_std": float(np.std(s))}
                    for m, s in zip(members, member_dice)],
    }
    write_fold_score(folder / f"fold{fold}", table, result, summary)
    if tune_threshold:
        write_json(folder / BLEND_FILE, {
            "members": identity(members), "threshold": summary["best_threshold"],
            "tuned": {"fold": fold, "tta": tta, "images": summary["images"],
                      "dice": summary["dice_at_best_threshold"],
                      "models": {m.label: model_digests(m.run_dir, m.folds) for m in members}}})
    _print_blend(summary, folder, tune_threshold)
    return summary


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


def _print_blend(s: dict, folder: Path, tuned: bool) -> None:
    width = max(len("blend"), *(len(m["run"]) for m in s["members"]))
    say(f"blend {folder.name}, fold {s['fold']}: Kaggle dice (per image, native 1918x1280, TTA {s['tta']}) over "
        f"{s['images']} held-out images")
    for m in s["members"]:
        say(f"  {m['run']:<{width}}  {m['dice_mean']:.5f} +- {m['dice_std']:.5f}  (alone, its threshold "
            f"{m['threshold']}; weight {m['weight']:g})")
    say(f"  {'blend':<{width}}  {s['dice_mean']:.5f} +- {s['dice_std']:.5f}  (threshold {s['threshold']}: "
        f"{s['threshold_from']})")
    say(f"  best blend threshold {s['best_threshold']:.2f} -> {s['dice_at_best_threshold']:.5f}"
        + (f" (saved to {folder / BLEND_FILE}; predict with the same runs and weights uses it)" if tuned
           else " (--tune-threshold saves it for this blend)"))
    say("  worst: " + ", ".join(f"{w['img']} {w['dice']:.4f}" for w in s["worst"]))
    say(f"  per image (blend and each run): {folder}/fold{s['fold']}/scores.csv")


def cross_validate(runs: Path | str | list[MemberSpec], data: str | None, tta: str = "hflip",
                   tune_threshold: bool = False, refine: str | None = None, name: str | None = None) -> str:
    """Score every fold the runs trained (all of them, for a blend) and write cv.md and scores.csv (every held-out
    image) in the run's folder, or the blend's beside each run; returns the markdown."""
    specs = as_specs(runs)
    for s in specs:  # a run that does not exist says so, as predict and score do
        load_config(s.path / "config.json")
    if len(specs) == 1:
        return _cross_validate_run(specs[0].path, data, tta, tune_threshold, refine)
    if tune_threshold:
        raise UserError("cv --tune-threshold tunes one run; tune a blend with score --run A --run B --fold K "
                        "--tune-threshold")
    return _cross_validate_blend(specs, data, tta, name, refine)


def _cross_validate_run(run_dir: Path, data: str | None, tta: str, tune_threshold: bool, refine: str | None) -> str:
    """Score every trained fold; write runs/<name>/cv.md (per fold, mean +- std, out-of-fold, by view and
    by make/model) and runs/<name>/scores.csv (every held-out image with its fold, make, model, year).
    tune_threshold: save the out-of-fold best threshold (`pooled_threshold`) in the run's config.json."""
    folds = trained_folds(run_dir)
    if not folds:
        raise UserError(f"{run_dir}: no trained fold (no fold*/model.keras)")
    trained = {k: training_time(run_dir / f"fold{k}") for k in folds}  # each history.csv read before any write
    for k in folds:
        check_fold_model(run_dir, k)  # and each model checked: a damaged one stops cv before fold 0's files change
    summaries = [score_fold(run_dir, k, data, tta, refine=refine) for k in folds]  # each at the run's threshold
    threshold, refined = summaries[0]["threshold"], summaries[0]["refine"]
    oof = fold_scores(run_dir, folds)
    means = [s["dice_mean"] for s in summaries]
    how = f"TTA {tta}{refine_words(refined)}"
    lines = [f"# Cross-validation of `{run_dir.name}` (Kaggle dice: per image, native 1918x1280, {how})", "",
             "| fold | images | dice mean | dice std | worst | article's global dice (model res) | training |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        lines.append(f"| {s['fold']} | {s['images']} | {s['dice_mean']:.5f} | {s['dice_std']:.5f} | "
                     f"{s['dice_min']:.5f} | {s['article_global_dice_model_res']:.5f} | {trained[s['fold']]} |")
    best_t, best_dice = pooled_threshold(summaries)
    lines += ["", f"Threshold {threshold:g} (the run's). Out-of-fold best threshold: {best_t:.2f} -> {best_dice:.5f} "
              + ("(saved to the run's config.json: predict uses it)" if tune_threshold
                 else "(`cv --tune-threshold` saves it for predict)")]
    if tune_threshold:
        save_config(run_dir / "config.json", load_config(run_dir / "config.json").replace(threshold=best_t,
                                                                                          refine=refined))
    return write_cv(run_dir, lines, means, oof)


def _cross_validate_blend(specs: list[MemberSpec], data: str | None, tta: str, name: str | None,
                          refine: str | None) -> str:
    """Score the blend on every fold all its runs trained, each run beside it, and write
    <runs>/blends/<name>/cv.md and scores.csv as `cv` does for one run (the blend's threshold as `score`
    picks it: its tuned one, else the weighted mean of the runs')."""
    if any(s.folds for s in specs):
        raise UserError("cv of a blend scores every fold its runs share; leave out @FOLDS")
    shared = sorted(set.intersection(*(set(trained_folds(s.path)) for s in specs)))
    if not shared:
        raise UserError(f"runs {', '.join(s.run for s in specs)} have no trained fold in common: nothing to score")
    summaries = [score_fold(specs, k, data, tta, refine=refine, name=name) for k in shared]
    folder = blend_dir(specs, name)
    labels = [m["run"] for m in summaries[0]["members"]]
    lines = [f"# Cross-validation of the blend `{folder.name}` (Kaggle dice: per image, native 1918x1280, TTA {tta})",
             "", "Each run alone at its own threshold, beside the blend (weights "
             + ", ".join(f"{m['run']} {m['weight']:g}" for m in summaries[0]["members"]) + ").", "",
             "| fold | images | " + " | ".join(f"`{x}` alone" for x in labels) + " | blend | blend std | blend worst "
             "| blend threshold |", "|---:|---:|" + "---:|" * (len(labels) + 4)]
    for s in summaries:
        lines.append(f"| {s['fold']} | {s['images']} | " + " | ".join(f"{m['dice_mean']:.5f}" for m in s["members"])
                     + f" | **{s['dice_mean']:.5f}** | {s['dice_std']:.5f} | {s['dice_min']:.5f} | {s['threshold']:g} |")
    oof = fold_scores(folder, shared)
    lines += ["", "Out-of-fold over all images: " + ", ".join(f"`{x}` alone {oof[f'dice_{x}'].mean():.5f}"
                                                              for x in labels)
              + f", blend {oof['dice'].mean():.5f}."]
    return write_cv(folder, lines, [s["dice_mean"] for s in summaries], oof)


def score_submission(path: Path, data: str | None) -> dict:
    """Score a submission CSV whose ids are training images against their masks. The whole file is checked first
    (its header, each id a training image once, each RLE well formed), so a truncated or foreign file is one line
    before any score."""
    ds = open_dataset(data)
    known = set(ds.train_ids)
    seen: set[str] = set()
    for lineno, img, mask_rle in iter_rows(path):
        image_id = img[:-4] if img.endswith(".jpg") else img
        if image_id not in known:
            raise UserError(f"{path} line {lineno}: {img} is not a training image of {ds.root}; "
                            f"only submissions of training ids can be scored locally")
        if image_id in seen:
            raise UserError(f"{path} line {lineno}: {img} a second time")
        seen.add(image_id)
        try:
            rle.parse(mask_rle, PIXELS)
        except ValueError as e:
            raise UserError(f"{path} line {lineno}: {img}: {e}") from e
    rows: list[dict] = []
    for lineno, img, mask_rle in bar(iter_rows(path), desc="scoring"):
        image_id = img[:-4] if img.endswith(".jpg") else img
        rows.append({"img": f"{image_id}.jpg", "dice": dice(ds.read_mask(image_id), rle.decode(mask_rle))})
    if not rows:
        raise UserError(f"{path}: no rows to score")
    table = image_table(rows, car_metadata(ds))
    d = table["dice"].to_numpy()
    worst = table.sort_values("dice", kind="stable").head(5)
    say(f"{path}: Kaggle dice {d.mean():.5f} +- {d.std():.5f} over {len(d)} of {len(known)} training images")
    say("  by make, worst first: " + "  ".join(f"{m}:{x:.4f}" for m, x in
                                                 list(group_means(breakdown(table, "make")).items())[:8]))
    say("  worst: " + ", ".join(f"{r.img} {r.dice:.4f}" for r in worst.itertuples()))
    return {"dice_mean": float(d.mean()), "images": len(d)}
