"""Subcommands of scoring: score (a fold, a blend, or a submission of training ids) and cv."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..base.errors import UserError
from .options import add_blend, add_data, add_fold, add_refine, add_run, add_threshold, add_tta, add_tune_threshold
from .parser import AddCommand, Whole


# --- score ----------------------------------------------------------------------------------------
def _runs(texts: list[str]):
    """One run's folder, or a blend's members (each run scored beside it)."""
    from ..runs.folder import run_path
    from ..inference.ensemble import parse_member
    return [parse_member(r) for r in texts] if len(texts) > 1 else run_path(texts[0])


def cmd_score(a: argparse.Namespace) -> None:
    from ..scoring import score
    if a.submission:
        score.score_submission(Path(a.submission), data=a.data)
        return
    if not a.run:
        raise UserError("score needs --run NAME (with --fold) or --submission FILE")
    runs = _runs(a.run)
    score.score_fold(runs, fold=a.fold, data=a.data, tta=a.tta, worst=a.worst, tune_threshold=a.tune_threshold,
                     threshold=a.threshold, refine=a.refine, name=a.blend)
    if isinstance(runs, Path):
        from ..scoring.report import report_folds  # draws what scoring saved
        report_folds(runs, data=a.data, folds=[a.fold])


def add_score(add: AddCommand) -> None:
    s = add("score", cmd_score, "Kaggle's dice on a held-out fold (or of a submission of training ids)",
            "--run demo --fold 0 --data data/synthetic")
    add_run(s, "give it again to score a blend of runs: --run A --run B[:WEIGHT]", many=True)
    add_blend(s)
    add_fold(s, "the held-out fold to score")
    add_data(s)
    add_tta(s)
    s.add_argument("--worst", type=Whole(0, 1000), default=10, help="overlays for the N worst images")
    add_threshold(s)
    add_refine(s)
    add_tune_threshold(s, "search the best threshold and save it in the run's config.json (make: TUNE=1)")
    s.add_argument("--submission", default=None, metavar="CSV",
                   help="score this CSV of training ids against the training masks (instead of --run)")


# --- cv -------------------------------------------------------------------------------------------
def cmd_cv(a: argparse.Namespace) -> None:
    from ..scoring.score import cross_validate
    runs = _runs(a.run)
    cross_validate(runs, data=a.data, tta=a.tta, tune_threshold=a.tune_threshold, refine=a.refine, name=a.blend)
    if isinstance(runs, Path):
        from ..scoring.report import report_folds  # draws what scoring saved
        report_folds(runs, data=a.data)


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
