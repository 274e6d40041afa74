"""The streamed submission: (id, probabilities) items -> RLE rows in sample order, on two threads, into the
resumable `SubmissionWriter`; shards, --time-limit (stop after a chunk) and the closing validation."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from ..progress import bar, say
from ..submission import SubmissionWriter, check_valid
from .predictor import ordered_map


def shard_slice(ids: list[str], shard: tuple[int, int] | None) -> list[str]:
    if shard is None:
        return ids
    i, n = shard
    return ids[len(ids) * i // n: len(ids) * (i + 1) // n]


def shard_path(out: Path, shard: tuple[int, int] | None) -> Path:
    """submissions/x.csv.gz -> submissions/x.shard-0-of-4.csv.gz"""
    if shard is None:
        return out
    name = out.name
    stem, ext = (name[:-7], ".csv.gz") if name.endswith(".csv.gz") else (out.stem, out.suffix)
    return out.with_name(f"{stem}.shard-{shard[0]}-of-{shard[1]}{ext}")


def refine_meta(*refine: str) -> dict:
    """The refinement (each blend member's) in a partial submission's record: absent when all are off, so files
    begun before it existed still resume."""
    return {} if all(r == "none" for r in refine) else {"refine": refine[0] if len(refine) == 1 else list(refine)}


def write_stream(writer: SubmissionWriter, target: Path, stream: Iterable, post: Callable, batch: int, rows: int,
                 all_ids: list[str], time_limit, shard: tuple[int, int] | None, limit: int | None,
                 what: str) -> Path:
    """Turn (id, probabilities) items into RLE rows on two threads, in order, into the writer; stop for
    --time-limit after a chunk; then finish the file and validate it when it holds the whole test set.

    Shared by one run's prediction and a blend's: `post` maps an item to (id, rle string); `what` describes
    the prediction in the closing line."""
    with ThreadPoolExecutor(2, thread_name_prefix="post") as pool, \
            bar(total=rows, initial=writer.done, desc=f"predict {target.name}") as b:
        clock = _ChunkClock(writer, time_limit)
        for image_id, rle_string in ordered_map(pool, post, stream, ahead=2 * batch):
            writer.add(image_id, rle_string)
            b.update()
            if clock.stop():
                break
    if clock.stopped:
        return _stop_for_time(writer, time_limit)
    path = writer.finish()
    if writer.mirror is not None:
        writer.mirror.remove()
    if shard is None and not limit:
        n = check_valid(path, [f"{i}.jpg" for i in all_ids])
        say(f"wrote {path}: {n} rows, {what}; validated against the sample submission")
    else:
        say(f"wrote {path}: {rows} rows" + (f" (shard {shard[0]} of {shard[1]}; join with "
                                             f"`python -m competition merge`)" if shard else ""))
    return path


class _ChunkClock:
    """--time-limit for predict: times each recorded chunk; stop() is True once the next would cross the limit."""

    def __init__(self, writer: SubmissionWriter, deadline):
        import time
        self.writer, self.deadline, self.clock = writer, deadline, time.monotonic
        self.done, self.started, self.stopped = writer.done, self.clock(), False

    def stop(self) -> bool:
        if self.deadline is None or self.writer.done == self.done or self.writer.done == len(self.writer.ids):
            return False  # no limit, mid-chunk (never stop there: the chunks must line up on resume), or done
        now = self.clock()
        self.stopped = self.deadline.step_done(now - self.started)
        self.done, self.started = self.writer.done, now
        return self.stopped


def _stop_for_time(writer: SubmissionWriter, deadline) -> None:
    from ..timelimit import describe
    say(f"stopped {writer.part} after {writer.done} of {len(writer.ids)} rows: another chunk (up to "
        f"{describe(max(deadline.steps))}) would pass the time limit of {describe(deadline.limit)}; "
        f"run the same command again to resume")
    return None
