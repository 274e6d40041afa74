"""`submit`: a submission validated against the sample, then uploaded through the kaggle package, and recorded in
submissions/submitted.json beside it (which file, its digest, the message, when, and what made it) so that `runs`
can put Kaggle's scores beside the run that made each file."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from ..base import records
from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import write_json
from ..base.records import ListOf, Shape
from ..inference.submission import made_path, read_made, validate_submission
from ..runs.folder import file_sha256
from .api import submit_file

SUBMITTED = "submitted.json"
SENT = Shape("a submission sent to Kaggle", required={"file": "str", "message": "str", "at": "str"},
             optional={"sha256": "str", "made": ("dict", None), "answer": "str"})
SUBMITTED_SHAPE = Shape("the record of submissions sent", required={"submissions": ListOf(SENT)})


def submitted_path(folder: Path) -> Path:
    return folder / SUBMITTED


def read_submitted(folder: Path) -> list[dict]:
    """The submissions sent from `folder` (oldest first; [] before the first), checked."""
    path = submitted_path(folder)
    return records.load(path, SUBMITTED_SHAPE, f"delete {path}: `runs` then shows no submissions from here")[
        "submissions"] if path.is_file() else []


def submit(path: Path, message: str, sample: Path | None, data: str | None) -> None:
    """Validate, then upload through the kaggle package, then record it; without credentials the CSV stays put."""
    validate_submission(path, sample, data)
    sent = read_submitted(path.parent)  # a damaged log: one line before anything is uploaded
    made = None
    if made_path(path).is_file():
        with contextlib.suppress(UserError):  # a damaged record only leaves the run unknown in `runs`
            made = read_made(path)
    try:
        answer = submit_file(path, message)
    except UserError as e:
        raise UserError(f"{e} (nothing was submitted; {path} stays where it is)") from e
    sent.append({"file": path.name, "sha256": file_sha256(path), "message": message, "made": made,
                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "answer": answer})
    write_json(submitted_path(path.parent), {"submissions": sent})
    say(f"submitted {path}: {message!r}; recorded in {submitted_path(path.parent)}; `python -m competition runs` "
        f"shows its score once Kaggle has scored it")

