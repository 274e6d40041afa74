"""A run folder and everything read from it: runs/<name>/ holds config.json, folds.csv and fold<k>/ (model.keras,
train.json, oof.npz, ...), and refiner/ when the run refines with the refiner net.

Which folds are trained, the ids a fold trains on and holds out (one function each, used by training, scoring,
the refiner and the blends alike), the sha256 of the files a prediction or a refiner was made from, and the
out-of-fold probabilities. No TensorFlow here.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from ..base import records
from ..base.errors import UserError
from ..base.fileio import atomic_open, check_keras, damaged
from ..base.records import Shape
from ..config import TrainConfig, load_config, save_config
from ..data.folds import assign_folds, check_fold, num_folds, read_folds, write_folds
from ..data.layout import Dataset, car_of
from .resume import intact_backup, train_command

# Settings that may differ between folds of one run (everything else defines the model or the data).
COMPATIBLE = {"epochs", "patience", "mixed_precision", "threshold", "refine", "reduce_lr_patience", "lr", "batch",
              "encoder_weights"}  # the same ImageNet weights, downloaded here, from a dataset file on Kaggle


def run_path(run: str, runs: str | Path = "runs") -> Path:
    """A run's folder from `--run`: a bare NAME is runs/NAME; a path (with a '/') is itself.

    A bare name that is not under `runs` but is an existing folder here is that folder, as before."""
    if "/" in run or os.sep in run or run in (".", ".."):
        return Path(run)
    under = Path(runs) / run
    return Path(run) if not under.exists() and Path(run).is_dir() else under


def fold_dir(run_dir: Path, fold: int) -> Path:
    return run_dir / f"fold{fold}"


def trained_folds(run_dir: Path) -> list[int]:
    """Folds of a run that have a model.keras."""
    return sorted(int(p.parent.name[4:]) for p in run_dir.glob("fold*/model.keras") if p.parent.name[4:].isdigit())


def select_ids(ids: list[str], max_images: int, seed: int) -> list[str]:
    """All ids, or whole cars drawn at random (seeded) until at least `max_images` images."""
    if not max_images or max_images >= len(ids):
        return ids
    cars = sorted({car_of(i) for i in ids})
    chosen, count = set(), 0
    by_car = {c: [i for i in ids if car_of(i) == c] for c in cars}
    for n in np.random.default_rng(seed).permutation(len(cars)):
        if count >= max_images:
            break
        chosen.add(cars[n])
        count += len(by_car[cars[n]])
    return [i for i in ids if car_of(i) in chosen]


def split_ids(folds: dict[str, int], cfg: TrainConfig, fold: int) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids) of fold `fold` under `folds` (id -> fold), as the run chose its images."""
    ids = select_ids(sorted(folds), cfg.max_images, cfg.seed)
    return [i for i in ids if folds[i] != fold], [i for i in ids if folds[i] == fold]


def folds_rebuild(run_dir: Path) -> str:
    """How to mend a run's damaged folds.csv: made again only while no fold has trained on it."""
    if trained_folds(run_dir):
        return (f"restore it (a train kernel's output holds a copy): {run_dir}'s trained folds chose their photos by "
                f"it, and new folds would put photos they trained on among the held-out ones")
    return "delete it: the next train makes it again from the data"


def run_folds(run_dir: Path) -> dict[str, int]:
    """The run's folds.csv (id -> fold), checked, or a one-line UserError when it has none."""
    path = run_dir / "folds.csv"
    if not path.is_file():
        raise UserError(f"{path}: missing; was {run_dir} made by `competition train`? (it says which photos each "
                        f"fold trained on)")
    return read_folds(path, folds_rebuild(run_dir))


def held_out_ids(run_dir: Path, cfg: TrainConfig, fold: int, label: str | None = None) -> list[str]:
    """The images fold `fold` of the run held out (validated on), as train chose them."""
    check_fold(fold, cfg.k, label or "this run")
    return split_ids(run_folds(run_dir), cfg, fold)[1]


def training_ids(run_dir: Path, cfg: TrainConfig, fold: int) -> list[str]:
    """The images fold `fold`'s model trained on, as train chose them (the run's folds.csv and max_images)."""
    return split_ids(run_folds(run_dir), cfg, fold)[0]


def check_run_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Write runs/<name>/config.json, or check that this config is compatible with the one there."""
    if not (run_dir / "config.json").is_file():
        save_config(run_dir / "config.json", cfg)
        return
    check_compatible(run_dir, cfg)


def check_compatible(run_dir: Path, cfg: TrainConfig) -> None:
    """A one-line UserError when run_dir/config.json (if any) defines another model or data than `cfg`."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    old = load_config(path).to_json()
    new = cfg.to_json()
    diff = [k for k in new if k not in COMPATIBLE and old.get(k) != new[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{run_dir} was made with a different config ({k}: {old.get(k)!r} there, {new[k]!r} now); "
                        f"use another --run or delete {run_dir}")


def run_folds_or_new(run_dir: Path, ds: Dataset, cfg: TrainConfig) -> tuple[dict[str, int], bool]:
    """The run's folds.csv checked against the data and k, or new folds (grouped by car) not yet written: (folds,
    new)."""
    path = run_dir / "folds.csv"
    if path.is_file():
        folds = read_folds(path, folds_rebuild(run_dir))
        if num_folds(folds) != cfg.k:
            raise UserError(f"{path} has {num_folds(folds)} folds but the config says k={cfg.k}; "
                            + ("pass --k it was made with" if trained_folds(run_dir) else "delete it or pass --k"))
        missing = sorted(set(folds) - set(ds.train_ids))
        if missing:
            fix = ("pass the --data it was trained on, or train another --run" if trained_folds(run_dir) else
                   "delete it to make new folds from this data")
            raise UserError(f"{path} names {len(missing)} photos that {ds.root} lacks (e.g. {missing[0]}.jpg): {fix}")
        return folds, False
    return assign_folds(ds.train_ids, cfg.k, cfg.fold_seed), True


def load_or_make_folds(run_dir: Path, ds: Dataset, cfg: TrainConfig) -> dict[str, int]:
    """The run's folds.csv, made (grouped by car) if missing."""
    folds, new = run_folds_or_new(run_dir, ds, cfg)
    if new:
        write_folds(run_dir / "folds.csv", folds)
    return folds


# --- a fold's model and backup, checked when read back ---------------------------------------------------------
def fold_rebuild(run_dir: Path, fold: int) -> str:
    """How to make fold `fold`'s model again: resume from an intact backup, else retrain with --force."""
    backup = intact_backup(fold_dir(run_dir, fold))
    retrain = f"retrain the fold with `{train_command(run_dir, fold)} --force`"
    if backup is None:
        return retrain
    return f"rerun `{train_command(run_dir, fold)}`: it resumes from {backup} (or {retrain[0].lower() + retrain[1:]})"


def check_fold_model(run_dir: Path, fold: int) -> Path:
    """fold<k>/model.keras, checked to be a complete .keras zip (not loaded); one line saying how to rebuild it."""
    path = fold_dir(run_dir, fold) / "model.keras"
    check_keras(path, fold_rebuild(run_dir, fold))
    return path


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_digests(run_dir: Path, folds: list[int], name: str = "model.keras") -> dict[str, str]:
    """fold<k> -> sha256 of its `name` (model.keras: which models made a (partial) prediction's rows; oof.npz:
    which held-out predictions a refiner learnt from)."""
    return {f"fold{k}": file_sha256(run_dir / f"fold{k}" / name) for k in folds}


def save_oof(path: Path, ids: list[str], probs: np.ndarray) -> None:
    """Held-out probabilities at model resolution, quantised to uint8 (0..255)."""
    q = np.clip(np.rint(probs[..., 0] * 255), 0, 255).astype(np.uint8)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, ids=np.array(ids), probs=q)


def load_oof(path: Path, ids_only: bool = False) -> tuple[list[str], np.ndarray | None]:
    """A fold's held-out probabilities (fold<k>/oof.npz; `ids_only`: its ids alone, without reading them); a
    damaged file is one line saying how to make it again."""
    try:
        with np.load(path) as z:
            ids = [str(i) for i in z["ids"]]
            return ids, None if ids_only else z["probs"].astype(np.float32) / 255.0
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        run_dir, fold = path.parent.parent, path.parent.name[4:]
        raise damaged(path, "not a complete oof.npz", f"retrain the fold with `{train_command(run_dir, fold)} "
                                                      f"--force`") from e


# --- the refiner net's files: R/refiner/ ----------------------------------------------------------------------
REFINER_DIR = "refiner"
REFINER_RECORD = "refiner.json"  # what each refiner learnt from (the sha256 of its sources) and how
# refiner_from -> the file of fold<k> whose digest a refiner records: retraining the fold makes it stale
REFINER_FROM_FILE = {"held-out": "oof.npz", "training": "model.keras"}


def refiner_path(run_dir: Path, fold: int | None) -> Path:
    """R/refiner/fold<k>.keras (trained without fold k's photos), or R/refiner/all.keras (fold None)."""
    return run_dir / REFINER_DIR / ("all.keras" if fold is None else f"fold{fold}.keras")


def refiner_sources(run_dir: Path, folds: list[int], refiner_from: str = "held-out") -> dict[str, str]:
    """fold<k> -> sha256 of the oof.npz (or model.keras) a refiner learns from: a retrained fold makes it stale."""
    return model_digests(run_dir, folds, REFINER_FROM_FILE[refiner_from])


# refiner.json's key for a refiner's refiner_from: the record's own spelling, kept because records on disk and the
# partial predictions made from them (their refiner_made) carry it
RECORD_REFINER_FROM = "learns_from"


REFINER_STOPPED_AT = "stopped_at"  # the step a `train --budget` deadline stopped a refiner at
REFINER_ENTRY = Shape("a refiner's record", required={"sources": "dict", "steps": "count", "photos": "count",
                                                        "recipe": "dict"},
                      optional={RECORD_REFINER_FROM: "str", "policy": "str", REFINER_STOPPED_AT: "count"})
REFINER_SHAPE = Shape("the refiners' record", check=lambda r: next(
    (f"{name}: {REFINER_ENTRY.problem(entry)}" for name, entry in r.items() if REFINER_ENTRY.problem(entry)), None))


def read_refiner_record(run_dir: Path, rebuild: str) -> dict[str, dict]:
    """R/refiner/refiner.json, checked: each refiner's file name -> what it learnt from and how ({} when there is
    none); a damaged or hand-edited one is one line with `rebuild`."""
    path = run_dir / REFINER_DIR / REFINER_RECORD
    return records.load(path, REFINER_SHAPE, rebuild) if path.is_file() else {}
