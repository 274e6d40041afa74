"""`plan --accelerator here`: what a recipe costs on this machine's CPU, on Kaggle's full data (a fold of 4/5 of
the 5,088 training photos, the 100,064-photo test pass), from step times measured here.

The step times are `train --budget`'s (training/budget.py's Rates): read from their cache when a budgeted train
measured them on this machine, else measured now on random inputs (a few steps each). Random inputs time the
network, not the input pipeline that feeds it on the same cores: a measured epoch of real photos took
PIPELINE_FACTOR times the steps' time, and the plan applies it (a figure measured on `cpu`'s fold 0, said so).
A fold: its epochs (the most; early stopping can end sooner), the work after them and its refiner's steps; the
test pass: every photo's TTA passes through every fold's model, then its post-processing (the refiner net's as
`predict` measured it with `cpu`, NET_POST_S; the guided filter's from costs.plan), on the same cores, so the two
add up. Every figure is an ESTIMATE from measured rates and says so.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..base.geometry import Geometry
from ..base.images import decode_jpeg, encode_jpeg, reduction_for
from ..base.tta import TTAS
from ..config import TrainConfig, preset
from ..inference.upsample import guide_reduction
from ..base.timelimit import format_duration
from ..training.budget import (Budget, Rates, TooShort, Work, epoch_seconds, fixed_seconds, fold_work,
                               make_plan)
from .facts import TEST_IMAGES, fold_images
from .plan import guide_of, post_rate

# A real epoch over the step time measured on random inputs: the 51 epochs of `train --preset cpu --budget 5m, 10m,
# 20m` on fold 0 of the 497 shared real photos, 2-core AMD EPYC, idle, 2026-12-06 (docs/results.md, "`cpu` on a time
# budget"): their mean, 29.0 s (input pipeline, validation, checkpoint, and this VM's slow epochs), over
# epoch_seconds() at MEASURED_EPYC, 24.8 s.
PIPELINE_FACTOR = 1.17
PIPELINE_SOURCE = ("a real epoch took 1.17x the measured steps (the input pipeline shares the cores): 51 epochs of "
                   "`cpu`'s fold 0 of the 497 real photos, 2-core AMD EPYC, 2026-12-06")
# The step times `train --preset cpu --budget` measured on that EPYC (AVX512-BF16, bfloat16, no XLA), idle, 2026-12-06
# (~/.cache/competition/steps.json): what config/figures.py's `cpu` row is computed from (tests/test_figures.py).
MEASURED_EPYC = Rates(train_step_s=0.2336, eval_image_s=0.01454, refiner_step_s=0.05156, decode_s=0.00966,
                      trace_s=2.567, reload_s=0.370, refiner_trace_s=0.380,
                      source="measured on a 2-core AMD EPYC in bfloat16, 2026-12-06")


# `predict` of `cpu`'s fold 0 model (hflip TTA, the refiner net and the guided filter, RLE, the CSV) over 200 of the
# 497 real photos on that EPYC, idle, 2026-12-06: 11.63 photos a second end to end, 86 ms a photo; less its two model
# passes (2 x MEASURED_EPYC.eval_image_s), what the refinement and writing take a photo, at cpu's guide.
NET_POST_S = 1 / 11.63 - 2 * 0.01454
NET_POST_SOURCE = ("`predict --tta hflip` of cpu's fold 0 over 200 real photos: 11.63 photos/s end to end on the "
                   "2-core AMD EPYC, 2026-12-06, less its 2 model passes")


def post_seconds(cfg: TrainConfig) -> tuple[float, str]:
    """Seconds a test photo's post-processing takes here, and from what: the refiner net's as measured with `cpu`
    (scaled by its guide's pixels for another size), else costs.plan's per-thread figures over its threads."""
    if cfg.refine != "net":
        rate, how = post_rate(cfg)
        return 1 / rate, how
    scale = math.prod(guide_of(cfg)[1]) / math.prod(guide_of(preset("cpu"))[1])  # the guides' pixels
    return NET_POST_S * scale, NET_POST_SOURCE + (f", x {scale:.2g} for this guide's pixels" if scale != 1 else "")


@dataclass(frozen=True)
class HereCost:
    """Hours on this machine: one fold (its epochs, the work after them, its refiner) and the test pass."""

    epoch_h: float
    fold_h: float
    test_h: float
    folds: int
    train_images: int
    val_images: int
    source: str

    @property
    def total_h(self) -> float:
        return self.folds * self.fold_h + self.test_h


def full_fold(cfg: TrainConfig) -> Work:
    """A fold of Kaggle's training set as `cfg` trains it (costs.plan.fold_images), with the photos its refiner
    learns from as `train --budget` counts them (training.budget.fold_work)."""
    train, val = fold_images(cfg)
    refiner = Budget(0.0, 0.0, 1 if cfg.refine == "net" else 0, cfg.refiner_from == "training")
    return fold_work(refiner, train, val, cfg.batch)


def budget_line(cfg: TrainConfig, rates: Rates, budget_s: float) -> str:
    """What `train --budget` would plan for a fold of the full data here: `plan --accelerator here --budget D`."""
    work, fed = full_fold(cfg), dataclasses.replace(rates, train_step_s=rates.train_step_s * PIPELINE_FACTOR)
    steps = cfg.refiner_steps if work.refiners else 0
    try:
        plan = make_plan(budget_s, 0.0, cfg.epochs, steps, cfg.warmup, work, fed)
    except TooShort as e:
        return f"budget {format_duration(budget_s)}, preset {cfg.preset}, a fold of the full data here: {e}"
    refiner = f" and {plan['refiner_steps']:,} refiner steps" if plan["refiner_steps"] else ""
    return (f"budget {format_duration(budget_s)}, preset {cfg.preset}, a fold of the full data ({work.train_images:,} + "
            f"{work.val_images:,} photos) here: {plan['epochs']} epochs{refiner} (ESTIMATE: step times {rates.source}, "
            f"x {PIPELINE_FACTOR:g} for the input pipeline; the preset has {cfg.epochs} epochs)")


def here_cost(cfg: TrainConfig, rates: Rates, folds: int, tta: str, test_images: int = TEST_IMAGES) -> HereCost:
    """The recipe's hours at `rates` on the full data (pure: checkable by hand). The refiner, where the preset
    trains one, learns from the fold's own training photos (cfg.refiner_from "training") or the run's held-out
    ones, and takes cfg.refiner_steps steps."""
    work = full_fold(cfg)
    refiners = work.refiners
    epoch = epoch_seconds(work, rates) * PIPELINE_FACTOR
    fold = cfg.epochs * epoch + fixed_seconds(work, rates) + refiners * cfg.refiner_steps * rates.refiner_step_s
    passes = len(TTAS[tta]) * folds
    test = test_images * (passes * rates.eval_image_s + post_seconds(cfg)[0])
    return HereCost(epoch / 3600, fold / 3600, test / 3600, folds, work.train_images, work.val_images, rates.source)


def render_here(cfg: TrainConfig, c: HereCost, tta: str) -> str:
    """The CPU plan as a Markdown table, each figure with how it was computed."""
    post_s, post_how = post_seconds(cfg)
    rows = [
        ["one epoch", f"{c.epoch_h * 60:.1f} min",
         f"{c.train_images:,} training + {c.val_images:,} validation photos at the "
         f"step times {c.source}, x {PIPELINE_FACTOR:g} ({PIPELINE_SOURCE})"],
        ["one fold", f"{c.fold_h:.1f} h",
         f"{cfg.epochs} epochs (the most) + the work after them"
         + (f" + the refiner's {cfg.refiner_steps:,} steps and its photos" if cfg.refine == "net" else "")],
        [f"test pass, {c.folds} fold(s)", f"{c.test_h:.1f} h",
         f"{TEST_IMAGES:,} photos x {len(TTAS[tta])} TTA pass(es) x {c.folds} fold(s) + {post_s * 1e3:.0f} ms of "
         f"post-processing each ({post_how})"],
        ["total", f"**{c.total_h:.1f} h**", f"{c.folds} fold(s) and the test pass, one after another on this machine"],
    ]
    head = (f"plan: preset {cfg.preset} ({cfg.height}x{cfg.width}, batch {cfg.batch}, up to {cfg.epochs} epochs) on "
            f"this machine's CPU, Kaggle's full data; ESTIMATES from step times measured here")
    return "\n".join([head, "", "| item | figure | how, and from what |", "|---|---|---|"]
                     + [f"| {a} | {b} | {s} |" for a, b, s in rows])


def synthetic_photo(cfg: TrainConfig) -> Callable[[], object]:
    """A stand-in for one photo's preparation for the refiner (training.train._prepare) where no real photo is at
    hand: a smooth 1918x1280 JPEG decoded at the model's and at the guide's reduction."""
    rows, cols = np.mgrid[0:1280, 0:1918]
    photo = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    data = encode_jpeg(photo)
    reductions = (reduction_for(cfg.size), guide_reduction(Geometry(cfg.height, cfg.width, cfg.fit)))
    return lambda: [decode_jpeg(data, "a synthetic photo", r) for r in reductions]
