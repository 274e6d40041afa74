"""runs/<run>/kernels.json: the host's record of a run's kernels, so that no GPU hour is lost to a forgotten push.

For each kernel (by slug): its task and fold, every push (the toolkit's push number, Kaggle's version number,
when, whether --fresh), the latest kernel-state.json seen in its output (which push made it, how far it got), and
its checkpoint: the private dataset `kernel checkpoint` versioned that output as, how many versions it made and the
state in the latest. A re-push embeds that latest state (or, with --resume-from dataset, the checkpoint's) as what
the new version must find mounted (`on_kaggle.check_resume`). The
queue of `kernel push --all-folds` lives here too, so a stopped `kernel queue` loses nothing. Written atomically.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..base import records
from ..base.fileio import write_json
from ..base.records import ListOf, Shape

RECORD_FILE = "kernels.json"
REBUILD = ("restore it, or move it aside: `python -m competition kernel status` then rebuilds it from Kaggle (each "
           "kernel's versions and the kernel-state.json in their outputs)")


def record_path(run_name: str, runs: Path = Path("runs")) -> Path:
    return runs / run_name / RECORD_FILE


_PUSH = Shape("a push", required={"push": "count"}, optional={"version": ("count", None), "fresh": "bool",
                                                              "expect": ("dict", None), "at": "str",
                                                              "outcome": ("dict", None), "rebuilt": "bool",
                                                              "dry_run": "bool"})
_KERNEL = Shape("a kernel's record", required={"ref": "str", "task": "str", "pushes": ListOf(_PUSH)},
                optional={"fold": ("count", None), "state": ("dict", None), "checkpoint": ("dict", None),
                          "rebuilt": "bool"})
_QUEUE = Shape("the queue", required={"spec": "dict", "folds": ListOf("count"), "max_running": "count"},
               optional={"retries": "dict"})
SHAPE = Shape("a run's kernel record", optional={"kernels": "dict", "queue": (_QUEUE, None)},
              check=lambda r: next((f"kernel {k!r}: {_KERNEL.problem(v)}" for k, v in (r.get("kernels") or {}).items()
                                    if _KERNEL.problem(v)), None))


def load(run_name: str, runs: Path = Path("runs")) -> dict:
    """The run's record ({"kernels": {}, "queue": None} when it has none yet), checked: a damaged, hand-edited or
    foreign one is one line, and nothing is pushed or queued on its strength."""
    path = record_path(run_name, runs)
    data = records.load(path, SHAPE, REBUILD) if path.is_file() else {}
    return {"kernels": data.get("kernels", {}), "queue": data.get("queue")}


def save(run_name: str, data: dict, runs: Path = Path("runs")) -> None:
    write_json(record_path(run_name, runs), data)


def entry(data: dict, slug: str) -> dict:
    """The record of one kernel (empty until its first push)."""
    return data["kernels"].get(slug, {})


def next_push(data: dict, slug: str) -> int:
    """The push number the next push of this kernel gets (1 for the first)."""
    return len(entry(data, slug).get("pushes", [])) + 1


def note_push(data: dict, slug: str, *, ref: str, task: str, fold: int | None, push: int, version: int | None,
              fresh: bool, expect: dict | None, dry_run: bool = False) -> None:
    """Record one accepted push (dry_run: a version saved without a session)."""
    kernel = data["kernels"].setdefault(slug, {"ref": ref, "task": task, "fold": fold, "pushes": []})
    kernel["pushes"].append({"push": push, "version": version, "fresh": fresh, "expect": expect,
                             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             **({"dry_run": True} if dry_run else {})})


USABLE = ("running", "time-limited", "complete")  # states whose output holds what a next version resumes from


def note_state(data: dict, slug: str, state: dict | None) -> None:
    """Record the kernel-state.json seen in a kernel's output: as the outcome of the push that wrote it, and as
    what the next version must find mounted when it is newer than the one recorded and usable (a version that
    stopped before it did anything, a wrong machine or a failed resume check, leaves nothing to resume from)."""
    if not state or slug not in data["kernels"]:
        return
    kernel = data["kernels"][slug]
    for push in kernel["pushes"]:
        if push["push"] == state.get("push"):
            push["outcome"] = state
    if state.get("state") not in USABLE:
        return
    seen = kernel.get("state")
    if seen is None or (state.get("push") or 0) >= (seen.get("push") or 0):
        kernel["state"] = state


def note_outcome(data: dict, slug: str, push: int, outcome: dict) -> None:
    """Record what push `push` left when its output holds no kernel-state.json of its own (it stopped before it
    wrote one): e.g. {"state": "nothing", "detail": "Kaggle's failure message"}."""
    for entry_ in data["kernels"].get(slug, {}).get("pushes", []):
        if entry_["push"] == push and not entry_.get("outcome"):
            entry_["outcome"] = {**outcome, "push": push}


def last_usable(data: dict, slug: str) -> dict | None:
    """The latest push whose output is known to hold something to resume from (its outcome usable, with a version
    number to name it by), or None."""
    for push in reversed(entry(data, slug).get("pushes", [])):
        outcome = push.get("outcome") or {}
        if outcome.get("state") in USABLE and push.get("version"):
            return push
    return None


def rebuild(data: dict, slug: str, *, ref: str, task: str, fold: int | None, state: dict | None) -> None:
    """A kernel Kaggle knows but this record does not (kernels.json deleted, another machine): its entry made again
    from what its latest output says (the push that wrote its kernel-state.json), so a push expects that output."""
    pushes = state.get("push") or 1 if state else 1
    data["kernels"][slug] = {"ref": ref, "task": task, "fold": fold, "rebuilt": True,
                             "pushes": [{"push": n, "version": None, "rebuilt": True} for n in range(1, pushes + 1)]}
    note_state(data, slug, state)


def note_checkpoint(data: dict, slug: str, dataset: str, state: dict) -> int:
    """Record one more version of the kernel's checkpoint dataset, holding `state`; returns its version count."""
    kernel = data["kernels"][slug]
    versions = (kernel.get("checkpoint") or {}).get("versions", 0) + 1
    kernel["checkpoint"] = {"dataset": dataset, "versions": versions, "state": state,
                            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return versions


def checkpoint(data: dict, slug: str) -> dict | None:
    """The kernel's checkpoint record (dataset, versions, state), or None when none was made here."""
    return entry(data, slug).get("checkpoint")


def expected_state(data: dict, slug: str, source: str = "self") -> dict | None:
    """The latest state known to be in the kernel's output, or in its checkpoint dataset (source "dataset");
    None: no earlier push is known to have left one."""
    state = (checkpoint(data, slug) or {}).get("state") if source == "dataset" else entry(data, slug).get("state")
    if not state:
        return None
    return {"push": state.get("push") or 0, "state": state.get("state"), "progress": state.get("progress") or {}}
