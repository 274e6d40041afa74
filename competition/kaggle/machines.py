"""Kaggle's machines and sessions, as the pinned kaggle 2.2.5 knows them: one table of accelerators (the
`--accelerator` of `kernel`, `plan` and Make's ACCELERATOR), and the facts of a session (its hours, the margins a
kernel keeps, the sessions at a time, the weekly quota, a kernel's states). Used by the kernels, `plan`, the
kernel's own check of the GPUs it got, and the docs; nothing else states them.

Where each fact comes from: kaggle 2.2.5 (`kaggle/api/kaggle_api_extended.py`: `_RETIRED_ACCELERATORS` says the P100
is retired and "Sessions run on the default GPU (NvidiaTeslaT4) instead"; `kaggle/cli.py`'s push help calls
NvidiaTeslaT4 "GPU T4 x2" and names TpuV5E8 the TPU); Kaggle's documentation and kaggle-cli's issues (a GPU batch
session ends at 12 hours without running `finally`, two GPU batch sessions at a time, about 30 GPU hours a week).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from ..base.errors import UserError


@dataclass(frozen=True)
class Accelerator:
    """One `--accelerator` value: what Kaggle is asked for and what the session then has."""

    name: str                   # the toolkit's name for it (--accelerator NAME)
    machine_shape: str | None   # kernel-metadata.json's machine_shape, kernels_push(acc=...) (None: CPU only)
    card: str | None            # costs.facts.CARDS key of its GPU (None: no GPU)
    gpus: int                   # GPUs in one session
    what: str                   # one line for help and the docs
    refused: str = ""           # why the toolkit does not push it, and what to use instead ("" : it does)
    warning: str = ""           # said on stderr when a kernel asks for it


DEFAULT = "t4x2"
ACCELERATORS: dict[str, Accelerator] = {a.name: a for a in (
    Accelerator("t4x2", "NvidiaTeslaT4", "T4", 2, "2x NVIDIA T4 (16 GB each, float16 tensor cores): Kaggle's default "
                                                  "GPU (a single T4 is not offered)"),
    Accelerator("l4", "NvidiaL4", "L4", 1, "NVIDIA L4 (24 GB, bfloat16): only where a competition offers it",
                warning="Kaggle opens the L4 (NvidiaL4) only to some competitions; where it is closed Kaggle may run "
                        "the kernel on another machine, where it stops in its first minute and says which GPUs it got "
                        "(--accept-machine: it trains on them)"),
    Accelerator("none", None, None, 0, "CPU only: no GPU hours spent (a smoke test, a check of the sources)"),
    Accelerator("p100", "NvidiaTeslaP100", "P100", 1, "NVIDIA P100: retired",
                refused="retired by Kaggle: kaggle 2.2.5 lists NvidiaTeslaP100 in _RETIRED_ACCELERATORS and sessions "
                        "that ask for it run on T4 x2 instead; use --accelerator t4x2"),
    Accelerator("tpu", "TpuV5E8", None, 0, "TPU v5e-8: Kaggle's TPU",
                refused="the toolkit trains with TensorFlow's MirroredStrategy on GPUs, not on TPUs; use --accelerator "
                        "t4x2"),
)}
OFFERED = tuple(name for name, a in ACCELERATORS.items() if not a.refused)


def accelerator(text: str, flag: str = "--accelerator") -> Accelerator:
    """The table's entry for an --accelerator value (its name, or Kaggle's machine shape, in any case); a retired,
    unsupported or unknown one is a one-line UserError saying what to use."""
    key = (text or "").strip().lower()
    found = ACCELERATORS.get(key) or next((a for a in ACCELERATORS.values()
                                           if a.machine_shape and a.machine_shape.lower() == key), None)
    if found is None:
        raise UserError(f"unknown {flag} {text!r}: choose one of {', '.join(OFFERED)} "
                        f"({'; '.join(f'{n}: {ACCELERATORS[n].what}' for n in OFFERED)})")
    if found.refused:
        raise UserError(f"{flag} {text}: {found.refused}")
    return found


def warn(name: str) -> None:
    """The accelerator's warning on stderr, if it has one (a kernel about to ask for it)."""
    machine = accelerator(name)
    if machine.warning:
        print(f"warning: {machine.warning}", file=sys.stderr, flush=True)


def accelerator_help() -> str:
    """The choices as help shows them."""
    return " | ".join(f"{n} ({ACCELERATORS[n].what.split(':')[0]})" for n in OFFERED)


def accelerator_table() -> str:
    """The table as docs/kaggle.md shows it (tests/test_kaggle_versions.py keeps the page equal to it)."""
    rows = ["| `--accelerator` (Make: `ACCELERATOR`) | Kaggle's machine shape | GPUs | what it is | the toolkit |",
            "|---|---|---|---|---|"]
    for a in ACCELERATORS.values():
        does = (f"refused: {a.refused}" if a.refused else
                ("the default; " if a.name == DEFAULT else "") + (a.warning or "pushed as asked"))
        rows.append(f"| `{a.name}` | {f'`{a.machine_shape}`' if a.machine_shape else '-'} | {a.gpus} | {a.what} | "
                    f"{does} |")
    return "\n".join(rows)


# --- a session -----------------------------------------------------------------------------------------------------
# Kaggle ends a GPU batch session after 12 hours (its docs' "Notebooks -> Technical specifications"; the kernel
# editor's session panel shows it), without running `finally`; `--session-hours H` (or KAGGLE_SESSION_HOURS)
# overrides it.
SESSION_HOURS = 12.0
# What a kernel keeps of its session for the work after its time-limited step (scoring, copying the output).
TIME_MARGIN_SECONDS = {"train": 40 * 60, "predict": 15 * 60}
MAX_SESSIONS = 2           # GPU batch sessions Kaggle runs at a time for one user (a third push is refused)
WEEKLY_QUOTA_HOURS = 30.0  # Kaggle's weekly GPU quota, about (`kaggle quota` / `kernel quota` has the real figure)
SESSION_CPU_CORES = 4      # CPU cores of a GPU session (documented for T4 x2; assumed for the others)
# A kernel's states (kaggle 2.2.5's KernelWorkerStatus): these have not ended, so the kernel holds a session (or
# will) and has no output to read yet.
ACTIVE = ("QUEUED", "RUNNING", "CANCEL_REQUESTED", "NEW_SCRIPT")


def session_hours(given: float | None = None) -> float:
    """A session's hours: `given` (--session-hours), else KAGGLE_SESSION_HOURS, else Kaggle's 12; a value outside
    0.5..24 or not a number is a one-line UserError."""
    if given is not None:
        hours, where = float(given), f"--session-hours {given}"
    else:
        text = os.environ.get("KAGGLE_SESSION_HOURS", "").strip()
        try:
            hours = float(text) if text else SESSION_HOURS
        except ValueError:
            raise UserError(f"KAGGLE_SESSION_HOURS={text!r}: expected hours, e.g. 12 or 9") from None
        where = f"KAGGLE_SESSION_HOURS={text}"
    if not 0.5 <= hours <= 24 or hours != hours:
        raise UserError(f"{where}: between 0.5 and 24 (Kaggle's GPU sessions: {SESSION_HOURS:g})")
    return hours


def usable_hours(task: str, hours: float | None = None) -> float:
    """Hours of a session that a kernel of `task` gives its time-limited work: the session less its margin."""
    return (session_hours(hours) * 3600 - TIME_MARGIN_SECONDS[task]) / 3600


# A train kernel's `train --budget` (kernel push --budget): a duration (filled), or one of these words; without
# one (DEFAULT_BUDGET) the session is a cap.
BUDGETS = {"session": "what is left of the session, filled",
           "none": "no budget: the preset's epochs, stopped at the session's time limit and resumed by the next push"}
DEFAULT_BUDGET = ("what is left of the session as a cap: the preset's own schedule where it fits, fewer epochs "
                  "planned to end within the session where it does not")


def kernel_budget(budget: str | None, epochs: int | None) -> str | None:
    """A train kernel's budget as it trains: a trial's --epochs without one is "none" (the epochs as given)."""
    return "none" if budget is None and epochs is not None else budget


def budget_args(budget: str | None, epochs: int | None, limit: str) -> list[str]:
    """`train`'s budget options in a train kernel whose session has `limit` left (kernels/train/run.py): none for
    "none" or a trial's --epochs; the session as a cap by default; the session or a duration, filled."""
    budget = kernel_budget(budget, epochs)
    if budget == "none":
        return []
    return ["--budget", limit if budget in (None, "session") else budget] + (["--budget-cap"] if budget is None else [])
