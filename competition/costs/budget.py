"""`plan --budget D`: what a time budget buys (`train --budget`) on each of Kaggle's accelerators: a fold's epochs at
the preset's size, by the same rates and arithmetic as `plan` (measured where a preset is, else estimated, and
said). On this machine `train --budget` measures its own rates before it plans."""
from __future__ import annotations

from ..base.timelimit import format_duration, parse_duration
from ..config import TrainConfig
from ..kaggle.machines import ACCELERATORS, OFFERED, usable_hours
from ..training.budget import MARGIN
from .plan import cost, epochs_within, pipeline_rate, rates_for, recipe_for, session_gpus


def budget_rows(cfg: TrainConfig, budget_s: float) -> list[dict]:
    """One row per offered accelerator with a GPU: an epoch's hours, the epochs the budget holds after the fold's
    out-of-fold pass and scoring (at least 0), and where the rates come from."""
    rows = []
    for name in OFFERED:
        if ACCELERATORS[name].card is None:
            continue
        recipe = recipe_for(cfg, [0], "none", name)
        rates, _ = rates_for(cfg, session_gpus(name)[0], "fp16")
        c = cost(recipe, rates, pipeline_rate(cfg)[0], None)
        epochs = epochs_within(c, budget_s)
        rows.append({"accelerator": name, "epoch_s": c["epoch_s"], "epochs": epochs, "source": rates.source})
    return rows


def render_budget(cfg: TrainConfig, budget_s: float) -> str:
    images = recipe_for(cfg, [0], "none", OFFERED[0]).train_images
    lines = [f"budget {format_duration(budget_s)}, preset {cfg.preset} ({cfg.height}x{cfg.width}; the preset trains "
             f"{cfg.epochs} epochs), one fold of {images:,} training images on Kaggle:", "",
             "| accelerator | one epoch | epochs in the budget | rates from |", "|---|---|---|---|"]
    for r in budget_rows(cfg, budget_s):
        lines.append(f"| {r['accelerator']} | {r['epoch_s'] / 60:.1f} min | {r['epochs']} | {r['source']} |")
    lines += ["", f"Each after {1 - MARGIN:.0%} kept for what estimates miss and the fold's out-of-fold pass and scoring; "
              "`train --budget` on this machine measures its own step times first."]
    return "\n".join(lines)


def fold_hours(cfg: TrainConfig, gpu: str, budget: str | None = "none", hours: float | None = None) -> float:
    """GPU hours one train kernel's fold of `cfg` costs on accelerator `gpu` (training, its out-of-fold pass and
    scoring) under its `kernel push --budget` (kaggle.machines.BUDGETS; None: the session as a cap), in sessions
    of `hours`, by the same arithmetic and rates as `plan` (an estimate where no rate is measured)."""
    recipe = recipe_for(cfg, [0], "none", gpu)
    c = cost(recipe, rates_for(cfg, session_gpus(gpu)[0], "fp16")[0], pipeline_rate(cfg)[0], None)
    session = usable_hours("train", hours)
    if budget == "none":
        return c["fold_h"]
    if budget == "session":
        return session
    if budget is not None:  # a duration, filled
        return parse_duration(budget, "--budget") / 3600
    return min(c["fold_h"], session)
