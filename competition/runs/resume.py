"""The resume protocol of a fold, in one place: what fold<k>/ holds while it trains and once it is finished, and
what a rerun of the same command reads back. No other module names these files.

backup/epoch<NNN>.keras is the last epoch's model with its optimizer state; backup/state.json says which epoch it
is, the best monitored value so far, early stopping's count ("wait", and "stopped" once it fired), the learning
rate plateau's counts ("reduce_lr"), the --freeze-encoder phase, and "time_limited" when --time-limit stopped the
fold. A fold is finished when it has train.json (its summary, written last); the backup is then deleted.
budget.json is a budgeted fold's plan (`train --budget`: epochs and refiner steps chosen for the time): a resumed
fold keeps it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..base.errors import UserError
from ..base.fileio import copy_file, write_json, zip_intact
from ..base.records import ListOf, Shape, load

BACKUP = "backup"
STATE = "state.json"
SUMMARY = "train.json"
_PLATEAU = Shape("ReduceLROnPlateau's counts", {"wait": "count", "best": "finite", "cooldown": "count",
                                                 "lr": "finite"})
STATE_SHAPE = Shape(
    "a fold's resume state",
    required={"epoch": "count", "backup": "str", "best": ("finite", None), "best_epoch": ("count", None),
              "wait": "count", "stopped": "bool", "history": ListOf("dict")},
    optional={"phase": "str", "reduce_lr": _PLATEAU, "time_limited": "bool"},
    check=lambda s: None if _backup_name(s["backup"]) else f"backup is {s['backup']!r}, not an epoch<NNN>.keras name")
PLAN = "budget.json"
REFINER_REPLANNED = "refiner_replanned_from"  # the refiner's steps planned before they were planned again at its start
LOGS = "logs"  # TensorBoard's event files of the fold's curves (training.callbacks.Curves)
PLAN_SHAPE = Shape("a budgeted fold's plan",
                   required={"budget_s": "finite", "epochs": "count", "refiner_steps": "count", "warmup": "count",
                             "epoch_s": "finite", "refiner_step_s": "finite", "fixed_s": "finite",
                             "planned_s": "finite"},
                   optional={"replanned": "bool", "source": "str", "refiners": "count", "preset_epochs": "count",
                             "preset_steps": "count", "rates": "dict", REFINER_REPLANNED: "count",
                             "cap": "bool"},
                   check=lambda p: None if p["epochs"] >= 1 else "epochs is 0, not at least 1")
SUMMARY_SHAPE = Shape("a finished fold's summary", required={"fold": "count", "epochs": "count"},
                      optional={"best_epoch": ("count", None), "best": ("finite", None), "val_dice": ("finite", None),
                                "val_images": "count"})


def _backup_name(name: str) -> bool:
    return name.startswith("epoch") and name.endswith(".keras") and "/" not in name and "\\" not in name


def train_command(run_dir: Path, fold: int | str) -> str:
    return f"python -m competition train --run {run_dir} --fold {fold} --data DIR"


def retrain(out: Path) -> str:
    """The command that trains fold `out` (fold<k>/) again from nothing."""
    return f"retrain the fold with `{train_command(out.parent, out.name[4:])} --force`"


def state_path(out: Path) -> Path:
    return out / BACKUP / STATE


def read_state(out: Path, rebuild: str | None = None) -> dict:
    """What the last finished epoch left ({} for a fold that never finished one), checked: a damaged or hand-edited
    state.json (an epoch that is not a number, a backup that is not an epoch<NNN>.keras name) is one line with
    `rebuild` (default: retrain the fold), before train deletes or writes anything."""
    path = state_path(out)
    return load(path, STATE_SHAPE, rebuild or retrain(out)) if path.is_file() else {}


def backup_path(out: Path, epoch: int) -> Path:
    return out / BACKUP / f"epoch{epoch:03d}.keras"


def backup_model(out: Path, state: dict) -> Path:
    """The model a state names (backup/epoch<NNN>.keras)."""
    return out / BACKUP / str(state.get("backup"))


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
        write_json(path, {**read_state(out), "reduce_lr": {"wait": wait, "best": best, "cooldown": cooldown,
                                                           "lr": lr}})


def mark_time_limited(out: Path, mirror: Path | None) -> None:
    """The fold stopped for --time-limit: not complete, the same command resumes it."""
    path = state_path(out)
    write_json(path, {**read_state(out), "time_limited": True})
    if mirror is not None:
        copy_file(path, mirror / out.name / BACKUP / STATE)


def intact_backup(out: Path) -> Path | None:
    """fold<k>/backup/epoch<NNN>.keras when its state.json and the model it names read back, else None."""
    try:
        state = read_state(out)
    except (UserError, OSError):
        return None
    backup = backup_model(out, state)
    return backup if state and backup.is_file() and zip_intact(backup) else None


def backup_files(out: Path) -> list[Path]:
    """The backup's files in the order a copy must take them: the model first, then the state.json that names it
    ([] when the fold has no backup)."""
    state = read_state(out)
    return [backup_model(out, state), state_path(out)] if state else []


def is_backup(relative: Path) -> bool:
    """Whether a path inside a fold's folder belongs to its backup (resumable state, not a finished output)."""
    return BACKUP in relative.parts


# --- a finished fold ---------------------------------------------------------------------------------------------
def summary_path(out: Path) -> Path:
    return out / SUMMARY


def is_finished(out: Path) -> bool:
    """Whether the fold finished: its train.json, written last, is there."""
    return summary_path(out).is_file()


def read_summary(out: Path, rebuild: str | None = None) -> dict:
    """A finished fold's train.json, checked; a damaged one is one line with `rebuild` (default: retrain it)."""
    return load(summary_path(out), SUMMARY_SHAPE, rebuild or retrain(out))


def finish(out: Path, summary: dict) -> None:
    """The fold is finished: train.json written last, then the backup deleted."""
    write_json(summary_path(out), summary)
    shutil.rmtree(out / BACKUP, ignore_errors=True)


def progress(out: Path) -> dict:
    """How far a fold got: its finished epochs (train.json when it finished, else the resumable backup's), and a
    budgeted fold's planned epochs ("of")."""
    plan = read_plan(out)
    of = {} if plan is None else {"of": plan["epochs"]}
    if is_finished(out):
        return {"epochs": read_summary(out).get("epochs"), **of, "finished": True}
    return {"epochs": read_state(out).get("epoch", 0), **of, "finished": False}


def missing_to_resume(out: Path) -> str | None:
    """What a fold's folder lacks to resume from (None: nothing): its train.json, or else a state.json and the
    model it names."""
    if is_finished(out):
        return None
    if not state_path(out).is_file():
        return f"{out.name}/{BACKUP}/{STATE} (the resumable backup) nor {out.name}/{SUMMARY}"
    named = read_state(out).get("backup")
    if named and backup_model(out, {"backup": named}).is_file():
        return None
    return f"{out.name}/{BACKUP}/{named or '<model>'}"


def read_plan(out: Path, rebuild: str | None = None) -> dict | None:
    """The fold's budget plan (None: not budgeted), checked: a damaged one is one line."""
    path = out / PLAN
    return load(path, PLAN_SHAPE, rebuild or retrain(out)) if path.is_file() else None


def write_plan(out: Path, plan: dict) -> None:
    """The fold's budget plan, written whole (what a resume keeps)."""
    write_json(out / PLAN, plan)
