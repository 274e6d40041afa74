"""Every fold of a run on Kaggle, at most --max-running sessions at a time (Kaggle runs about two GPU batch
sessions at once and refuses a third push: "Maximum batch GPU session count ... reached").

`kernel push --all-folds` records the queue in runs/<run>/kernels.json and pushes the first folds;
`kernel queue` polls (with backoff) and pushes the next fold when one ends, pushes again a fold that stopped
at its time limit (it resumes), retries a push Kaggle refused on a later poll, and stops when every fold is
COMPLETE or only failed ones are left. Stopping and restarting it loses nothing: the queue is the file.
`kernel status --run R` shows every fold's kernel in one table. Builds on `competition.kaggle.kernels`.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..base.console import say
from ..base.errors import UserError
from . import records as kernel_records
from .api import Unanswered, call, get_api, quota
from .kernels import SessionsBusy, poll, push, quota_line
from .machines import ACTIVE, MAX_SESSIONS, session_hours
from .spec import KernelSpec, check_spec, kernel_ref, kernel_slug, preset_folds, resolve_user
from .state import describe_state

BACKOFF = (60.0, 2.0, 900.0)     # first wait (s), factor when nothing changed, longest wait
MAX_RETRIES = 5                  # a fold's push deferred this many passes in a row (Kaggle busy): the queue stops
# Kaggle busy: its sessions at a time in use, or no answer: the same push is tried again after the queue's next
# wait. Anything else (metadata refused, a kernel of another user, no quota) is permanent: the queue stops.
RETRYABLE = (Unanswered, SessionsBusy)


def spec_json(spec: KernelSpec) -> dict:
    """The queue's kernel options as JSON (everything but the fold)."""
    data = dataclasses.asdict(spec)
    data.pop("fold")
    return data


def fold_spec(data: dict, fold: int) -> KernelSpec:
    """The spec of one fold of a queue (the first push of a fold is never --fresh; the queue resumes)."""
    shard = data.get("shard")
    return KernelSpec(**{**data, "shard": tuple(shard) if shard else None, "fresh": False, "resume_from": "self"},
                      fold=fold)


def push_all(spec: KernelSpec, max_running: int = MAX_SESSIONS, out_root: Path = Path("kernels/build"),
             runs: Path = Path("runs"), hours_needed: Callable[[KernelSpec], float] | None = None) -> dict[int, str]:
    """Queue every fold of the run's preset and push the first max_running; returns each fold's state.
    hours_needed: what the folds cost by `plan` (the CLI's estimate), asked once the spec is checked: refused in
    one line, before anything is queued, where it exceeds the week's GPU quota left."""
    if spec.task != "train":
        raise UserError("--all-folds: for train kernels (a predict kernel gathers the folds itself: --folds 0,1,...)")
    if spec.resume_from != "self":
        raise UserError("--all-folds --resume-from dataset: the queue resumes each fold from its own output; push a "
                        "fold from its checkpoint alone (--fold K --resume-from dataset)")
    if max_running < 1:
        raise UserError(f"--max-running {max_running}: at least 1 (Kaggle runs about 2 GPU sessions at a time)")
    check_spec(spec)
    resolve_user(spec.user)
    spec = dataclasses.replace(spec, session_hours=session_hours(spec.session_hours))  # stored, not reread
    records = kernel_records.load(spec.run_name, runs)
    if hours_needed is not None:
        hours, left = hours_needed(spec), quota(get_api())
        if hours > left["left_h"]:
            raise UserError(f"the {preset_folds(spec.preset)} folds of {spec.preset} need about {hours:.1f} "
                            f"GPU hours (`plan`'s estimate) but {left['left_h']:.1f} of your {left['total_h']:.0f} "
                            f"this week are left (it refreshes {left['refresh']}): queue after the refresh, train "
                            f"fewer epochs, or pass --over-quota; nothing was queued")
    records["queue"] = {"spec": spec_json(spec), "folds": list(range(preset_folds(spec.preset))),
                        "max_running": max_running}
    kernel_records.save(spec.run_name, records, runs)
    states = step(spec.run_name, out_root, runs)
    say(f"queued folds {records['queue']['folds']} of run {spec.run_name}, {max_running} at a time: "
        f"`python -m competition kernel queue --run {spec.run_name}` pushes the rest as folds end "
        f"(stop it any time and run it again)")
    return states


def _states(records: dict, api: Any, user: str) -> dict[int, str]:
    """Each queued fold's state now: WAITING (not pushed) or what Kaggle says (TIME_LIMITED included)."""
    queue, states = records["queue"], {}
    for fold in queue["folds"]:
        spec = fold_spec(queue["spec"], fold)
        slug = kernel_slug(spec)
        if not kernel_records.entry(records, slug).get("pushes"):
            states[fold] = "WAITING"
            continue
        state, _, record = poll(api, kernel_ref(spec, user))
        kernel_records.note_state(records, slug, record)
        if state == "TIME_LIMITED" and not resume_saved(api, kernel_ref(spec, user), fold):
            state = "SAVING"  # Kaggle still writing its output: pushed again once the backup is listed there
        states[fold] = state
    return states


def step(run_name: str, out_root: Path = Path("kernels/build"), runs: Path = Path("runs")) -> dict[int, str]:
    """One pass of the queue: ask Kaggle how each pushed fold is, then push waiting (or time-limited) folds while
    fewer than max_running are QUEUED or RUNNING. A refused push stays in the queue for the next pass."""
    records = kernel_records.load(run_name, runs)
    queue = records["queue"]
    if not queue:
        raise UserError(f"run {run_name} has no kernel queue in {kernel_records.record_path(run_name, runs)}: "
                        f"start one with `python -m competition kernel push --all-folds --run {run_name} ...`")
    user = resolve_user(queue["spec"].get("user"))
    states = _states(records, get_api(), user)
    kernel_records.save(run_name, records, runs)
    running = sum(s in ACTIVE for s in states.values())
    retries = queue.setdefault("retries", {})
    for fold in [f for f, s in states.items() if s in ("WAITING", "TIME_LIMITED")]:
        if running >= queue["max_running"]:
            break
        try:
            push(fold_spec(queue["spec"], fold), out_root, runs)
        except RETRYABLE as e:
            tries = retries[str(fold)] = retries.get(str(fold), 0) + 1
            _save_queue(run_name, queue, runs)
            if tries >= MAX_RETRIES:
                raise UserError(f"fold {fold}: its push was deferred {tries} times in a row ({e}); the queue stopped, "
                                f"its state kept: run `python -m competition kernel queue --run {run_name}` again "
                                f"later") from e
            say(f"fold {fold}: push deferred ({e}); try {tries} of {MAX_RETRIES}, after the queue's next wait")
            break
        except UserError as e:
            raise UserError(f"fold {fold}: {e}; the queue stopped, its state kept: mend that, then run `python -m "
                            f"competition kernel queue --run {run_name}` again") from e
        retries.pop(str(fold), None)
        _save_queue(run_name, queue, runs)
        states[fold], running = "PUSHED", running + 1
    return states


def _save_queue(run_name: str, queue: dict, runs: Path) -> None:
    """The queue's state saved into the record as it is on disk now (a push just recorded there is kept)."""
    kernel_records.save(run_name, {**kernel_records.load(run_name, runs), "queue": queue}, runs)


def resume_saved(api: Any, ref: str, fold: int) -> bool:
    """Whether a time-limited fold's output already lists its resumable backup (Kaggle saves an output after the
    session ends: a version pushed before it is there would mount an older one)."""
    with tempfile.TemporaryDirectory() as tmp:
        call(api.kernels_output, ref, tmp, file_pattern=rf"^fold{fold}/backup/state\.json$",
             what=f"looking for the backup in the output of {ref}")
        return (Path(tmp) / f"fold{fold}" / "backup" / "state.json").is_file()


def run_queue(run_name: str, out_root: Path = Path("kernels/build"), runs: Path = Path("runs"),
              sleep: Callable[[float], None] = time.sleep, backoff: tuple[float, float, float] = BACKOFF,
              max_polls: int | None = None) -> dict[int, str]:
    """Pass after pass until every fold is COMPLETE; waits between passes (longer while nothing changes).
    Folds that ended in ERROR or were cancelled are left for a person: a one-line UserError once nothing else
    is left to do. max_polls bounds the passes (None: no bound)."""
    wait, last, polls = backoff[0], None, 0
    while True:
        try:
            states = step(run_name, out_root, runs)
        except Unanswered as e:
            say(f"queue: {e}; asking again later")
            states = last or {}
        polls += 1
        say("queue: " + ", ".join(f"fold {f} {s}" for f, s in states.items()))
        if states and all(s == "COMPLETE" for s in states.values()):
            say(f"queue: every fold of {run_name} is COMPLETE: fetch them with `python -m competition kernel output "
                f"--run {run_name} --fold K` (or `make kernel-output FOLD=K RUN={run_name}`)")
            return states
        if states and not any(s in (*ACTIVE, "PUSHED", "WAITING", "TIME_LIMITED") for s in states.values()):
            failed = [f for f, s in states.items() if s != "COMPLETE"]
            raise UserError(f"queue of {run_name}: folds {failed} ended without finishing (ERROR or cancelled); "
                            f"`python -m competition kernel status --run {run_name}` shows why, push them again "
                            f"(`kernel push --run {run_name} --fold K`), then run `kernel queue` again")
        if max_polls is not None and polls >= max_polls:
            return states
        wait = backoff[0] if states != last else min(wait * backoff[1], backoff[2])
        last = states
        sleep(wait)


def status_table(run_name: str, runs: Path = Path("runs")) -> list[dict]:
    """Print one table of every kernel recorded for the run (queued folds not yet pushed included)."""
    records = kernel_records.load(run_name, runs)
    queue = records["queue"] or {}
    if not records["kernels"] and not queue:
        raise UserError(f"no kernels recorded for run {run_name} in {kernel_records.record_path(run_name, runs)}: "
                        f"push one with `python -m competition kernel push --run {run_name} ...`")
    api, rows = get_api(), []
    by_fold = sorted(records["kernels"].items(), key=lambda kv: (kv[1].get("fold") is None, kv[1].get("fold") or 0))
    for slug, kernel in by_fold:
        state, message, record = poll(api, kernel["ref"])
        kernel_records.note_state(records, slug, record)
        last = kernel["pushes"][-1]
        rows.append({"fold": kernel.get("fold"), "kernel": kernel["ref"], "push": last["push"],
                     "version": last.get("version"), "state": state,
                     "output": describe_state(kernel.get("state")) if kernel.get("state") else "-",
                     "note": message})
    pushed = {row["fold"] for row in rows}
    for fold in queue.get("folds", []):
        if fold not in pushed:
            rows.append({"fold": fold, "kernel": kernel_slug(fold_spec(queue["spec"], fold)), "push": "-",
                         "version": "-", "state": "WAITING", "output": "-", "note": "in the queue"})
    kernel_records.save(run_name, records, runs)
    say(_table(rows))
    try:
        say(quota_line(quota(api)))
    except Unanswered as e:  # the table stands without it
        say(f"GPU quota: not known ({e})")
    return rows


def _table(rows: list[dict]) -> str:
    columns = ["fold", "kernel", "push", "version", "state", "output", "note"]
    cells = [[str("-" if row[c] is None else row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [columns] + cells
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
