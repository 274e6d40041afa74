"""The runs subcommand: every run beside the submissions made from it and Kaggle's scores of them."""
from __future__ import annotations

import argparse
from pathlib import Path

from .parser import AddCommand


def cmd_runs(a: argparse.Namespace) -> None:
    from ..base.errors import UserError
    from ..kaggle.leaderboard import runs_table
    from ..kaggle.submit import read_submitted
    submissions = Path(a.submissions)
    kaggle, why = None, "--offline" if a.offline else ""
    if not a.offline and submissions.is_dir() and read_submitted(submissions):
        from ..kaggle.api import get_api, submission_scores
        try:
            kaggle = submission_scores(get_api())
        except UserError as e:  # no credentials, no network: the table stands without the scores
            why = str(e)
    print(runs_table(Path(a.runs), submissions, kaggle, why), flush=True)


def add_runs(add: AddCommand) -> None:
    s = add("runs", cmd_runs, "every run (preset, folds, dice, threshold, training time) and the submissions made "
            "from it with Kaggle's public and private scores", "--runs runs")
    s.add_argument("--runs", default="runs", metavar="DIR", help="the folder of runs (default: runs)")
    s.add_argument("--submissions", default="submissions", metavar="DIR",
                   help="the folder `submit` recorded its uploads in (submitted.json) (default: submissions)")
    s.add_argument("--offline", action="store_true", help="do not ask Kaggle for the scores")
