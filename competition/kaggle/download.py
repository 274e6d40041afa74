"""`make data`: fetch the competition files with the official kaggle package (resumable, skips complete files)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .. import COMPETITION
from ..base import console
from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import human
from .api import call, get_api

DEFAULT_FILES = ["train_masks.csv", "metadata.csv", "sample_submission.csv", "train_masks.zip",
                 "train_hq.zip", "test_hq.zip"]
PARTIAL_SUFFIX = ".kaggle-partial"  # the package's marker beside a download it can resume


def local_copy(dest: Path, name: str) -> Path | None:
    """The complete local copy of `name` (or of `name.zip`, as Kaggle serves CSVs), if any."""
    for path in (dest / name, dest / f"{name}.zip"):
        marker = path.with_name(path.name + PARTIAL_SUFFIX)
        if path.is_file() and path.stat().st_size > 0 and not marker.exists():
            return path
    return None


def remote_files(api) -> dict[str, int]:
    """Name -> size in bytes (0 when Kaggle does not say) of every file of the competition."""
    files: dict[str, int] = {}
    token = None
    for _ in range(100):
        page = call(api.competition_list_files, COMPETITION, page_token=token, page_size=200,
                    what=f"listing the files of {COMPETITION}")
        for f in page.files or []:
            files[f.name] = int(f.total_bytes or 0)
        token = page.next_page_token
        if not token:
            break
    return files


def remote_name(name: str, remote: dict[str, int]) -> str:
    """Kaggle's name for a requested file: itself, or `name.zip` (CSVs are listed as `*.csv.zip`)."""
    for candidate in (name, f"{name}.zip"):
        if candidate in remote:
            return candidate
    raise UserError(f"{name}: not a file of {COMPETITION}; choose among {', '.join(sorted(remote))}")


def _check_space(dest: Path, need: int) -> None:
    free = shutil.disk_usage(dest).free
    if need > free:
        raise UserError(f"{dest}: the download needs {human(need)} but only {human(free)} is free; "
                        f"free space there or pass --dest on a bigger disk (or fewer --files)")


def download(dest: Path, files: list[str] | None = None, force: bool = False) -> list[Path]:
    """Download competition files into `dest`; complete ones are skipped, partial ones resume."""
    wanted = list(dict.fromkeys(files or DEFAULT_FILES))
    dest.mkdir(parents=True, exist_ok=True)
    done = {} if force else {n: p for n in wanted if (p := local_copy(dest, n)) is not None}
    for name, path in done.items():
        say(f"already complete: {path}")
    todo = [n for n in wanted if n not in done]
    if not todo:
        return [done[n] for n in wanted]
    api = get_api()
    remote = remote_files(api)
    names = {n: remote_name(n, remote) for n in todo}
    partial = {n: _partial_bytes(dest / r) for n, r in names.items()}
    _check_space(dest, sum(max(remote[r] - (0 if force else partial[n]), 0) for n, r in names.items()))
    quiet = console.QUIET or not sys.stderr.isatty()  # the package's byte bar only on a terminal
    for name, rname in names.items():
        how = f"resuming at {human(partial[name])} of" if partial[name] and not force else "downloading"
        say(f"{how} {rname} ({human(remote[rname])}) into {dest}")
        call(api.competition_download_file, COMPETITION, rname, path=str(dest), force=force, quiet=quiet,
             what=f"downloading {rname}")
        path = local_copy(dest, rname)
        if path is None or (remote[rname] and path.stat().st_size != remote[rname]):
            raise UserError(f"{dest / rname}: download incomplete; run the same command again to resume")
        done[name] = path
        say(f"done: {path} ({human(path.stat().st_size)})")
    return [done[n] for n in wanted]


def _partial_bytes(path: Path) -> int:
    marker = path.with_name(path.name + PARTIAL_SUFFIX)
    return path.stat().st_size if path.is_file() and marker.exists() else 0
