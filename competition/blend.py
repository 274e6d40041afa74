"""Cross-run blends: several runs' probabilities averaged at native 1918x1280, then thresholded once.

Each member is a run with its own input size, fit, folds and TTA: it predicts at its own resolution (its
fold ensemble with TTA, exactly as `predict` does for one run) and its probability is resized to native
and quantised to 8 bits, as for one run. The blend is the weighted mean of those native probabilities,
rounded to 8 bits and thresholded; a one-run blend is that run's own prediction, bit for bit. One pass over
the images, streaming: only the current batch's maps exist at any time.

`predict_blend` writes a submission exactly as `predict.predict` does (resumable chunks, shards, --mirror,
--time-limit); its progress record holds every member's run, weight, folds and model digests, so a rerun
with another blend refuses the partial file. `score_blend` scores the blend on a fold beside each member
(`cross_validate_blend`: on every fold they share, into a cv.md), and `--tune-threshold` saves the blend's
best threshold in <runs>/blends/<name>/blend.json, which `predict_blend` then uses (see `blend_threshold`).
"""
from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from . import rle
from .config import TrainConfig, check_threshold, run_path
from .data.folds import check_fold, read_folds
from .data.layout import car_of, open_dataset, view_of
from .errors import UserError
from .fileio import read_json, write_json
from .geometry import Geometry
from .images import decode_jpeg, reduction_for
from .predict import (Predictor, batched, load_models, model_digests, ordered_map, refine_meta, shard_path,
                      shard_slice, threshold_native, trained_folds, write_stream)
from .progress import bar, say
from .score import FoldScore, dice, fold_scores, summarise, threshold_curve, write_cv, write_fold_score
from .submission import SubmissionWriter
from .tta import plan

BLEND_FILE = "blend.json"
_FOLDS = re.compile(r"\d+(,\d+)*")


@dataclass(frozen=True)
class MemberSpec:
    """One `--run NAME[@FOLDS][:WEIGHT]` as typed: the run, its folds (None: --folds or every fold), its weight."""

    run: str
    folds: tuple[int, ...] | None = None
    weight: float = 1.0


def parse_member(text: str) -> MemberSpec:
    """'unet@0,1:2' -> MemberSpec('unet', (0, 1), 2.0); the '@FOLDS' and ':WEIGHT' parts are optional."""
    run, weight = text, 1.0
    if ":" in run:
        run, _, w = run.rpartition(":")
        try:
            weight = float(w)
        except ValueError:
            raise UserError(f"--run {text!r}: the weight after ':' must be a number, e.g. {run}:0.5") from None
        if not (math.isfinite(weight) and weight > 0):
            raise UserError(f"--run {text!r}: the weight must be a positive number")
    folds = None
    if "@" in run:
        run, _, f = run.rpartition("@")
        if not _FOLDS.fullmatch(f):
            raise UserError(f"--run {text!r}: expected NAME@FOLDS with comma-separated fold numbers, e.g. {run}@0,1")
        folds = tuple(int(x) for x in f.split(","))
    if not run:
        raise UserError(f"--run {text!r}: no run name")
    return MemberSpec(run, folds, weight)


def default_name(specs: list[MemberSpec]) -> str:
    """The blend's name from its runs and weights other than 1: 'unet+unet-1280', 'unetx2+unet-1280'."""
    return "+".join(Path(s.run).name + ("" if s.weight == 1.0 else f"x{s.weight:g}") for s in specs)


def blend_dir(specs: list[MemberSpec], name: str | None = None) -> Path:
    """<runs>/blends/<name>/: beside the first member's run folder (runs/blends/<name> for runs/NAME)."""
    return run_path(specs[0].run).parent / "blends" / (name or default_name(specs))


@dataclass
class Member:
    """A loaded member: its run's config, fold models and predictor, and its weight in the blend."""

    run_dir: Path
    label: str
    weight: float
    cfg: TrainConfig
    folds: list[int]
    predictor: Predictor

    @property
    def geometry(self) -> Geometry:
        return self.predictor.geometry


def open_members(specs: list[MemberSpec], folds: list[int] | None, tta: str,
                 refine: str | None = None, scored_fold: int | None = None) -> list[Member]:
    """Load every member's models: its own @FOLDS, else `folds` (--folds), else every trained fold.
    Each member refines its native map as its run's config says, or as `refine` (--refine) says for all; a
    member refined by its refiner net uses the one that never saw `scored_fold`'s photos (None: the test set's,
    all.keras)."""
    seen: dict[tuple, str] = {}
    for s in specs:
        key = (run_path(s.run).resolve(), tuple(s.folds or folds or ()))
        if key in seen:
            raise UserError(f"--run {s.run} is given twice ({seen[key]!r} and {s.run!r}): give a run once, with a "
                            f"weight, e.g. --run {s.run}:2")
        seen[key] = s.run
    names = [run_path(s.run).name for s in specs]
    members = []
    for s, name in zip(specs, names):
        run_dir = run_path(s.run)
        cfg, used, models = load_models(run_dir, list(s.folds) if s.folds else folds)
        label = name if names.count(name) == 1 else str(run_dir) + (f"@{','.join(map(str, used))}" if s.folds else "")
        refiner = None
        if (refine or cfg.refine) == "net":  # each run's own refiner, trained on its own held-out predictions
            from .refinenet import load_refiner
            refiner = load_refiner(run_dir, scored_fold)
        predictor = Predictor(models, Geometry(cfg.height, cfg.width, cfg.fit), tta, cfg.image_interp,
                              refine or cfg.refine, refiner)
        members.append(Member(run_dir, label, s.weight, cfg, used, predictor))
    return members


def blend_native(maps: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The weighted mean of 8-bit native probability maps, rounded to 8 bits (one map: itself)."""
    if len(maps) == 1:
        return maps[0]
    total = np.zeros(maps[0].shape, np.float32)
    for m, w in zip(maps, weights):
        total += np.float32(w) * m
    return cv2.convertScaleAbs(total, alpha=1.0 / sum(weights))  # rounds and saturates to uint8


def native_maps(members: list[Member], probs: list[np.ndarray], read: Callable[[], bytes],
                name: str) -> list[np.ndarray]:
    """Each member's model-resolution probability as its 8-bit native map (what that run alone thresholds);
    `read` gives the photo's JPEG bytes, read at most once, for the members that refine with it."""
    data: list[bytes] = []

    def once() -> bytes:
        if not data:
            data.append(read())
        return data[0]
    return [m.predictor.native(p, once, name) for m, p in zip(members, probs)]


def blended(members: list[Member], probs: list[np.ndarray], read: Callable[[], bytes], name: str) -> np.ndarray:
    """The blend's 8-bit native probability of one image from its members' model-resolution probabilities."""
    return blend_native(native_maps(members, probs, read, name), [m.weight for m in members])


def member_probabilities(members: list[Member], ids: list[str], read: Callable[[str], bytes],
                         where: Callable[[str], str], batch: int,
                         workers: int | None = None) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(id, [each member's model-resolution probability]) in order; each JPEG is read once and decoded once per
    distinct JPEG reduction, in threads ahead of the models (as `predict.probabilities` does for one run)."""
    workers = workers or min(8, os.cpu_count() or 2)
    reductions = [reduction_for(m.geometry.inner) for m in members]

    def load(image_id: str) -> tuple[str, list[np.ndarray]]:
        data, name = read(image_id), where(image_id)
        decoded: dict[int, np.ndarray] = {}
        inputs = []
        for m, r in zip(members, reductions):  # what Predictor.load does, sharing the decoding
            if r not in decoded:
                decoded[r] = decode_jpeg(data, name, r)
            inputs.append(m.geometry.to_model(decoded[r], m.predictor.interp))
        return image_id, inputs

    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        for chunk in batched(ordered_map(pool, load, ids, ahead=2 * batch + workers), batch):
            names = [c[0] for c in chunk]
            outputs = []
            for i, m in enumerate(members):
                probs = m.predictor(np.stack([c[1][i] for c in chunk]))
                bad = ~np.isfinite(probs).reshape(len(chunk), -1).all(axis=1)
                if bad.any():
                    raise UserError(f"run {m.label} produced NaN/inf probabilities for "
                                    f"{where(names[int(np.flatnonzero(bad)[0])])}; its model is broken "
                                    f"(diverged training?) - retrain it or leave it out of the blend")
                outputs.append(probs)
            for j, name in enumerate(names):
                yield name, [p[j] for p in outputs]


# --- the blend's threshold --------------------------------------------------------------------------
def _identity(members: list[Member]) -> list[dict]:
    """What a saved threshold was tuned for: each member's run name and weight, in order."""
    return [{"run": m.run_dir.name, "weight": m.weight} for m in members]  # as member_identity


def saved_threshold(folder: Path, identity: list[dict]) -> float | None:
    """The threshold `score --tune-threshold` saved in <folder>/blend.json (None: none saved); a one-line error
    when that file is another blend's (other runs or weights)."""
    path = folder / BLEND_FILE
    if not path.is_file():
        return None
    saved = read_json(path)
    if saved.get("members") != identity:
        was = ", ".join(f"{m['run']}:{m['weight']:g}" for m in saved.get("members") or [])
        now = ", ".join(f"{m['run']}:{m['weight']:g}" for m in identity)
        raise UserError(f"{path} holds the threshold of the blend {was}, not of {now}: name this blend otherwise "
                        f"(--blend NAME), pass --threshold T, or delete {path}")
    return check_threshold(float(saved["threshold"]))


def member_identity(specs: list[MemberSpec]) -> list[dict]:
    """`_identity` from the specs alone (no models loaded): what `kernel build` looks a saved threshold up by."""
    return [{"run": Path(s.run).name, "weight": s.weight} for s in specs]


def blend_threshold(members: list[Member], folder: Path, threshold: float | None) -> tuple[float, str]:
    """(threshold, where it came from): --threshold, else the one `score --tune-threshold` saved in
    <folder>/blend.json for these runs and weights, else the weighted mean of the members' own thresholds."""
    if threshold is not None:
        return check_threshold(threshold), "--threshold"
    saved = saved_threshold(folder, _identity(members))
    if saved is not None:
        return saved, f"tuned, from {folder / BLEND_FILE}"
    total = sum(m.weight for m in members)
    mean = round(sum(m.weight * m.cfg.threshold for m in members) / total, 4)
    return check_threshold(mean), "the weighted mean of the runs' own thresholds"


def describe(members: list[Member]) -> str:
    return ", ".join(f"{m.label} (folds {','.join(map(str, m.folds))}, {m.cfg.height}x{m.cfg.width} {m.cfg.fit}, "
                     f"weight {m.weight:g})" for m in members)


# --- predict ----------------------------------------------------------------------------------------
def predict_blend(specs: list[MemberSpec], data: str | None, out: Path, folds: list[int] | None = None,
                  tta: str = "hflip", threshold: float | None = None, batch: int | None = None,
                  shard: tuple[int, int] | None = None, limit: int | None = None, time_limit=None,
                  mirror: Path | None = None, name: str | None = None, refine: str | None = None) -> Path | None:
    """Predict the test set with a blend of runs into a (resumable) submission; as `predict.predict` for one run."""
    if not (out.name.endswith(".csv") or out.name.endswith(".csv.gz")):
        raise UserError(f"--out {out}: the submission must end in .csv or .csv.gz")
    plan(tta)
    ds = open_dataset(data)
    members = open_members(specs, folds, tta, refine)
    threshold, source = blend_threshold(members, blend_dir(specs, name), threshold)
    all_ids = ds.test_ids
    ids = shard_slice(all_ids[:limit] if limit else all_ids, shard)
    target = shard_path(out, shard)
    models = {}
    for m in members:  # run/fold<k> -> sha256: any member retrained refuses the partial file
        models.update({str(m.run_dir / k): v for k, v in model_digests(m.run_dir, m.folds).items()})
    meta = {"runs": [str(m.run_dir) for m in members], "weights": [m.weight for m in members],
            "folds": [m.folds for m in members], "tta": tta, "threshold": threshold, "shard": list(shard or []),
            "models": models, **refine_meta(*[m.predictor.refine for m in members])}
    refiners = [m.predictor.refiner for m in members]
    if any(refiners):  # as predict's record, member by member (None: not refined by a net): the refiners'
        # bytes, and what each learnt from and how (what merge compares: the paths differ between sessions)
        meta["refiner"] = [r and r.digest for r in refiners]
        meta["refiner_made"] = [r and r.made for r in refiners]
    writer = SubmissionWriter(target, ids, meta, mirror=mirror)
    say(f"blend of {describe(members)}; threshold {threshold} ({source})")
    if writer.done:
        say(f"resuming {target}: {writer.done} of {len(ids)} rows already written")
    batch = batch or max(1, min(m.cfg.batch for m in members))
    todo = writer.remaining

    def post(item: tuple[str, list[np.ndarray]]) -> tuple[str, str]:
        image_id, probs = item
        native = blended(members, probs, lambda: ds.read_test_image(image_id), ds.where_test(image_id))
        return image_id, rle.encode(threshold_native(native, threshold))

    stream = member_probabilities(members, todo, ds.read_test_image, ds.where_test, batch)
    return write_stream(writer, target, stream, post, batch, len(ids), all_ids, time_limit, shard, limit,
                        f"blend of {len(members)} runs, TTA {tta}, threshold {threshold}")


# --- score ------------------------------------------------------------------------------------------
def shared_held_out(members: list[Member], fold: int) -> list[str]:
    """The images every member held out on `fold`; the runs must share folds.csv (else a one-line error)."""
    from .train import select_ids  # as score_fold does: train (its data pipeline) imports TensorFlow
    first, first_folds, first_ids = None, None, None
    for m in members:
        path = m.run_dir / "folds.csv"
        if not path.is_file():
            raise UserError(f"{path}: missing; was {m.run_dir} made by `competition train`?")
        check_fold(fold, m.cfg.k, f"run {m.label}")
        folds = read_folds(path)
        ids = [i for i in select_ids(sorted(folds), m.cfg.max_images, m.cfg.seed) if folds[i] == fold]
        if first is None:
            first, first_folds, first_ids = m, folds, ids
        elif folds != first_folds:
            raise UserError(f"{path} differs from {first.run_dir / 'folds.csv'}: a blend is scored on images every "
                            f"run held out, so the runs must share their folds (same data, --k and fold seed)")
        elif ids != first_ids:
            raise UserError(f"runs {first.label} and {m.label} hold out different images of fold {fold} "
                            f"(--max-images or --seed differ): score them apart")
    return first_ids


def score_blend(specs: list[MemberSpec], fold: int, data: str | None, tta: str = "hflip", worst: int = 10,
                tune_threshold: bool = False, threshold: float | None = None, name: str | None = None,
                refine: str | None = None) -> dict:
    """Score the blend on fold `fold`'s held-out images beside each member (each at its own threshold);
    writes <runs>/blends/<name>/fold<k>/score.json, scores.csv, worst.npz; --tune-threshold saves blend.json."""
    with_folds = [s.run for s in specs if s.folds]
    if with_folds:
        raise UserError(f"--run {with_folds[0]}: score blends fold --fold {fold} of every run; leave out @FOLDS")
    ds = open_dataset(data)
    members = open_members(specs, [fold], tta, refine, scored_fold=fold)
    if tune_threshold and any(m.predictor.refine != m.cfg.refine for m in members):
        raise UserError(f"--tune-threshold with --refine {refine}: predict refines each run as its config.json says, "
                        f"so a threshold tuned otherwise would not fit it; tune without --refine")
    ids = shared_held_out(members, fold)
    folder = blend_dir(specs, name)
    threshold, source = blend_threshold(members, folder, threshold)
    weights = [m.weight for m in members]
    result = FoldScore()
    member_dice: list[list[float]] = [[] for _ in members]
    stream = member_probabilities(members, ids, ds.read_train_image, ds.where_train,
                                  max(1, min(m.cfg.batch for m in members)))
    for image_id, probs in bar(stream, total=len(ids), desc="scoring blend"):
        true = ds.read_mask(image_id)
        maps = native_maps(members, probs, lambda: ds.read_train_image(image_id), ds.where_train(image_id))
        for scores, m, native in zip(member_dice, members, maps):
            scores.append(dice(true, threshold_native(native, m.cfg.threshold)))
        native = blend_native(maps, weights)
        pred = threshold_native(native, threshold)
        d = dice(true, pred)
        result.keep_if_worst(image_id, d, pred, worst)
        result.rows.append({"img": f"{image_id}.jpg", "car": car_of(image_id), "view": view_of(image_id), "dice": d,
                            "true_pixels": int(true.sum()), "pred_pixels": int(pred.sum()),
                            **{f"dice_{m.label}": s[-1] for m, s in zip(members, member_dice)}})
        result.curves.append(threshold_curve(native, true))
    table, common = summarise(result, ds, worst)
    out = folder / f"fold{fold}"
    summary = {
        "fold": fold, "tta": tta, "threshold": threshold, "threshold_from": source, **common,
        "members": [{"run": m.label, "path": str(m.run_dir), "weight": m.weight, "threshold": m.cfg.threshold,
                     "refine": m.predictor.refine, "dice_mean": float(np.mean(s)), "dice_std": float(np.std(s))}
                    for m, s in zip(members, member_dice)],
    }
    write_fold_score(out, table, result, summary)
    if tune_threshold:
        write_json(folder / BLEND_FILE, {
            "members": _identity(members), "threshold": summary["best_threshold"],
            "tuned": {"fold": fold, "tta": tta, "images": summary["images"],
                      "dice": summary["dice_at_best_threshold"],
                      "models": {m.label: model_digests(m.run_dir, m.folds) for m in members}}})
    _print_blend(summary, folder, tune_threshold)
    return summary


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


def cross_validate_blend(specs: list[MemberSpec], data: str | None, tta: str = "hflip",
                         name: str | None = None, refine: str | None = None) -> str:
    """Score the blend on every fold all its runs trained, each run beside it, and write
    <runs>/blends/<name>/cv.md and scores.csv as `cv` does for one run (the blend's threshold as `score`
    picks it: its tuned one, else the weighted mean of the runs')."""
    if any(s.folds for s in specs):
        raise UserError("cv of a blend scores every fold its runs share; leave out @FOLDS")
    shared = sorted(set.intersection(*(set(trained_folds(run_path(s.run))) for s in specs)))
    if not shared:
        raise UserError(f"runs {', '.join(s.run for s in specs)} have no trained fold in common: nothing to score")
    summaries = [score_blend(specs, k, data, tta, name=name, refine=refine) for k in shared]
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
