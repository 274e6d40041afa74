"""Atomic file writing: every file the toolkit writes appears complete or not at all."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import UserError


TEMP_MARK = ".tmp-"  # in the name of every temporary file the toolkit writes: `.<name>.tmp-<random>[suffix]`


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh temporary name beside `path` that `remove_temps` recognises (suffix: e.g. ".keras" for Keras)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}{suffix}")


def remove_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in `folder` and below; returns them."""
    stale = [p for p in Path(folder).rglob(f".*{TEMP_MARK}*") if p.is_file() or p.is_symlink()]
    for p in stale:
        _remove_quietly(p)
    return stale


def _disk_full_message(path: Path) -> str:
    return (f"disk full while writing {path}: nothing was left half-written; "
            f"free space on {path.parent} (or write elsewhere) and run again")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        if e.errno == errno.ENOSPC:
            raise UserError(_disk_full_message(path)) from e
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8, LF) atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write pretty JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file; a corrupt one is a user error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); delete it or restore it") from e
