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

import time
from pathlib import Path
from typing import Callable

from ..base.console import say
from ..base.timelimit import format_duration
from ..config import TrainConfig
from ..runs.folder import fold_dir, trained_folds
from ..runs.resume import REFINER_REPLANNED, is_finished, read_plan, write_plan
from . import refiner as refiner_module, train as train_module
from .budget import MARGIN, REFINER_SAVE_S, Budget, keeps, refiner_steps_at


def train_fold(cfg: TrainConfig, data: str | None, run_dir: Path, fold: int, budget: float | None = None,
               started: float | None = None, cap: bool = False, **train_options) -> dict:
    """Train (or resume) fold `fold`, then the refiner(s) it asks for; returns train.json's summary, with "refiners"
    (their paths) when any were trained or found up to date. budget: seconds from `started` (time.monotonic())
    for the whole of it, the refiners' steps planned with the epochs (training/budget.py); cap: the budget as a cap,
    at most the preset's schedule. train_options: those of train.train."""
    plan_of, out, planned_here = None, fold_dir(run_dir, fold), False
    if budget is not None:
        count = refiners_after(cfg, run_dir, fold)
        plan_of = Budget(budget, time.monotonic() if started is None else started, count,
                         cfg.refiner_from == "training", cap)
        planned_here = bool(train_options.get("force")) or not keeps(read_plan(out), plan_of)
    summary = train_module.train(cfg, data=data, run_dir=run_dir, fold=fold, budget=plan_of, **train_options)
    if summary and not summary.get("time_limited"):
        plan = read_plan(out)  # a budgeted fold's refiner steps
        deadline = plan_of.started + plan_of.seconds - REFINER_SAVE_S if plan_of is not None and plan else None
        replan = (refiner_replan(plan_of, plan, out)
                  if planned_here and plan and not plan.get(REFINER_REPLANNED) else None)
        refiners = train_refiners_after(cfg, data, run_dir, fold, plan["refiner_steps"] if plan else None, deadline,
                                        replan)
        if refiners:
            summary = {**summary, "refiners": [str(p) for p in refiners]}
    return summary


def refiner_replan(budget: Budget, plan: dict, out: Path) -> Callable[[int], int]:
    """replan(n): the steps of each of n refiners, planned again as the first starts from the time this command has
    left (budget.refiner_steps_at), in the fold's plan only where the command made that plan: a resumed fold keeps
    the plan it was given. Recorded in budget.json before the refiner trains, so a rerun finds the refiners this one
    trained up to date and asks no more."""
    def steps(count: int) -> int:
        again = refiner_steps_at(plan, budget.started + MARGIN * budget.seconds - time.monotonic(), count)
        write_plan(out, {**plan, "refiner_steps": again, REFINER_REPLANNED: plan["refiner_steps"]})
        say(f"budget {format_duration(budget.seconds)}: the refiner's steps planned again as it starts, from the "
            f"time left: {again:,} (planned {plan['refiner_steps']:,})")
        return again
    return steps


def refiners_after(cfg: TrainConfig, run_dir: Path, fold: int) -> int:
    """How many refiners the train of `fold` will train once the fold is finished (module docstring): one that learns
    from the fold's own photos; every fold's and all.keras when it finishes a run whose refiners learn from held-out
    folds; else none."""
    if cfg.refine != "net":
        return 0
    if cfg.refiner_from == "training":
        return 1
    others = [k for k in range(cfg.k) if k != fold and is_finished(fold_dir(run_dir, k))]
    return cfg.k + 1 if len(others) == cfg.k - 1 else 0


def train_refiners_after(cfg: TrainConfig, data: str | None, run_dir: Path, fold: int, steps: int | None = None,
                         deadline: float | None = None, replan: Callable[[int], int] | None = None) -> list[Path]:
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
    return refiner_module.train_refiners(run_dir, data=data, steps=steps, deadline=deadline, replan=replan)
