"""The clean subcommand: delete what the toolkit can make again (runs and submissions only when asked)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .parser import AddCommand


def cmd_clean(a: argparse.Namespace) -> None:
    from ..kaggle.records import RECORD_FILE
    from ..runs.clean import clean
    clean(Path("."), everything=a.all, keep=(RECORD_FILE,))


def add_clean(add: AddCommand) -> None:
    s = add("clean", cmd_clean, "delete caches, push folders, the synthetic set and the demo's run (--all: every "
            "run and submission, each run's kernels.json kept)", "--all")
    s.add_argument("--all", action="store_true",
                   help="every run under runs/ and submission under submissions/ too (a run's kernels.json, the "
                        "record of its pushed kernels, stays)")
