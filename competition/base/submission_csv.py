"""Kaggle's submission CSV: the `img,rle_mask` header, its rows (plain or gzip-compressed, decided by the first
bytes), and validation against the sample submission's names (ids, count, order, every RLE well formed)."""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import NATIVE_SHAPE
from . import rle
from .errors import UserError

HEADER = "img,rle_mask"


PIXELS = NATIVE_SHAPE[0] * NATIVE_SHAPE[1]


def open_text(path: Path) -> io.TextIOBase:
    """Open a CSV, gzip-compressed or plain (decided by its first bytes)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def iter_rows(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, img, rle) for each row after the header; a bad header is a UserError."""
    with open_text(path) as f:
        try:
            header = f.readline().rstrip("\r\n")
            if header != HEADER:
                raise UserError(f"{path} line 1: header is {header[:40]!r}, expected {HEADER!r}")
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                img, _, mask = line.partition(",")
                yield lineno, img, mask
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise UserError(f"{path}: unreadable or truncated file ({e})") from e


@dataclass
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def validate(path: Path, sample_names: list[str], max_problems: int = 50) -> tuple[int, list[Problem]]:
    """Check header, ids (set, count, order) and every RLE; returns (rows, problems)."""
    position = {name: n for n, name in enumerate(sample_names)}
    seen: set[str] = set()
    problems: list[Problem] = []
    rows = 0
    for lineno, img, mask in iter_rows(path):
        rows += 1
        if img not in position:
            problems.append(Problem(lineno, f"{img!r} is not in the sample submission"))
        elif img in seen:
            problems.append(Problem(lineno, f"duplicate id {img}"))
        elif position[img] != rows - 1:
            problems.append(Problem(lineno, f"{img} out of order (sample row {position[img] + 2})"))
        seen.add(img)
        try:
            rle.parse(mask, PIXELS)
        except ValueError as e:
            problems.append(Problem(lineno, f"{img}: {e}"))
        if len(problems) >= max_problems:
            problems.append(Problem(0, f"stopped after {max_problems} problems"))
            return rows, problems
    missing = [n for n in sample_names if n not in seen]
    if missing:
        problems.append(Problem(0, f"{len(missing)} ids of the sample are missing (first: {missing[0]})"))
    return rows, problems


def check_valid(path: Path, names: list[str], shown: Path | None = None) -> int:
    """Validate; raise a one-line UserError when invalid (several problems: listed on stdout first, one a line, so
    stderr keeps its one line). shown: the name the file is for, when `path` is its temporary one."""
    rows, problems = validate(path, names)
    label = shown or path
    if problems:
        for p in problems if len(problems) > 1 else ():
            print(f"{label}: {p}")
        raise UserError(f"{label} is not a valid submission: {len(problems)} problem(s), first: {problems[0]} "
                        f"(nothing was written{' at ' + str(shown) if shown else ''})")
    return rows
