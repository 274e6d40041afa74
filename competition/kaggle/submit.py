"""`submit`: a submission validated against the sample, then uploaded through the kaggle package."""
from __future__ import annotations

from pathlib import Path

from ..base.console import say
from ..base.errors import UserError
from ..inference.submission import validate_submission
from .api import submit_file


def submit(path: Path, message: str, sample: Path | None, data: str | None) -> None:
    """Validate, then upload through the kaggle package; without credentials the CSV stays put."""
    validate_submission(path, sample, data)
    try:
        submit_file(path, message)
    except UserError as e:
        raise UserError(f"{e} (nothing was submitted; {path} stays where it is)") from e
    say(f"submitted {path}: {message!r}; see your score at "
        "https://www.kaggle.com/competitions/carvana-image-masking-challenge/submissions")
