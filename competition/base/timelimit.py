"""`--time-limit`: stop long work cleanly before a session's hard cap (Kaggle's 12 hours), resumable.

The decision is a pure function of measured step times (an epoch, a chunk of predicted rows): stop
when the next step, if it takes as long as the slowest one measured so far, would end past the limit.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from .errors import UserError

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str, flag: str = "--time-limit") -> float:
    """Seconds in "11h30m", "45m", "90s", "1h", "2h15m30s" or plain seconds "600"; else a one-line UserError
    naming `flag`."""
    raw = (text or "").strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        seconds = float(raw)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", raw)
        if not parts or "".join(n + u for n, u in parts) != raw or len({u for _, u in parts}) != len(parts):
            raise UserError(f"{flag} {text!r}: expected a duration like 11h30m, 45m, 90s or 2h15m30s")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"{flag} {text!r}: must be more than zero")
    return seconds


def stop_before_next(elapsed: float, step_seconds: list[float], limit: float) -> bool:
    """Whether one more step, as long as the slowest measured, would end after `limit` seconds."""
    return bool(step_seconds) and elapsed + max(step_seconds) > limit


def format_duration(seconds: float) -> str:
    """90 -> "1m30s", 41400 -> "11h30m"."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


@dataclass
class Deadline:
    """A time limit counted from `started` (monotonic clock), with the step times measured so far."""

    limit: float
    started: float = field(default_factory=time.monotonic)
    steps: list[float] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step_done(self, seconds: float) -> bool:
        """Record one step's time; True when the next one should not start."""
        self.steps.append(seconds)
        return stop_before_next(self.elapsed(), self.steps, self.limit)


def deadline(text: str | None) -> Deadline | None:
    """A Deadline from a --time-limit value starting now (None: no limit)."""
    return None if text is None else Deadline(parse_duration(text))


def process_age() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere 0): a budget counts the interpreter's start-up
    and imports too."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
