"""Subcommands of the training stage: train (its config flags generated in train_flags.py) and refiner."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .options import add_data, add_fold, add_mirror, add_preset, add_run, add_time_limit, fold_number, path_or_none
from .parser import AddCommand, Whole, duration
from .train_flags import add_train_flags, train_config


# --- train ----------------------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> None:
    from ..base.errors import UserError
    from ..base.timelimit import deadline, parse_duration
    from ..runs.folder import run_path
    from ..training.stage import train_fold
    started = getattr(a, "started", time.monotonic())  # when the command began (cli.main)
    limit = deadline(a.time_limit)
    budget = None if a.budget is None else parse_duration(a.budget, "--budget")
    if budget is not None and a.epochs is not None:
        raise UserError(f"--budget {a.budget} and --epochs {a.epochs}: the budget chooses the epochs (and the "
                        f"refiner's steps); give one of them")
    if a.budget_cap and budget is None:
        raise UserError("--budget-cap: give the --budget it caps (e.g. --budget 11h --budget-cap)")
    cfg = train_config(a)
    if not a.anyway and budget is None:
        check_fits(cfg, a.data)
    run_dir = run_path(a.run or cfg.preset, a.runs)
    folds = list(range(cfg.k)) if a.fold == "all" else [fold_number(a.fold, cfg.k)]
    for i, fold in enumerate(folds):  # a budget shared among the folds left, each counted from its own start
        fold_started = started if i == 0 else time.monotonic()
        share = None if budget is None else (budget - (fold_started - started)) / (len(folds) - i)
        summary = train_fold(cfg, data=a.data, run_dir=run_dir, fold=fold,
                             cache_dir=None if a.cache in ("none", "memory") else Path(a.cache),
                             hold=a.cache == "memory", force=a.force, time_limit=limit, mirror=path_or_none(a.mirror),
                             budget=share, started=fold_started, cap=a.budget_cap)
        if summary.get("time_limited"):
            break


def add_train(add: AddCommand) -> None:
    from ..config import OFFERED
    s = add("train", cmd_train, "train one fold (or all) as the preset describes: the U-Net, then the refiner net "
                                "where the preset refines with it; rerun to resume",
            "--preset cpu --fold 0 --data data/carvana")
    s.description += "\n\npresets (--preset):\n" + "\n".join(f"  {name:<5} {line}" for name, line in OFFERED.items())
    add_fold(s, "fold number, or 'all'", default="0")
    add_preset(s, default=None)
    s.add_argument("--config", default=None, metavar="FILE",
                   help="a TrainConfig as JSON (a run's config.json works as it is): the values the run trains "
                        "with, the flags below on top (default: --preset's)")
    add_data(s)
    add_run(s, "outputs in its fold<k>/ (default: the preset's name)", name_alias=True)
    s.add_argument("--runs", default="runs", metavar="DIR", help="the folder a bare --run NAME is in")
    s.add_argument("--cache", default="cache",
                   help="folder for the resized-image cache, 'none' to decode every epoch (no disk), or 'memory' "
                        "to decode every epoch from the files' bytes held in RAM")
    s.add_argument("--force", action="store_true", help="retrain a fold that is already complete")
    s.add_argument("--anyway", action="store_true",
                   help="train a full-size preset on the synthetic set, or on a CPU where it would take days")
    add_time_limit(s, "epoch")
    s.add_argument("--budget", type=duration, default=None, metavar="DURATION",
                   help="e.g. 20m: the whole fold (the U-Net, then the refiner its preset asks for) planned to end "
                        "within this time on this machine: its step times measured, the epochs and refiner steps "
                        "chosen to fill it, the schedules over them; a resumed fold keeps its plan; --fold all: "
                        "shared among the folds (default: the preset's epochs)")
    s.add_argument("--budget-cap", action="store_true",
                   help="the --budget as a cap: the preset's own epochs and refiner steps where they fit in it, "
                        "fewer (planned as --budget plans them) where they do not; what a Kaggle train kernel does "
                        "with its session by default")
    add_mirror(s, "the best model, history, curves and resumable backup", "after every epoch")
    add_train_flags(s)


def check_fits(cfg, data: str | None) -> None:
    """One line (a UserError) for a full-size preset asked to train on the synthetic set, or on a CPU where a fold
    would take days (an estimate: costs.cpu_fold_hours); `--anyway` skips it."""
    from ..config import OFFERED
    from ..costs.facts import DAYS_ON_A_CPU, FULL_SIZE_PIXELS, TRAIN_IMAGES, cpu_fold_hours
    from ..base.errors import UserError
    pixels = cfg.train_size[0] * cfg.train_size[1]
    what = f"preset {cfg.preset} ({cfg.height}x{cfg.width})"
    if pixels > FULL_SIZE_PIXELS and data and (Path(data) / "synth.json").is_file():
        raise UserError(f"{what} is for the real photos, not the synthetic set {data}: use --preset demo there "
                        f"(or `make data` first; --anyway trains it all the same)")
    from ..models.runtime import this_device
    device = this_device()
    if device.gpu_capability is not None:
        return
    images = TRAIN_IMAGES * (cfg.k - 1) // cfg.k
    if cfg.max_images:
        images = min(images, cfg.max_images)
    hours = cpu_fold_hours(pixels, cfg.filters, cfg.depth, images * cfg.epochs,
                           cfg.mixed_precision and device.bf16_cpu)
    if hours > DAYS_ON_A_CPU:
        raise UserError(f"{what} on this CPU: about {hours / 24:.0f} days a fold (an estimate; a GPU takes hours): "
                        f"use --preset cpu ({OFFERED['cpu'].split(':')[0]}), or --anyway to train it here")


# --- refiner --------------------------------------------------------------------------------------
def cmd_refiner(a: argparse.Namespace) -> None:
    from ..runs.folder import run_path
    from ..training.refiner import train_refiners
    train_refiners(run_path(a.run), data=a.data, steps=a.steps, test_only=a.test_only, refiner_from=a.refiner_from)


def add_refiner(add: AddCommand) -> None:
    from ..config import REFINER_FROM
    s = add("refiner", cmd_refiner, "retrain a run's second-stage refiner nets (train already trains them where the "
                                    "run's config says refine=net)", "--run cpu --data data/carvana --refiner-steps 3000")
    add_run(s, required=True)
    add_data(s)
    s.add_argument("--refiner-steps", "--steps", dest="steps", type=Whole(1, 10_000_000), default=None,
                   help="training batches per refiner, as train's --refiner-steps (--steps: its former spelling) "
                        "(default: the run's config's refiner_steps, 1000 unless its preset says otherwise)")
    s.add_argument("--test-only", action="store_true",
                   help="train all.keras alone (what predict uses), from every trained fold's held-out photos "
                        "(or, learning from training photos, the first fold's); one trained fold is enough (a "
                        "predict kernel does this)")
    s.add_argument("--refiner-from", "--learn-from", dest="refiner_from", choices=list(REFINER_FROM), default=None,
                   help="held-out: each fold's refiner learns from the other folds' held-out predictions; "
                        "training: from its own model's predictions on its own training photos, so one trained fold "
                        "is enough (for short runs, whose training dice is near their validation dice) (default: the "
                        "run's config's refiner_from, held-out unless its preset says otherwise) (--learn-from: its "
                        "former spelling)")
