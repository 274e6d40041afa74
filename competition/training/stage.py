"""One command a stage: `train` trains the whole fold its preset describes, the first-stage net and, where the run
refines with the refiner net (refine="net"), the refiner, each resumable.

- refiner_from "training" (the `cpu` preset): the fold's own refiner learns from its model's predictions on its own
  training photos, so it is trained right after the fold (refiner/fold<k>.keras; all.keras, what predict uses, is a
  copy of the first trained fold's).
- refiner_from "held-out": a fold's refiner learns from the other folds' held-out predictions, so the refiners are
  trained by the `train` that finishes the run's last fold (every fold's and all.keras); before that, train says so
  in one line. `train --fold all` (`make train-all`) ends with them.

A kill while a refiner trains loses only that refiner: the same command finds the fold trained (train.json), and
refiner.json keeps every refiner already up to date (refiner.py), so it trains the missing ones alone. `refiner`
stays for retraining them with other steps or sources."""
from __future__ import annotations

from pathlib import Path

from ..base.console import say
from ..config import TrainConfig
from ..runs.folder import fold_dir, trained_folds
from ..runs.resume import is_finished
from . import refiner as refiner_module, train as train_module


def train_fold(cfg: TrainConfig, data: str | None, run_dir: Path, fold: int, **train_options) -> dict:
    """Train (or resume) fold `fold`, then the refiner(s) it asks for; returns train.json's summary, with "refiners"
    (their paths) when any were trained or found up to date. train_options: those of train.train."""
    summary = train_module.train(cfg, data=data, run_dir=run_dir, fold=fold, **train_options)
    if summary and not summary.get("time_limited"):
        refiners = train_refiners_after(cfg, data, run_dir, fold)
        if refiners:
            summary = {**summary, "refiners": [str(p) for p in refiners]}
    return summary


def train_refiners_after(cfg: TrainConfig, data: str | None, run_dir: Path, fold: int) -> list[Path]:
    """The refiners a finished fold makes possible (module docstring); [] when the run does not use them."""
    if cfg.refine != "net":
        return []
    if not is_finished(fold_dir(run_dir, fold)):
        return []
    if cfg.refiner_from == "held-out":
        done = [k for k in trained_folds(run_dir) if (run_dir / f"fold{k}" / "oof.npz").is_file()]
        if len(done) < cfg.k:
            say(f"refiner: learns from the other folds' held-out photos, so the train of the last fold trains it "
                f"({len(done)} of {cfg.k} folds trained)")
            return []
    return refiner_module.train_refiners(run_dir, data=data)
