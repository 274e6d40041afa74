"""Subcommands of inference and submission: predict, merge, made-as, validate, submit."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..base.fileio import check_file_out
from .options import (BLEND_HELP, add_batch, add_blend, add_data, add_folds, add_mirror, add_out, add_refine, add_run,
                      add_sample, add_shard, add_threshold, add_time_limit, add_tta, folds_arg, path_or_none,
                      shard_arg)
from .parser import AddCommand, Whole


# --- predict --------------------------------------------------------------------------------------
def cmd_predict(a: argparse.Namespace) -> None:
    from ..inference.ensemble import parse_member
    from ..inference.predict import predict
    from ..base.timelimit import deadline
    limit = deadline(a.time_limit)
    specs = [parse_member(r) for r in a.run]  # one run, or a blend of every one of them
    predict(specs, data=a.data, out=Path(a.out), folds=folds_arg(a.folds), tta=a.tta, threshold=a.threshold,
            batch=a.batch, shard=shard_arg(a.shard), limit=a.limit, time_limit=limit, mirror=path_or_none(a.mirror),
            name=a.blend, refine=a.refine)


def add_predict(add: AddCommand) -> None:
    s = add("predict", cmd_predict, "predict the test set into a submission CSV (resumable, shardable)",
            "--run demo --data data/synthetic --out submissions/demo.csv.gz")
    add_run(s, f"give it again to blend runs: {BLEND_HELP}", many=True, required=True)
    add_blend(s)
    add_data(s)
    add_out(s, "the submission file (.csv or .csv.gz)", required=True)
    add_folds(s, "the folds to ensemble, e.g. 0,1,2 (default: every trained fold)")
    add_tta(s)
    add_threshold(s)
    add_refine(s)
    add_batch(s, "images a batch (default: the run's, scaled to whole frames)")
    add_shard(s)
    s.add_argument("--limit", type=Whole(1, 10_000_000), default=None, help=argparse.SUPPRESS)
    add_time_limit(s, "chunk of rows")
    add_mirror(s, "the partial submission and its progress record", "as each chunk is written")


# --- merge, made-as, validate, submit -------------------------------------------------------------
def cmd_merge(a: argparse.Namespace) -> None:
    from ..inference.submission import merge
    check_file_out(Path(a.out), force=True)
    merge([Path(p) for p in a.parts], Path(a.out), path_or_none(a.sample), data=a.data)


def add_merge(add: AddCommand) -> None:
    s = add("merge", cmd_merge, "join shard files into one submission, checking they cover the sample once",
            "submissions/unet.shard-*-of-4.csv.gz --out submissions/unet.csv.gz --data data/carvana")
    s.add_argument("parts", nargs="+", help="the shard files")
    add_out(s, "the joined submission", required=True)
    add_sample(s)
    add_data(s)


def cmd_made_as(a: argparse.Namespace) -> None:
    from ..inference.submission import made_otherwise
    differs = made_otherwise(Path(a.file), a.tta, a.refine, folds_arg(a.folds))
    if differs:
        print(differs)


def add_made_as(add: AddCommand) -> None:
    s = add("made-as", cmd_made_as, "print how a submission's record (<file>.json) differs from these settings "
                                    "(nothing when it matches; `make submit` predicts again when it does not)",
            "submissions/unet.csv.gz --tta hflip --folds 0,1,2")
    s.add_argument("file", help="the submission")
    add_tta(s)
    add_refine(s, "the refinement to compare with (default: not compared)")
    add_folds(s, "the folds to compare with, e.g. 0,1,2 (default: not compared)")


DEFAULT_DATA = "data/carvana"  # where `make data` (download) puts the competition's files


def data_for_sample(a: argparse.Namespace) -> str | None:
    """validate's and submit's data root: --data; else (no --sample) the Kaggle input inside a kernel, else
    data/carvana where `make data` put it; else a one-line error naming the flags."""
    from .. import COMPETITION
    from ..data.kaggle_input import find_input
    from ..base.errors import UserError
    if a.data or a.sample or find_input(COMPETITION) is not None:
        return a.data
    if Path(DEFAULT_DATA).is_dir():
        return DEFAULT_DATA
    raise UserError(f"no sample submission to check {a.file} against: pass --data DIR (the competition's files; "
                    f"`make data` puts them in {DEFAULT_DATA}) or --sample sample_submission.csv")


def cmd_validate(a: argparse.Namespace) -> None:
    from ..inference.submission import validate_submission
    validate_submission(Path(a.file), path_or_none(a.sample), data=data_for_sample(a))


def add_validate(add: AddCommand) -> None:
    s = add("validate", cmd_validate, "check a submission CSV against the sample submission",
            "submissions/unet.csv.gz --data data/carvana")
    s.add_argument("file", help="the submission")
    add_sample(s)
    add_data(s, "the data root holding sample_submission.csv (default: /kaggle/input's inside a kernel)")


def cmd_submit(a: argparse.Namespace) -> None:
    from ..kaggle.submit import submit
    submit(Path(a.file), message=a.message, sample=path_or_none(a.sample), data=data_for_sample(a))


def add_submit(add: AddCommand) -> None:
    s = add("submit", cmd_submit, "validate a submission and upload it with the kaggle package",
            "submissions/unet.csv.gz -m \"unet 5 folds\"")
    s.add_argument("file", help="the submission")
    s.add_argument("--message", "-m", default="competition toolkit submission", help="the submission's description")
    add_sample(s)
    add_data(s)
