"""Subcommands that measure or estimate costs: bench, plan, calibrate."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..base.errors import UserError
from ..base.timelimit import parse_duration
from .options import (add_accelerator, add_batch, add_crop, add_epochs, add_folds, add_k, add_out, add_preset,
                      add_refine, add_session_hours, add_size, add_tta, folds_arg)
from .parser import AddCommand, Number, Whole, duration


# --- bench ----------------------------------------------------------------------------------------
def cmd_bench(a: argparse.Namespace) -> None:
    from ..bench import run_bench
    from ..base.fileio import check_folder
    run_bench(out=check_folder(a.out, "--out"), quick=a.quick)


def add_bench(add: AddCommand) -> None:
    s = add("bench", cmd_bench, "measure speed against baselines run side by side; writes bench/", "--quick")
    s.add_argument("--quick", action="store_true", help="fewer and smaller measurements (minutes, not a quarter hour)")
    add_out(s, "where the results are written", default="bench")


# --- plan -----------------------------------------------------------------------------------------
def cmd_plan(a: argparse.Namespace) -> None:
    from ..config import parse_crop, parse_size, preset
    from ..costs.plan import plan
    size = parse_size(a.size) if a.size else (None, None)
    cfg = preset(a.preset, height=size[0], width=size[1], batch=a.batch, epochs=a.epochs, k=a.k,
                 crop=None if a.crop is None else parse_crop(a.crop), refine=a.refine)
    if (a.train_img_s is None) != (a.predict_img_s is None):
        raise UserError("state both --train-img-s and --predict-img-s (images/s on one GPU), or neither")
    stated = None if a.train_img_s is None else (a.train_img_s, a.predict_img_s)
    if a.accelerator == "here":
        from ..costs.here import budget_line, here_cost, render_here, synthetic_photo
        from ..training.train import measured_rates
        folds = folds_arg(a.folds)
        rates = measured_rates(cfg, cfg.refine == "net", synthetic_photo(cfg))
        print(budget_line(cfg, rates, parse_duration(a.budget, "--budget")) if a.budget is not None else
              render_here(cfg, here_cost(cfg, rates, len(folds) if folds else cfg.k, a.tta), a.tta), flush=True)
        return
    if a.budget is not None:
        from ..costs.budget import render_budget
        print(render_budget(cfg, parse_duration(a.budget, "--budget")), flush=True)
        return
    plan(cfg, folds_arg(a.folds), a.tta, a.accelerator, allow_split=a.allow_split, stated=stated,
         pipeline=a.pipeline_img_s, hours=a.session_hours)


def add_plan(add: AddCommand) -> None:
    s = add("plan", cmd_plan, "what a recipe costs in Kaggle GPU hours, sessions, shards and weekly quota, or on this "
                              "machine's CPU (--accelerator here)",
            "--preset unet --folds 0,1,2,3,4 --accelerator t4x2")
    add_preset(s, help="the recipe's preset")
    add_folds(s, "the folds to train and ensemble, e.g. 0,1,2,3,4 (default: all k)")
    add_tta(s)
    add_accelerator(s, here=True)
    add_size(s)
    add_crop(s)
    add_batch(s, "batch size per replica (default: the preset's)")
    add_epochs(s, "most epochs to train (default: the preset's)")
    add_k(s)
    add_refine(s, "the test pass's refinement (default: the preset's)")
    add_session_hours(s)
    s.add_argument("--budget", type=duration, default=None, metavar="DURATION",
                   help="instead of the recipe's table: the epochs a fold gets within this time (`train --budget`) "
                        "on each accelerator, or with --accelerator here on this machine for a fold of the full data "
                        "(default: none)")
    s.add_argument("--train-img-s", type=Number(0, 1e6, low_open=True), help="stated training images/s on one GPU (with --predict-img-s) "
                                                     "(default: measured or estimated)")
    s.add_argument("--predict-img-s", type=Number(0, 1e6, low_open=True), help="stated whole-frame images/s on one GPU, one pass "
                                                       "(default: measured or estimated)")
    s.add_argument("--pipeline-img-s", type=Number(0, 1e6, low_open=True),
                   help="stated training inputs/s the session's CPUs decode and augment (default: measured per "
                        "core x 4 for full-resolution decodes, else no limit)")
    s.add_argument("--allow-split", action="store_true",
                   help="plan resumed sessions for a fold, or shards for the test pass, instead of refusing")


# --- calibrate ------------------------------------------------------------------------------------
def cmd_calibrate(a: argparse.Namespace) -> None:
    from ..costs.calibrate import calibrate
    from ..base.fileio import check_file_out, write_json
    check_file_out(Path(a.out), force=True)  # before the GPU time, not after
    result = calibrate([n for n in a.presets.split(",") if n], a.mixed_precision, a.timed_steps, a.predict_batch)
    write_json(Path(a.out), result)


def add_calibrate(add: AddCommand) -> None:
    from ..config import PRESETS
    s = add("calibrate", cmd_calibrate, "measure each preset's training and prediction speed on this machine's "
                                        "accelerator (any Keras backend): the figures `plan` uses",
            "--out calibration.json --mixed-precision --presets unet,unet-1280:512x512:8")
    add_out(s, "the measurements' JSON file", required=True)
    s.add_argument("--presets", default=",".join(n for n in PRESETS if n != "tiny"),
                   help="comma list of presets, or PRESET:HxW:BATCH to train on HxW crops with that batch")
    s.add_argument("--mixed-precision", action="store_true", help="measure in mixed float16")
    s.add_argument("--timed-steps", "--steps", dest="timed_steps", type=Whole(1, 10_000), default=10,
                   help="timed steps per measurement (--steps: its former spelling)")
    s.add_argument("--predict-batch", type=Whole(1, 4096), default=4, help="images a prediction batch")
