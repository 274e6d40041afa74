"""`make extract`: unzip what fits a disk budget (planned from the zips' central directories); the rest
is read in place from its zip by the dataset view.

Each zip becomes one folder `<to>/<zip name without .zip>/`, built in `<name>.partial/` and renamed when
complete, so the dataset view never sees half a folder; each member is written to a temporary name and
renamed (CRC checked on read). Priority: CSVs, masks, training images, test images (the biggest last).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .. import COMPETITION
from ..base.console import bar, say
from ..base.errors import UserError
from ..base.fileio import TEMP_MARK, atomic_open, human
from . import layout
from .kaggle_input import find_input, kaggle_root

KAGGLE_BUDGET = 20 * 1000**3          # what a Kaggle notebook may write to /kaggle/working
RESERVE = 256 * 1000**2               # free disk we never plan to use up
# kinds of zips in priority order; within a kind the first name present is the one the view reads
KINDS = (("train_masks",), ("train_hq", "train"), ("test_hq", "test"))
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def kaggle_working() -> Path:
    """/kaggle/working (moved by KAGGLE_ROOT, as every /kaggle path)."""
    return kaggle_root() / "working"


def parse_bytes(text: str) -> int:
    """Bytes in "20GB", "500MB", "1.5G", "2GiB" or "123" (GB = 10^9, GiB = 2^30)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", text or "")
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise UserError(f"budget {text!r}: expected a size like 20GB, 500MB, 1.5G or 2GiB")
    return int(float(m.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class Item:
    """One zip of the data root and what the plan does with it."""

    source: Path        # the zip
    target: Path        # the folder (or CSV file) it becomes
    size: int           # uncompressed bytes of the members written
    present: int        # bytes of those members already at the target
    action: str         # "extract" | "done" | "in place"
    note: str = ""

    @property
    def is_csv(self) -> bool:
        return self.source.name.endswith(".csv.zip")


@dataclass(frozen=True)
class Extraction:
    """What gets extracted where, and what stays read in place, within a budget and the free disk."""

    data: Path
    to: Path
    budget: int | None  # None: only the free disk limits
    free: int
    items: tuple[Item, ...]

    @property
    def extracted(self) -> int:
        return sum(i.size for i in self.items if i.action in ("extract", "done"))

    @property
    def in_place(self) -> int:
        return sum(i.size for i in self.items if i.action == "in place")

    def table(self) -> str:
        """The plan as a table for the user."""
        limit = f"budget {human(self.budget)}" if self.budget is not None else "no budget (free disk only)"
        rows = [f"extraction plan: {self.data} -> {self.to} ({limit}, {human(self.free)} free there)",
                f"  {'zip':<24} {'uncompressed':>12}  action"]
        for i in self.items:
            what = {"extract": f"extract -> {i.target.name}{'' if i.is_csv else '/'}",
                    "done": f"already extracted in {i.target.name}{'' if i.is_csv else '/'}",
                    "in place": "read in place from the zip"}[i.action]
            if i.action == "extract" and i.present:
                what += f" ({human(i.present)} already there)"
            rows.append(f"  {i.source.name:<24} {human(i.size):>12}  {what}{'; ' + i.note if i.note else ''}")
        rows.append(f"  total extracted {human(self.extracted)}"
                    + (f" of {human(self.budget)}" if self.budget is not None else "")
                    + f"; read in place {human(self.in_place)}")
        return "\n".join(rows)


def _members(zf: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    """The files a zip holds, without folders and stray entries (__MACOSX/, dot files)."""
    out = []
    for info in zf.infolist():
        if info.is_dir() or layout._is_stray(info.filename):
            continue
        rel = info.filename.replace("\\", "/")
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UserError(f"{source}: member {info.filename!r} points outside its folder; download the zip again")
        out.append(info)
    return out


def _relative(info: zipfile.ZipInfo, folder: str) -> str:
    """Path of a member inside its folder: `train_hq/x.jpg` -> `x.jpg`."""
    name = info.filename.replace("\\", "/")
    return name[len(folder) + 1:] if name.startswith(folder + "/") else name


def _csv_member(members: list[zipfile.ZipInfo], source: Path) -> zipfile.ZipInfo:
    csvs = [m for m in members if m.filename.endswith(".csv")]
    if not csvs:
        raise UserError(f"{source}: holds no CSV file; download it again")
    return csvs[0]


def _size_ok(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _sources(data: Path) -> list[Path]:
    """The zips of a data root in priority order: CSVs, then one zip per kind the view would read."""
    csvs = sorted(data.glob("*.csv.zip"), key=lambda p: (p.name != "train_masks.csv.zip", p.name))
    zips = []
    for names in KINDS:
        found = next((data / f"{n}.zip" for n in names if (data / f"{n}.zip").is_file()), None)
        if found is not None:
            zips.append(found)
    return csvs + zips


def _target(source: Path, to: Path) -> Path:
    return to / source.name[: -len(".zip")]


def _present(source: Path, target: Path) -> tuple[int, int]:
    """(uncompressed size, bytes already extracted at the target or its .partial folder)."""
    zf = layout.open_zip(source)
    with zf:
        members = _members(zf, source)
        if source.name.endswith(".csv.zip"):
            m = _csv_member(members, source)
            return m.file_size, m.file_size if _size_ok(target, m.file_size) else 0
        size = sum(m.file_size for m in members)
        folder = target if target.is_dir() else _partial(target)
        have = sum(m.file_size for m in members if _size_ok(folder / _relative(m, target.name), m.file_size))
        return size, have


def _partial(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def extraction(data: Path, to: Path, budget: int | None, free: int) -> Extraction:
    """Choose, in priority order, the zips to extract so the total stays within budget and free disk."""
    measured = [(s, _target(s, to), *_present(s, _target(s, to))) for s in _sources(data)]
    done = [(s, t, size) for s, t, size, have in measured if have == size and (t.is_file() or t.is_dir())]
    used = sum(size for *_, size in done)
    left_budget = None if budget is None else budget - used
    left_disk = free - RESERVE
    items = []
    for source, target, size, have in measured:
        if any(s == source for s, *_ in done):
            items.append(Item(source, target, size, have, "done"))
            continue
        need = size - have
        fits_budget = left_budget is None or size <= left_budget
        if fits_budget and need <= left_disk:
            items.append(Item(source, target, size, have, "extract"))
            left_budget = None if left_budget is None else left_budget - size
            left_disk -= need
        else:
            why = (f"needs {human(size)}, {human(max(left_budget, 0))} of the budget left" if not fits_budget
                   else f"needs {human(need)}, {human(max(left_disk, 0))} of free disk usable")
            items.append(Item(source, target, size, have, "in place", why))
    return Extraction(data, to, budget, free, tuple(items))


def _copy(src, dst) -> None:
    """Stream one member into an open file (CRC checked by zipfile at the end)."""
    shutil.copyfileobj(src, dst, 1 << 20)


def _write_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, source: Path) -> None:
    try:
        with zf.open(info) as src, atomic_open(path, "wb") as dst:
            _copy(src, dst)
    except (zipfile.BadZipFile, EOFError, _zlib_error()) as e:
        raise UserError(f"{source}: corrupt member {info.filename} ({e}); download the zip again "
                        f"(nothing was half-written)") from e


def _zlib_error() -> type[Exception]:
    return zlib.error


def _extract_item(item: Item, to: Path) -> None:
    """Extract one zip into its target: a CSV file, or a folder renamed from .partial when complete."""
    zf = layout.open_zip(item.source)
    with zf:
        members = _members(zf, item.source)
        if item.is_csv:
            m = _csv_member(members, item.source)
            if not _size_ok(item.target, m.file_size):
                _write_member(zf, m, item.target, item.source)
            return
        folder = item.target if item.target.is_dir() else _partial(item.target)
        todo = [m for m in members if not _size_ok(folder / _relative(m, item.target.name), m.file_size)]
        with bar(total=sum(m.file_size for m in todo), desc=item.source.name, unit="B", unit_scale=True,
                 unit_divisor=1024) as pbar:
            for m in todo:
                _write_member(zf, m, folder / _relative(m, item.target.name), item.source)
                pbar.update(m.file_size)
        folder.mkdir(parents=True, exist_ok=True)
        if folder != item.target:
            os.replace(folder, item.target)


def _link_in_place(item: Item, to: Path) -> None:
    """When extracting elsewhere, link a zip read in place so `--data <to>` sees every source."""
    link = to / item.source.name
    if link.exists() or link.is_symlink():
        return
    tmp = to / f".{item.source.name}{TEMP_MARK}link"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(item.source.resolve())
        os.replace(tmp, link)
    except OSError as e:
        say(f"note: could not link {item.source} into {to} ({e}); pass --data {item.source.parent} to read it")


def _check_writable(to: Path) -> None:
    probe = to
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserError(f"{to}: cannot write there (read-only?); pass --to a writable folder")


def _free(to: Path) -> int:
    probe = to
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _root(data: Path | None) -> Path:
    if data is None:
        found = find_input(COMPETITION)
        if found is not None:
            return found
        raise UserError("no data root given: pass --data DIR (e.g. data/carvana after `make data`)")
    if not data.is_dir():
        raise UserError(f"{data}: no such folder; run `make data` first or pass --data DIR")
    return data


def _in_kaggle_input(data: Path) -> bool:
    inputs = (kaggle_root() / "input").resolve()
    return data.resolve() == inputs or inputs in data.resolve().parents


def extract(data: Path | None, budget: str | None, to: Path | None, dry_run: bool = False) -> Extraction:
    """Plan, print and (unless dry_run) carry out the extraction of a data root's zips."""
    root = _root(data)
    kaggle = _in_kaggle_input(root)
    to = to or (kaggle_working() if kaggle else root)
    limit = parse_bytes(budget) if budget else (KAGGLE_BUDGET if kaggle else None)
    p = extraction(root, to, limit, _free(to))
    say(p.table())
    if not p.items:
        say(f"{root}: no zips to extract (train_hq.zip, train_masks.zip, test_hq.zip, *.csv.zip)")
    if dry_run:
        return p
    _check_writable(to)
    to.mkdir(parents=True, exist_ok=True)
    for item in p.items:
        if item.action == "extract":
            try:
                _extract_item(item, to)
            except UserError as e:
                if isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOSPC:
                    raise UserError(f"disk full extracting {item.source.name} into {to}: no half-written file "
                                    f"was left; free {human(item.size - item.present)} there or rerun with a "
                                    f"smaller --budget so {item.source.name} is read in place") from e
                raise
            say(f"extracted {item.source.name} -> {item.target}")
        elif item.action == "in place" and to.resolve() != root.resolve():
            _link_in_place(item, to)
    if to.resolve() != root.resolve():
        for csv in root.glob("*.csv"):
            _link_in_place(Item(csv, to / csv.name, 0, 0, "in place"), to)
        say(f"data root for the other commands: --data {to}")
    return p
