"""The streamed submission, in one module: (id, probabilities) items -> RLE rows in sample order, on two threads,
into the resumable `SubmissionWriter`; shards, --time-limit (stop after a chunk), --mirror (`PartMirror`) and the
closing validation.

The writer appends rows in fixed chunks; with `.gz` each chunk is its own gzip member (a valid multi-member gzip
file), so an interrupted run truncates back to the last recorded chunk and continues, producing the same bytes as
an uninterrupted run. The final file appears only when complete, by atomic rename; beside it, `<out>.json` records
what made it (inference/submission.py).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from ..base import records
from ..base.console import bar, say
from ..base.errors import UserError
from ..base.fileio import atomic_open, damaged, write_json, write_text
from ..base.records import Shape
from ..base.submission_csv import HEADER, check_valid
from ..base.timelimit import format_duration
from .predictor import ordered_map
from .submission import made_path


PARTIAL_SHAPE = Shape("a partial prediction's progress", required={"rows": "count", "bytes": "count", "meta": "dict"})
CHUNK_ROWS = 64  # rows per appended chunk (and per gzip member); progress is recorded per chunk


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()


def what_changed(old: dict, new: dict) -> str:
    """The first difference between a partial prediction's settings and this run's, in words."""
    for key, value in new.items():
        was = old.get(key)
        if was == value:
            continue
        if key == "models":
            if not isinstance(was, dict):
                return "by models it did not record (an older version of the toolkit)"
            changed = [k for k in value if was.get(k) != value[k]] or sorted(set(was) - set(value))
            return f"by other models ({changed[0]}/model.keras is not the one that made its rows: retrained?)"
        if key == "ids":
            return "for another list of test images"
        return f"with other settings ({key}: {was!r} there, {value!r} now)"
    return "with other settings"


class SubmissionWriter:
    """Streams `<id>.jpg,<rle>` rows into `<out>.part`; resumes from `<out>.part.json`; renames at the end."""

    def __init__(self, out: Path, ids: list[str], meta: dict, chunk_rows: int | None = None,
                 mirror: Path | None = None):
        chunk_rows = chunk_rows or CHUNK_ROWS
        self.out, self.ids, self.chunk_rows = out, ids, chunk_rows
        self.part = out.with_name(out.name + ".part")
        self.record = out.with_name(out.name + ".part.json")
        self.gz = out.name.endswith(".gz")
        self.meta = {**meta, "ids": ids_digest(ids), "rows_total": len(ids), "chunk_rows": chunk_rows}
        self.pending: list[str] = []
        self.done, self.bytes = 0, 0
        out.parent.mkdir(parents=True, exist_ok=True)
        if self.record.is_file() and self.part.is_file():
            rec = self._read_record()
            if rec.get("meta") != self.meta:
                changed = what_changed(rec.get("meta") or {}, self.meta)
                raise UserError(f"{self.part} is a partial prediction made {changed}; "
                                f"delete it (and {self.record.name}) or pass another --out")
            self.done, self.bytes = int(rec["rows"]), int(rec["bytes"])
            with open(self.part, "r+b") as f:
                f.truncate(self.bytes)  # drop a chunk that was being written when interrupted
        else:
            self.part.unlink(missing_ok=True)
            self.record.unlink(missing_ok=True)
        self.mirror = None  # --mirror: the part and its record copied there as each chunk is recorded
        if mirror is not None:
            self.mirror = PartMirror(self.part, self.record, mirror)
            if self.done:
                self.mirror.sync(self.bytes, self.record.read_text())

    def _read_record(self) -> dict:
        """The partial prediction's progress record, checked against its part file: a damaged pair is one line."""
        again = f"delete it and {self.part.name}, and predict again (the rows are predicted from the start)"
        rec = records.load(self.record, PARTIAL_SHAPE, again)
        rows, size = rec["rows"], rec["bytes"]
        if size > self.part.stat().st_size:
            raise damaged(self.part, f"shorter than the {size} bytes {self.record.name} records", again)
        if rows > len(self.ids):
            raise damaged(self.record, f"{rows} rows recorded of {len(self.ids)}", again)
        return rec

    @property
    def remaining(self) -> list[str]:
        return self.ids[self.done:]

    def add(self, image_id: str, rle_string: str) -> None:
        expected = self.ids[self.done + len(self.pending)]
        if image_id != expected:
            raise RuntimeError(f"rows out of order: got {image_id}, expected {expected}")
        self.pending.append(f"{image_id}.jpg,{rle_string}\n")
        if len(self.pending) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Append the pending rows as one chunk, fsync, then record the progress atomically."""
        if not self.pending:
            return
        text = ("" if self.done else HEADER + "\n") + "".join(self.pending)
        data = text.encode()
        if self.gz:
            data = gzip.compress(data, compresslevel=6, mtime=0)
        try:
            with open(self.part, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise UserError(f"cannot write {self.part} ({e.strerror}); free disk space and rerun: "
                            f"{self.done} rows are kept and will not be predicted again") from e
        self.done += len(self.pending)
        self.bytes += len(data)
        self.pending = []
        write_json(self.record, {"rows": self.done, "bytes": self.bytes, "meta": self.meta})
        if self.mirror is not None:
            self.mirror.sync(self.bytes, self.record.read_text())

    def finish(self, check: Callable[[Path], None] | None = None) -> Path:
        """Flush, check completeness (and, with `check`, the complete part file: an invalid submission never takes
        its name), rename the part file onto the output."""
        self.flush()
        if self.done != len(self.ids):
            raise RuntimeError(f"finish() with {self.done} of {len(self.ids)} rows written")
        if not self.ids:
            with open(self.part, "wb") as f:
                text = (HEADER + "\n").encode()
                f.write(gzip.compress(text, mtime=0) if self.gz else text)
        if check is not None:
            check(self.part)
        write_json(made_path(self.out), self.meta)  # first: a kill before the rename redoes both on resume
        os.replace(self.part, self.out)
        self.record.unlink(missing_ok=True)
        return self.out


class PartMirror:
    """Mirrors a SubmissionWriter's `<out>.part` + `<out>.part.json` into a folder as chunks are recorded."""

    def __init__(self, part: Path, record: Path, dest: Path):
        self.part, self.record = part, record
        self.dest_part, self.dest_record = dest / part.name, dest / record.name
        self.synced = -1  # bytes of the mirrored part known to match; -1: not yet synced

    def sync(self, nbytes: int, record_text: str) -> None:
        """Make the mirror hold the first `nbytes` of the part, then its record (`record_text`)."""
        self.dest_part.parent.mkdir(parents=True, exist_ok=True)
        if self.synced < 0 or not self.dest_part.is_file():
            with open(self.part, "rb") as fin, atomic_open(self.dest_part, "wb") as fout:
                fout.write(fin.read(nbytes))
        else:
            with open(self.part, "rb") as fin, open(self.dest_part, "r+b") as fout:
                fin.seek(self.synced)
                fout.truncate(self.synced)  # a tail appended before a kill, never recorded
                fout.seek(self.synced)
                fout.write(fin.read(nbytes - self.synced))
                fout.flush()
                os.fsync(fout.fileno())
        self.synced = nbytes
        write_text(self.dest_record, record_text)

    def remove(self) -> None:
        """The finished submission replaces the partial one: drop the mirrored part and record."""
        self.dest_record.unlink(missing_ok=True)
        self.dest_part.unlink(missing_ok=True)


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
    whole = shard is None and not limit
    rows_valid: list[int] = []
    path = writer.finish(check=(lambda part: rows_valid.append(check_valid(part, [f"{i}.jpg" for i in all_ids],
                                                                           shown=target))) if whole else None)
    if writer.mirror is not None:
        writer.mirror.remove()
    if whole:
        say(f"wrote {path}: {rows_valid[0]} rows, {what}; validated against the sample submission")
    else:
        say(f"wrote {path}: {rows} rows" + (f" (shard {shard[0]} of {shard[1]}; join with "
                                             f"`python -m competition merge`)" if shard else ""))
    return path


class _ChunkClock:
    """--time-limit for predict: times each recorded chunk; stop() is True once the next would cross the limit."""

    def __init__(self, writer: SubmissionWriter, deadline):
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
    say(f"stopped {writer.part} after {writer.done} of {len(writer.ids)} rows: another chunk (up to "
        f"{format_duration(max(deadline.steps))}) would pass the time limit of {format_duration(deadline.limit)}; "
        f"run the same command again to resume")
    return None
