"""Subcommands of scoring: score (a fold, a blend, or a submission of training ids) and cv."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .options import add_blend, add_data, add_fold, add_refine, add_run, add_threshold, add_tta, add_tune_threshold
from .parser import AddCommand


# --- score ----------------------------------------------------------------------------------------
def cmd_score(a: argparse.Namespace) -> None:
    from .. import score
    from ..config import run_path
    if a.submission:
        score.score_submission(Path(a.submission), data=a.data)
        return
    if not a.run:
        raise UserError("score needs --run NAME (with --fold) or --submission FILE")
    if len(a.run) > 1:  # a blend of runs, scored beside each of them
        from ..blend import parse_member, score_blend
        score_blend([parse_member(r) for r in a.run], fold=a.fold, data=a.data, tta=a.tta, worst=a.worst,
                    tune_threshold=a.tune_threshold, threshold=a.threshold, name=a.blend, refine=a.refine)
        return
    a.run = a.run[0]
    score.score_fold(run_path(a.run), fold=a.fold, data=a.data, tta=a.tta, worst=a.worst,
                     tune_threshold=a.tune_threshold, threshold=a.threshold, refine=a.refine)
    from ..report import report_folds  # draws what scoring saved
    report_folds(run_path(a.run), data=a.data, folds=[a.fold])


def add_score(add: AddCommand) -> None:
    s = add("score", cmd_score, "Kaggle's dice on a held-out fold (or of a submission of training ids)",
            "--run demo --fold 0 --data data/synthetic")
    add_run(s, "give it again to score a blend of runs: --run A --run B[:WEIGHT]", many=True)
    add_blend(s)
    add_fold(s, "the held-out fold to score")
    add_data(s)
    add_tta(s)
    s.add_argument("--worst", type=int, default=10, help="overlays for the N worst images")
    add_threshold(s)
    add_refine(s)
    add_tune_threshold(s, "search the best threshold and save it in the run's config.json (make: TUNE=1)")
    s.add_argument("--submission", default=None, metavar="CSV",
                   help="score this CSV of training ids against the training masks (instead of --run)")


# --- cv -------------------------------------------------------------------------------------------
def cmd_cv(a: argparse.Namespace) -> None:
    from ..config import run_path
    from ..score import cross_validate
    if len(a.run) > 1:  # a blend of runs, each of them beside it
        from ..blend import cross_validate_blend, parse_member
        if a.tune_threshold:
            raise UserError("cv --tune-threshold tunes one run; tune a blend with score --run A --run B "
                            "--fold K --tune-threshold")
        cross_validate_blend([parse_member(r) for r in a.run], data=a.data, tta=a.tta, name=a.blend,
                             refine=a.refine)
        return
    a.run = a.run[0]
    cross_validate(run_path(a.run), data=a.data, tta=a.tta, tune_threshold=a.tune_threshold, refine=a.refine)
    from ..report import report_folds  # draws what scoring saved
    report_folds(run_path(a.run), data=a.data)


def add_cv(add: AddCommand) -> None:
    s = add("cv", cmd_cv, "score every trained fold and write runs/<name>/cv.md", "--run demo --data data/synthetic")
    add_run(s, "give it again for a blend of runs (--run A --run B[:WEIGHT]): every fold they share, each run "
               "beside the blend, into runs/blends/<name>/cv.md", many=True, required=True)
    add_blend(s)
    add_data(s)
    add_tta(s)
    add_refine(s)
    add_tune_threshold(s, "save the best threshold over every fold's held-out images in the run's config.json "
                          "(what a fold ensemble should use; not for a blend)")
