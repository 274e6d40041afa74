"""`--mirror DIR` for training: keep a copy of a fold in progress in a folder that outlives the session (a kernel's
/kaggle/working), so a session killed at any instant leaves the best model so far and a state to resume. Every
copy appears complete or not at all (temporary name, then rename). The partial submission's mirror is the
streamed writer's (inference/writer.py, `PartMirror`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..base.fileio import copy_file
from .resume import BACKUP, LOGS, PLAN, backup_files, is_backup


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
    names = ["config.json", PLAN, "model.keras", "history.csv", "curves.png",
             *(str(p.relative_to(out)) for p in sorted((out / LOGS).glob("*")) if p.is_file())]
    for name in names:
        if (out / name).is_file() and not _same(out / name, dest / name):  # the best model: only when it changed
            copied.append(copy_file(out / name, dest / name))
    backup = backup_files(out)  # the model, then the state.json that names it
    for path in backup:
        copied.append(copy_file(path, dest / path.relative_to(out)))
    if backup:
        for old in (dest / backup[0].relative_to(out)).parent.glob("epoch*.keras"):
            if old.name != backup[0].name:
                old.unlink(missing_ok=True)
    return copied


def mirror_finished_fold(out: Path, dest: Path) -> list[Path]:
    """A finished fold's files (not temporary ones) into `dest`; its mirrored backup is no longer needed."""
    copied = [copy_file(p, dest / p.relative_to(out)) for p in sorted(out.rglob("*"))
              if p.is_file() and not is_backup(p.relative_to(out))
              and not any(part.startswith(".") for part in p.relative_to(out).parts)]
    shutil.rmtree(dest / BACKUP, ignore_errors=True)
    return copied


