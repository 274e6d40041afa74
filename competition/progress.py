"""Progress bars: tqdm with rate and ETA on a terminal, sparse lines otherwise, nothing with --quiet."""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
QUIET = False


def set_quiet(quiet: bool) -> None:
    global QUIET
    QUIET = quiet


def bar(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "img",
        **kwargs) -> tqdm:
    """A tqdm bar on stderr; refreshes rarely (every 30 s) when stderr is not a terminal."""
    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=QUIET, file=sys.stderr,
                mininterval=0.5 if tty else 30.0, dynamic_ncols=tty, ascii=not tty, **kwargs)


def say(message: str) -> None:
    """A line for the user (stdout), unless quiet."""
    if not QUIET:
        print(message, flush=True)
