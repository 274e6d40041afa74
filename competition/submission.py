"""Submission CSVs: a resumable streaming writer, validation against the sample, shard merging, upload.

The writer appends rows in fixed chunks; with `.gz` each chunk is its own gzip member (a valid
multi-member gzip file), so an interrupted run truncates back to the last recorded chunk and
continues, producing the same bytes as an uninterrupted run. The final file appears only when
complete, by atomic rename. Beside it, `<out>.json` records what made it (run, model digests, folds, TTA,
threshold, refinement, shard), so `merge` can refuse shards that were not made the same way.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import NATIVE_SHAPE, rle
from .errors import UserError
from .fileio import atomic_open, damaged, read_json, write_json
from .progress import say

HEADER = "img,rle_mask"
CHUNK_ROWS = 64  # rows per appended chunk (and per gzip member); progress is recorded per chunk
PIXELS = NATIVE_SHAPE[0] * NATIVE_SHAPE[1]


# Settings that may differ between the shards of one submission: where each sits, and bookkeeping.
SHARD_KEYS = frozenset({"shard", "ids", "rows_total", "chunk_rows"})


def made_path(out: Path) -> Path:
    """submissions/x.csv.gz -> submissions/x.csv.gz.json: the record of what made a finished submission."""
    return out.with_name(out.name + ".json")


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
            from .mirror import PartMirror
            self.mirror = PartMirror(self.part, self.record, mirror)
            if self.done:
                self.mirror.sync(self.bytes, self.record.read_text())

    def _read_record(self) -> dict:
        """The partial prediction's progress record, checked against its part file: a damaged pair is one line."""
        again = f"delete it and {self.part.name}, and predict again (the rows are predicted from the start)"
        rec = read_json(self.record, again)
        try:
            rows, size = int(rec["rows"]), int(rec["bytes"])
        except (KeyError, TypeError, ValueError):
            raise damaged(self.record, "no rows and bytes recorded", again) from None
        if rows < 0 or not 0 <= size <= self.part.stat().st_size:
            raise damaged(self.part, f"shorter than the {size} bytes {self.record.name} records", again)
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

    def finish(self) -> Path:
        """Flush, check completeness, rename the part file onto the output."""
        self.flush()
        if self.done != len(self.ids):
            raise RuntimeError(f"finish() with {self.done} of {len(self.ids)} rows written")
        if not self.ids:
            with open(self.part, "wb") as f:
                text = (HEADER + "\n").encode()
                f.write(gzip.compress(text, mtime=0) if self.gz else text)
        write_json(made_path(self.out), self.meta)  # first: a kill before the rename redoes both on resume
        os.replace(self.part, self.out)
        self.record.unlink(missing_ok=True)
        return self.out


def open_text(path: Path) -> io.TextIOBase:
    """Open a CSV, gzip-compressed or plain (decided by its first bytes)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def iter_rows(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, img, rle) for each row after the header; a bad header is a UserError."""
    with open_text(path) as f:
        try:
            header = f.readline().rstrip("\r\n")
            if header != HEADER:
                raise UserError(f"{path} line 1: header is {header[:40]!r}, expected {HEADER!r}")
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                img, _, mask = line.partition(",")
                yield lineno, img, mask
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise UserError(f"{path}: unreadable or truncated file ({e})") from e


@dataclass
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def validate(path: Path, sample_names: list[str], max_problems: int = 50) -> tuple[int, list[Problem]]:
    """Check header, ids (set, count, order) and every RLE; returns (rows, problems)."""
    position = {name: n for n, name in enumerate(sample_names)}
    seen: set[str] = set()
    problems: list[Problem] = []
    rows = 0
    for lineno, img, mask in iter_rows(path):
        rows += 1
        if img not in position:
            problems.append(Problem(lineno, f"{img!r} is not in the sample submission"))
        elif img in seen:
            problems.append(Problem(lineno, f"duplicate id {img}"))
        elif position[img] != rows - 1:
            problems.append(Problem(lineno, f"{img} out of order (sample row {position[img] + 2})"))
        seen.add(img)
        try:
            rle.parse(mask, PIXELS)
        except ValueError as e:
            problems.append(Problem(lineno, f"{img}: {e}"))
        if len(problems) >= max_problems:
            problems.append(Problem(0, f"stopped after {max_problems} problems"))
            return rows, problems
    missing = [n for n in sample_names if n not in seen]
    if missing:
        problems.append(Problem(0, f"{len(missing)} ids of the sample are missing (first: {missing[0]})"))
    return rows, problems


def sample_names_for(sample: Path | None, data: str | None) -> list[str]:
    """The `img` column of the sample submission, from --sample or the data root."""
    from .data.layout import open_dataset, sample_submission_names
    if sample is not None:
        if not sample.is_file():
            raise UserError(f"{sample}: no such sample submission")
        try:
            with open_text(sample) as f:
                text = f.read()
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise UserError(f"{sample}: unreadable sample submission ({e})") from e
        return sample_submission_names(text, sample)
    return [f"{i}.jpg" for i in open_dataset(data).test_ids]


def check_valid(path: Path, names: list[str]) -> int:
    """Validate; raise a one-line UserError when invalid (several problems: listed on stdout first, one a line, so
    stderr keeps its one line)."""
    rows, problems = validate(path, names)
    if problems:
        for p in problems if len(problems) > 1 else ():
            print(f"{path}: {p}")
        raise UserError(f"{path} is not a valid submission: {len(problems)} problem(s), first: {problems[0]}")
    return rows


def validate_cli(path: Path, sample: Path | None, data: str | None) -> None:
    rows = check_valid(path, sample_names_for(sample, data))
    say(f"{path}: valid ({rows} rows, ids and order match the sample submission, every RLE well formed)")


def merge(parts: list[Path], out: Path, sample: Path | None, data: str | None = None) -> Path:
    """Join shard files (each with a header) into one submission covering the sample exactly once."""
    names = sample_names_for(sample, data)
    position = {n: i for i, n in enumerate(names)}
    firsts = []
    for p in parts:
        first = next(iter_rows(p), None)
        if first is None:
            raise UserError(f"{p}: empty shard (no rows)")
        if first[1] not in position:
            raise UserError(f"{p} line 2: {first[1]!r} is not in the sample submission")
        firsts.append((position[first[1]], p))
    made = same_making(parts)
    seen: set[str] = set()
    with atomic_open(out, "wb") as raw:
        sink = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if out.name.endswith(".gz") else raw
        sink.write((HEADER + "\n").encode())
        for _, p in sorted(firsts):
            for lineno, img, mask in iter_rows(p):
                if img in seen:
                    raise UserError(f"{p} line {lineno}: {img} is also in another shard; shards must not overlap")
                seen.add(img)
                sink.write(f"{img},{mask}\n".encode())
        if sink is not raw:
            sink.close()
        missing = len(names) - len(seen & set(names))
        if missing:
            raise UserError(f"the shards miss {missing} ids of the sample submission; predict the missing shard(s)")
    rows = check_valid(out, names)
    if made is not None:
        write_json(made_path(out), {**{k: v for k, v in made.items() if k not in SHARD_KEYS}, "shards": len(parts)})
    else:
        made_path(out).unlink(missing_ok=True)  # a record left by an earlier merge into the same file
    say(f"merged {len(parts)} shards into {out} ({rows} rows, valid)"
        + ("" if made is not None else "; settings not compared: some shards have no record of what made them"))
    return out


def same_making(parts: list[Path]) -> dict | None:
    """The settings the shards share, read from their `.json` records; a UserError naming the first setting two
    shards differ in (models, folds, TTA, threshold, refinement, ...). None when a shard has no record (made by
    hand or by an older toolkit): then nothing can be compared."""
    if not parts or not all(made_path(p).is_file() for p in parts):
        return None
    records = [(p, comparable(read_made(p))) for p in parts]
    p0, first = records[0]
    for p, rec in records[1:]:
        for key in sorted(set(first) | set(rec)):
            if first.get(key) == rec.get(key):
                continue
            what = ("other models (retrained between the shards?)" if key == "models" else
                    "refiner nets that learnt from other held-out predictions, or another way" if key == "refiner_made"
                    else f"{key}: {rec.get(key)!r} against {first.get(key)!r}")
            raise UserError(f"{p.name} and {p0.name} were not made the same way ({what}); "
                            "predict every shard with the same models and settings")
    return read_made(p0)


def read_made(path: Path) -> dict:
    """A finished submission's record (<file>.json); a damaged one is one line."""
    return read_json(made_path(path), f"predict {path.name} again (or delete the record: what made {path.name} is then "
                                      f"not compared)")


def comparable(record: dict) -> dict:
    """A shard's record less what may differ between shards of one submission. Shards predicted in different
    Kaggle sessions name the same run by other paths: where model digests are recorded, they stand for the run.
    A refiner net is compared by what it learnt from and how (`refiner_made`), not by its bytes: every shard
    kernel trains its own from the same held-out predictions, and two such files never have the same bytes
    (Keras stamps the time it saved one; GPU training is not bit-reproducible either)."""
    out = {k: v for k, v in record.items() if k not in SHARD_KEYS}
    if out.get("refiner_made"):  # each shard kernel trains its refiner: same sources and recipe, other bytes
        out.pop("refiner", None)
    if isinstance(out.get("models"), dict):
        out["models"] = list(out["models"].values())
        out.pop("run", None)
        out.pop("runs", None)
    return out


def made_otherwise(path: Path, tta: str, refine: str | None, folds: list[int] | None) -> str | None:
    """What `path`'s record says it was made with that differs from what is asked (`make submit` predicts again
    then); None when it matches or has no record. refine/folds None: whatever the run's config and folds say."""
    record_path = made_path(path)
    if not record_path.is_file():
        return None
    differs = differences(read_made(path), tta, refine, folds)
    return f"{path} was made with {', '.join(differs)}" if differs else None


def differences(made: dict, tta: str, refine: str | None, folds: list[int] | None) -> list[str]:
    """The settings a record (a finished file's, or a partial one's meta) holds other than these. A blend's
    record holds them member by member: every member's refinement must be `refine`, and `folds` (which only
    members without @FOLDS take) must be some member's."""
    differs = []
    if made.get("tta") != tta:
        differs.append(f"TTA {made.get('tta')}")
    made_refine = made.get("refine") or "none"
    if refine is not None and any(r != refine for r in (made_refine if isinstance(made_refine, list)
                                                         else [made_refine])):
        differs.append(f"refinement {made_refine}")
    made_folds = made.get("folds") or []
    members = made_folds if made_folds and isinstance(made_folds[0], list) else [made_folds]
    if folds is not None and all(sorted(f) != sorted(folds) for f in members):
        differs.append(f"folds {made_folds}")
    return differs


def submit(path: Path, message: str, sample: Path | None, data: str | None) -> None:
    """Validate, then upload through the kaggle package; without credentials the CSV stays put."""
    check_valid(path, sample_names_for(sample, data))
    from .kaggle_api import submit_file
    try:
        submit_file(path, message)
    except UserError as e:
        raise UserError(f"{e} (nothing was submitted; {path} stays where it is)") from e
    say(f"submitted {path}: {message!r}; see your score at "
        "https://www.kaggle.com/competitions/carvana-image-masking-challenge/submissions")
