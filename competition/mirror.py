"""`--mirror DIR`: keep a copy of work in progress in a folder that outlives the session (a kernel's
/kaggle/working), so a session killed at any instant leaves the best model so far and a state to resume.

Every copy appears complete or not at all (temporary name, then rename); the append-only partial
submission is mirrored by appending only the new bytes before its progress record is replaced, so
the mirrored record never claims bytes the mirrored part lacks.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .fileio import atomic_open, write_text


def copy_file(src: Path, dest: Path) -> Path:
    """Copy one file so that it appears at `dest` complete or not at all."""
    with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return dest


def _same(src: Path, dest: Path) -> bool:
    """Whether dest is already a copy of src (same size, written after src was)."""
    try:
        a, b = src.stat(), dest.stat()
    except FileNotFoundError:
        return False
    return a.st_size == b.st_size and b.st_mtime_ns >= a.st_mtime_ns


def mirror_run_files(run_dir: Path, mirror: Path) -> None:
    """The run's own files (config.json, folds.csv) into the mirror."""
    for name in ("config.json", "folds.csv"):
        if (run_dir / name).is_file():
            copy_file(run_dir / name, mirror / name)


def mirror_fold(out: Path, dest: Path) -> list[Path]:
    """A fold's best model.keras, history.csv, curves.png and its backup (model + state.json) into `dest`.

    The backup model is copied before the state.json that names it, and older backups are removed
    only after, so the mirror always holds a state.json whose model is there.
    """
    copied = []
    for name in ("config.json", "model.keras", "history.csv", "curves.png"):
        if (out / name).is_file() and not _same(out / name, dest / name):  # the best model: only when it changed
            copied.append(copy_file(out / name, dest / name))
    state_path = out / "backup" / "state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        model = out / "backup" / state["backup"]
        copied.append(copy_file(model, dest / "backup" / model.name))
        copied.append(copy_file(state_path, dest / "backup" / "state.json"))
        for old in (dest / "backup").glob("epoch*.keras"):
            if old.name != model.name:
                old.unlink(missing_ok=True)
    return copied


def mirror_finished_fold(out: Path, dest: Path) -> list[Path]:
    """A finished fold's files (not temporary ones) into `dest`; its mirrored backup is no longer needed."""
    copied = [copy_file(p, dest / p.relative_to(out)) for p in sorted(out.rglob("*"))
              if p.is_file() and not any(part == "backup" or part.startswith(".") for part in p.relative_to(out).parts)]
    shutil.rmtree(dest / "backup", ignore_errors=True)
    return copied


class PartMirror:
    """Mirrors a SubmissionWriter's `<out>.part` + `<out>.part.json` into a folder as chunks are recorded."""

    def __init__(self, part: Path, record: Path, dest: Path):
        self.part, self.record = part, record
        self.dest_part, self.dest_record = dest / part.name, dest / record.name
        self.synced = -1  # bytes of the mirrored part known to match; -1: not yet synced

    def sync(self, nbytes: int, record_text: str) -> None:
        """Make the mirror hold the first `nbytes` of the part, then its record (`record_text`)."""
        self.dest_part.parent.mkdir(parents=True, exist_ok=True)
        if self.synced < 0 or not self.dest_part.is_file():
            with open(self.part, "rb") as fin, atomic_open(self.dest_part, "wb") as fout:
                fout.write(fin.read(nbytes))
        else:
            with open(self.part, "rb") as fin, open(self.dest_part, "r+b") as fout:
                fin.seek(self.synced)
                fout.truncate(self.synced)  # a tail appended before a kill, never recorded
                fout.seek(self.synced)
                fout.write(fin.read(nbytes - self.synced))
                fout.flush()
                os.fsync(fout.fileno())
        self.synced = nbytes
        write_text(self.dest_record, record_text)

    def remove(self) -> None:
        """The finished submission replaces the partial one: drop the mirrored part and record."""
        self.dest_record.unlink(missing_ok=True)
        self.dest_part.unlink(missing_ok=True)
