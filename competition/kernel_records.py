"""runs/<run>/kernels.json: the host's record of a run's kernels, so that no GPU hour is lost to a forgotten push.

For each kernel (by slug): its task and fold, every push (the toolkit's push number, Kaggle's version number,
when, whether --fresh), and the latest kernel-state.json seen in its output (which push made it, how far it got).
A re-push embeds that latest state as what the new version must find mounted (`on_kaggle.check_resume`). The
queue of `kernel push --folds all` lives here too, so a stopped `kernel queue` loses nothing. Written atomically.
"""
from __future__ import annotations

import time
from pathlib import Path

from .fileio import read_json, write_json

RECORD_FILE = "kernels.json"


def record_path(run_name: str, runs: Path = Path("runs")) -> Path:
    return runs / run_name / RECORD_FILE


def load(run_name: str, runs: Path = Path("runs")) -> dict:
    """The run's record ({"kernels": {}, "queue": None} when it has none yet)."""
    path = record_path(run_name, runs)
    data = read_json(path) if path.is_file() else {}
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
              fresh: bool, expect: dict | None) -> None:
    """Record one accepted push."""
    kernel = data["kernels"].setdefault(slug, {"ref": ref, "task": task, "fold": fold, "pushes": []})
    kernel["pushes"].append({"push": push, "version": version, "fresh": fresh, "expect": expect,
                             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def note_state(data: dict, slug: str, state: dict | None) -> None:
    """Record the kernel-state.json seen in a kernel's output, when it is newer than the one recorded."""
    if not state or slug not in data["kernels"]:
        return
    seen = data["kernels"][slug].get("state")
    if seen is None or (state.get("push") or 0) >= (seen.get("push") or 0):
        data["kernels"][slug]["state"] = state


def expected_state(data: dict, slug: str) -> dict | None:
    """The latest state known to be in the kernel's output (None: no earlier push is known to have left one)."""
    state = entry(data, slug).get("state")
    if not state:
        return None
    return {"push": state.get("push") or 0, "state": state.get("state"), "progress": state.get("progress") or {}}
