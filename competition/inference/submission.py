"""A finished submission's record of what made it, and shard merging.

Beside each submission the writer (inference/writer.py) leaves `<out>.json`: the run, model digests, folds, TTA,
threshold, refinement and shard that made it. `merge` joins shards only when their records agree, `made-as` (and
`make submit`) compare a record with the settings asked for, and a kernel drops a restored file made otherwise.
"""
from __future__ import annotations

import gzip
from pathlib import Path

from ..base import records
from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import atomic_open, write_json
from ..base.records import Shape
from ..base.submission_csv import HEADER, check_valid, iter_rows
from ..data.layout import sample_names


# Settings that may differ between the shards of one submission: where each sits, and bookkeeping.
SHARD_KEYS = frozenset({"shard", "ids", "rows_total", "chunk_rows"})


def made_path(out: Path) -> Path:
    """submissions/x.csv.gz -> submissions/x.csv.gz.json: the record of what made a finished submission."""
    return out.with_name(out.name + ".json")


def validate_submission(path: Path, sample: Path | None, data: str | None) -> int:
    """Check a submission against the sample submission (--sample, else the data root's); its rows, or a one-line
    UserError naming the first problem."""
    rows = check_valid(path, sample_names(sample, data))
    say(f"{path}: valid ({rows} rows, ids and order match the sample submission, every RLE well formed)")
    return rows


def merge(parts: list[Path], out: Path, sample: Path | None, data: str | None = None) -> Path:
    """Join shard files (each with a header) into one submission covering the sample exactly once."""
    names = sample_names(sample, data)
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
    rows: list[int] = []

    def checked(tmp: Path) -> None:  # the joined file, complete, before it takes its name
        rows.append(check_valid(tmp, names, shown=out))
        if made is not None:
            write_json(made_path(out), {**{k: v for k, v in made.items() if k not in SHARD_KEYS}, "shards": len(parts)})
        else:
            made_path(out).unlink(missing_ok=True)  # a record left by an earlier merge into the same file

    with atomic_open(out, "wb", check=checked) as raw:
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
    say(f"merged {len(parts)} shards into {out} ({rows[0]} rows, valid)"
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


MADE_SHAPE = Shape("what made a submission", required={"tta": "str"},
                   optional={"folds": "list", "threshold": ("finite", "list"), "run": "str", "runs": "list",
                             "models": ("dict", "list"), "refine": ("str", "list"), "shard": ("list", None),
                             "shards": "count", "ids": "str", "rows_total": "count", "chunk_rows": "count"})


def read_made(path: Path) -> dict:
    """A finished submission's record (<file>.json), checked; a damaged or hand-edited one is one line."""
    return records.load(made_path(path), MADE_SHAPE, f"predict {path.name} again (or delete the record: what made "
                                                     f"{path.name} is then not compared)")


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


