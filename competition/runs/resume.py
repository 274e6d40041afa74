"""The resume protocol of a fold, in one place: what fold<k>/backup/ holds after every epoch and what a rerun of the
same command reads back.

backup/epoch<NNN>.keras is the last epoch's model with its optimizer state; backup/state.json says which epoch it
is, the best monitored value so far, early stopping's count ("wait", and "stopped" once it fired), the learning
rate plateau's counts ("reduce_lr"), the --freeze-encoder phase, and "time_limited" when --time-limit stopped the
fold. A fold is finished when it has train.json (written last); the backup is then deleted.
"""
from __future__ import annotations

from pathlib import Path

from ..base.fileio import read_json, write_json

BACKUP = "backup"
STATE = "state.json"


def state_path(out: Path) -> Path:
    return out / BACKUP / STATE


def read_state(out: Path, rebuild: str | None = None) -> dict:
    """What the last finished epoch left ({} for a fold that never finished one); a damaged state.json is one line
    with `rebuild` (train checks it before it writes anything)."""
    path = state_path(out)
    return read_json(path, rebuild) if path.is_file() else {}


def backup_path(out: Path, epoch: int) -> Path:
    return out / BACKUP / f"epoch{epoch:03d}.keras"


def record_epoch(out: Path, epoch: int, best: float | None, best_epoch: int | None, wait: int, stopped: bool,
                 history: list[dict], phase: str | None) -> None:
    """state.json after epoch `epoch`'s model was saved to `backup_path`; older backups deleted after it."""
    backup = backup_path(out, epoch)
    write_json(state_path(out), {
        "epoch": epoch, "backup": backup.name, "best": best, "best_epoch": best_epoch, "wait": wait,
        "stopped": stopped, "history": history,
        **({"phase": phase} if phase is not None else {})})  # --freeze-encoder: frozen | finetune
    for old in (out / BACKUP).glob("epoch*.keras"):
        if old != backup:
            old.unlink(missing_ok=True)


def record_plateau(out: Path, wait: int, best: float, cooldown: int, lr: float) -> None:
    """ReduceLROnPlateau's counts and the learning rate after this epoch, beside the epoch's state."""
    path = state_path(out)
    if path.is_file():
        write_json(path, {**read_json(path), "reduce_lr": {"wait": wait, "best": best, "cooldown": cooldown,
                                                           "lr": lr}})


def mark_time_limited(out: Path, mirror: Path | None) -> None:
    """The fold stopped for --time-limit: not complete, the same command resumes it."""
    path = state_path(out)
    write_json(path, {**read_json(path), "time_limited": True})
    if mirror is not None:
        from ..base.fileio import copy_file
        copy_file(path, mirror / out.name / BACKUP / STATE)
