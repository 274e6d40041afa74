"""Inside a Kaggle kernel: /kaggle (or the folder KAGGLE_ROOT names, for tests and local copies of a kernel's
inputs) and where Kaggle mounts a source under /kaggle/input, in every layout seen."""
from __future__ import annotations

import os
from pathlib import Path

from ..base.errors import UserError


# --- inside a Kaggle kernel -------------------------------------------------------------------------
def kaggle_root() -> Path:
    """/kaggle, or the folder KAGGLE_ROOT names (tests, a local copy of a kernel's inputs)."""
    named = os.environ.get("KAGGLE_ROOT")
    if named and not Path(named).is_dir():
        raise UserError(f"KAGGLE_ROOT={named}: no such folder; unset it (it stands in for /kaggle) or create it")
    return Path(named or "/kaggle")


def input_candidates(slug: str, user: str | None = None, root: Path | None = None) -> list[Path]:
    """Where Kaggle may mount source `slug` (a competition, a kernel's output, a dataset), in the order tried.

    Layouts seen today: competitions/<slug>/ (a competition attached to an API-pushed kernel),
    notebooks/<user>/<slug>/ (another kernel's output), datasets/<user>/<slug>/, and the older flat <slug>/.
    """
    root = root if root is not None else kaggle_root() / "input"
    owners = [user] if user else ["*"]
    paths = [root / "competitions" / slug]
    for kind in ("notebooks", "datasets"):
        for owner in owners:
            paths += sorted((root / kind).glob(f"{owner}/{slug}")) if owner == "*" else [root / kind / owner / slug]
    return paths + [root / slug]


def find_input(slug: str, user: str | None = None, root: Path | None = None) -> Path | None:
    """The mounted folder of source `slug` under /kaggle/input in any layout (`input_candidates`), else None."""
    return next((p for p in input_candidates(slug, user, root) if p.is_dir()), None)
