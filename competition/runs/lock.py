"""One writer a fold at a time. `train` holds an exclusive lock on the run's .fold<k>.lock while it writes the fold
(and a brief one on the run's .run.lock while it writes the run's shared files); a second `train` of the fold, or a
`score`, `predict`, `cv` or `refiner` that would read a fold while it trains, gets one line naming the process
that holds it. Different folds of one run train at once (one GPU each). The locks are the operating system's
(flock): a killed process holds none, so a lock never outlives its holder.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from ..base.errors import UserError



def fold_lock(run_dir: Path, fold: int) -> Path:
    """The lock of fold `fold`: beside its folder, so that `train --force` can delete the folder while holding it."""
    return run_dir / f".fold{fold}.lock"


def run_lock(run_dir: Path) -> Path:
    """The lock of the run's shared files (config.json, folds.csv)."""
    return run_dir / ".run.lock"


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it ("process 123 since 10:42:07 UTC"), or "another process"."""
    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        if text:
            return text
    return "another process"


@contextlib.contextmanager
def held(path: Path, what: str) -> Iterator[None]:
    """An exclusive lock on `path` for the block (its folder is made); one line when another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent / path.name.removeprefix(".").removesuffix(".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{folder} is being written by {_holder(path)} ({what}): wait for it to end, or stop "
                            f"it; then run this command again") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} since {time.strftime('%H:%M:%S UTC', time.gmtime())}".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file stays, empty of meaning until the next holder writes


def check_free(path: Path, what: str) -> None:
    """One line when a process holds the lock `path` (a fold being trained); creates nothing."""
    folder = path.parent / path.name.removeprefix(".").removesuffix(".lock")
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"{folder} is being trained by {_holder(path)}: {what}") from None
    finally:
        os.close(fd)
