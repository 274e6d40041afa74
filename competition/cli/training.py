"""Subcommands of the training stage: train (its config flags generated in train_flags.py) and refiner."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import (add_data, add_fold, add_mirror, add_preset, add_run, add_time_limit, fold_number,
                      path_or_none)
from .parser import AddCommand
from .train_flags import add_train_flags, train_config


# --- train ----------------------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> None:
    from ..config import run_path
    from ..timelimit import deadline
    from ..train import train
    limit = deadline(a.time_limit)
    cfg = train_config(a)
    run_dir = run_path(a.run or cfg.preset, a.runs)
    folds = range(cfg.k) if a.fold == "all" else [fold_number(a.fold, cfg.k)]
    for fold in folds:
        summary = train(cfg, data=a.data, run_dir=run_dir, fold=fold,
                        cache_dir=None if a.cache in ("none", "memory") else Path(a.cache),
                        hold=a.cache == "memory", force=a.force, time_limit=limit, mirror=path_or_none(a.mirror))
        if summary.get("time_limited"):
            break


def add_train(add: AddCommand) -> None:
    s = add("train", cmd_train, "train one fold (or all) of a U-Net; rerun to resume",
            "--preset demo --run demo --fold 0 --data data/synthetic")
    add_fold(s, "fold number, or 'all'", default="0")
    add_preset(s, default=None)
    add_data(s)
    add_run(s, "outputs in its fold<k>/ (default: the preset's name)", name_alias=True)
    s.add_argument("--runs", default="runs", metavar="DIR", help="the folder a bare --run NAME is in")
    s.add_argument("--cache", default="cache",
                   help="folder for the resized-image cache, 'none' to decode every epoch (no disk), or 'memory' "
                        "to decode every epoch from the files' bytes held in RAM")
    s.add_argument("--force", action="store_true", help="retrain a fold that is already complete")
    add_time_limit(s, "epoch")
    add_mirror(s, "the best model, history, curves and resumable backup", "after every epoch")
    add_train_flags(s)


# --- refiner --------------------------------------------------------------------------------------
def cmd_refiner(a: argparse.Namespace) -> None:
    from ..config import run_path
    from ..refiner import train_refiners
    train_refiners(run_path(a.run), data=a.data, steps=a.steps, test_only=a.test_only, learns_from=a.learn_from)


def add_refiner(add: AddCommand) -> None:
    from ..config import REFINER_SOURCES
    s = add("refiner", cmd_refiner, "train the second-stage refiner net on a run's out-of-fold predictions "
                                    "(then score, cv, predict with --refine net)", "--run cpu --data data/carvana")
    add_run(s, required=True)
    add_data(s)
    s.add_argument("--steps", type=int, default=None,
                   help="training batches per refiner (default: the run's config's refiner_steps, 1000 unless "
                        "its preset says otherwise; train's --refiner-steps)")
    s.add_argument("--test-only", action="store_true",
                   help="train all.keras alone (what predict uses), from every trained fold's held-out photos "
                        "(or, learning from training photos, the first fold's); one trained fold is enough (a "
                        "predict kernel does this)")
    s.add_argument("--learn-from", choices=list(REFINER_SOURCES), default=None,
                   help="held-out: each fold's refiner learns from the other folds' held-out predictions; "
                        "training: from its own model's predictions on its own training photos, so one trained fold "
                        "is enough (for short runs, whose training dice is near their validation dice) (default: the "
                        "run's config's refiner_from, held-out unless its preset says otherwise)")
