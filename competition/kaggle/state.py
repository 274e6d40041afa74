"""kernel-state.json: a kernel's own record, in its output, of how far it got ("running", "time-limited",
"complete"), which run, fold, task, kernel and push made it, and its progress. The kernel writes it
(kaggle/on_kaggle.py); the host reads it to report a kernel's status and to tell the next version what it must find
mounted before it resumes.
"""
from __future__ import annotations

from pathlib import Path

from ..base import records
from ..base.fileio import write_json
from ..base.records import Shape

STATE_FILE = "kernel-state.json"  # in the kernel's output: how far it got (read by `kernel status`)
SHAPE = Shape("a kernel's record of how far it got", required={"state": "str"},
              optional={"detail": "str", "run": ("str", None), "task": ("str", None), "fold": ("count", None),
                        "kernel": ("str", None), "push": ("count", None), "progress": "dict"})


def read_state(path: Path, rebuild: str) -> dict:
    """A kernel-state.json (in a kernel's output, downloaded or mounted), checked: a damaged one is one line."""
    return records.load(path, SHAPE, rebuild)


def state_record(state: str, detail: str = "", settings: dict | None = None, progress: dict | None = None) -> dict:
    """What STATE_FILE holds: the state, and which run, fold, task, kernel and push (version) made it, how far."""
    settings = settings or {}
    record = {"state": state, "detail": detail, "run": settings.get("name"), "task": settings.get("task"),
              "fold": settings.get("fold"), "kernel": settings.get("kernel"), "push": settings.get("push")}
    return {**record, "progress": progress or {}}


def write_kernel_state(working: Path, state: str, detail: str = "", settings: dict | None = None,
                       progress: dict | None = None) -> None:
    """STATE_FILE in the output: "running", "time-limited" or "complete" (what `kernel status` reports), with the
    run, fold, push and progress that the next version checks before it resumes."""
    write_json(working / STATE_FILE, state_record(state, detail, settings, progress))


def describe_state(state: dict | None) -> str:
    """"push 2 (time-limited, epochs 7)" for a STATE_FILE record; "nothing" for None."""
    if state is None:
        return "nothing"
    progress = state.get("progress") or {}
    parts = [f"{k} {v}" + (f" of {progress['of']} planned" if k == "epochs" and "of" in progress else "")
             for k, v in progress.items() if k not in ("finished", "of")]
    how = ", ".join([state.get("state") or "?"] + parts)
    return f"push {state.get('push', '?')} ({how})"
