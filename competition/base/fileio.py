"""Atomic file writing: every file the toolkit writes appears complete or not at all."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Callable, Iterator

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
def atomic_open(path: str | os.PathLike, mode: str = "wb", check: Callable[[Path], None] | None = None,
                **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds and, with `check`, once
    check(the complete temporary file) has passed: an invalid result never sits at its final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(Path(tmp))
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


def size_words(path: str | os.PathLike) -> str:
    """A file's size for an error line: "0 bytes", "1234 bytes" ("missing" when it is gone)."""
    try:
        return f"{Path(path).stat().st_size} bytes"
    except OSError:
        return "missing"


def damaged(path: str | os.PathLike, what: str, rebuild: str) -> UserError:
    """The one line for a file the toolkit wrote and cannot read back: which, its size, what is wrong, the fix."""
    return UserError(f"{path} is damaged ({size_words(path)}, {what}): {rebuild}")


def read_json(path: str | os.PathLike, rebuild: str | None = None) -> dict:
    """Read a JSON file; an empty, truncated or corrupt file is one line naming it, its size and `rebuild` (the
    command that makes it again; default: delete or restore it)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        what = "empty" if not Path(path).stat().st_size else f"not valid JSON: {e}"
        raise damaged(path, what, rebuild or "delete it or restore it") from e
    return obj


def check_zip(path: str | os.PathLike, rebuild: str, members: tuple[str, ...] = ()) -> None:
    """A cheap check that `path` is a complete zip (its directory at the end, the `members` named in it) without
    reading its contents: a truncated or empty file, or not a zip, is one line with `rebuild`."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        what = "empty" if not os.path.getsize(path) else "truncated or not a zip"
        raise damaged(path, what, rebuild) from e
    lacking = [m for m in members if m not in names]
    if lacking:
        raise damaged(path, f"a zip without {lacking[0]}", rebuild)


KERAS_MEMBERS = ("config.json", "model.weights.h5")  # what every Keras 3 .keras zip holds


def check_keras(path: str | os.PathLike, rebuild: str) -> None:
    """A .keras file checked to be a complete zip holding a model (cheap: its directory, not a Keras load)."""
    check_zip(path, rebuild, KERAS_MEMBERS)


def zip_intact(path: str | os.PathLike, members: tuple[str, ...] = KERAS_MEMBERS) -> bool:
    """Whether `check_zip` passes (by default: as a .keras model)."""
    try:
        check_zip(path, "", members)
    except UserError:
        return False
    return True


def check_file_out(path: str | os.PathLike, flag: str = "--out", force: bool = False,
                   holds: str = "") -> Path:
    """A file the command will write (--out): its folder can be made and written, it is not a folder, and it is not
    there already unless `force` (holds: what it holds, for the line). Creates nothing."""
    path = Path(path)
    check_folder(path.parent, flag, shown=path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; pass a file name in it")
    if path.exists() and not force:
        raise UserError(f"{flag} {path}: exists{' (' + holds + ')' if holds else ''}; pass another {flag}, or "
                        f"--force to replace it once the new one is complete")
    return path


def check_folder(path: str | os.PathLike, flag: str, shown: str | os.PathLike | None = None) -> Path:
    """A folder the user named (--mirror, --cache, --run, --out's folder) that the command will write into: one
    line when it is a file, or cannot be made (a file or an unwritable folder on the way). Creates nothing.
    shown: what the user typed when it is not the folder itself (--out's file)."""
    path = Path(path)
    label = f"{flag} {path if shown is None else shown}"
    which = "" if shown is None else f"{path} "
    if path.exists() and not path.is_dir():
        raise UserError(f"{label}: {which}is a file, not a folder; pass a folder (or remove the file)")
    probe = path
    while not probe.exists() and probe.parent != probe:
        if probe.is_symlink():
            raise UserError(f"{label}: {probe} is a broken link; pass another folder")
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{label}: cannot be made, {probe} is a file; pass another folder")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{label}: cannot be {'written' if probe == path else 'made'}, {probe} is not writable; "
                        f"pass another folder")
    return path


def copy_file(src: Path, dest: Path) -> Path:
    """Copy one file so that it appears at `dest` complete or not at all."""
    with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return dest


def human(n: float) -> str:
    """Bytes as 1.2 GB (decimal units, as Kaggle shows them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
