"""The dataset view: one interface over the layouts a Carvana data root can have.

(a) extracted folders `train_hq/` (or `train/`), `train_masks/`, `test_hq/` (or `test/`) + CSVs;
(b) Kaggle's zips (`train_hq.zip`, `train_masks.zip`, `test_hq.zip`, `*.csv.zip`), read in place;
(c) the competition's input inside a Kaggle kernel, found automatically under /kaggle/input in any of the
    layouts Kaggle mounts it in (see `kaggle_input.find_input`);
(d) a flat folder of `<id>.jpg` + `<id>_mask.gif` pairs with an optional `train_masks.csv`.
Folders win over zips when both are present, so a partial extraction is used where it exists.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import COMPETITION, NATIVE_SHAPE
from ..base import rle
from ..base.errors import DataError, UserError
from ..base.images import jpeg_size
from ..base.masks import read_mask
from ..base.submission_csv import open_text
from .kaggle_input import find_input

ID_PATTERN = re.compile(r"^(?P<car>[0-9A-Za-z]+)_(?P<view>\d{2})$")
LAYOUTS_HELP = ("accepted layouts: extracted train_hq/ (or train/) + train_masks/ + test_hq/; "
                "Kaggle's zips train_hq.zip, train_masks.zip, test_hq.zip; "
                "a flat folder of <id>.jpg + <id>_mask.gif; or, in a Kaggle kernel, the competition under /kaggle/input")


def car_of(image_id: str) -> str:
    """Car id: the part of an image id before the underscore."""
    return image_id.split("_", 1)[0]


def view_of(image_id: str) -> int:
    """View number 1..16 of an image id."""
    return int(image_id.rsplit("_", 1)[1])


def _is_stray(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or "/__MACOSX/" in name or base.startswith(".")


def _id_from(name: str, suffix: str) -> str | None:
    base = name.rsplit("/", 1)[-1]
    if _is_stray(name) or not base.endswith(suffix):
        return None
    stem = base[: -len(suffix)]
    return stem if ID_PATTERN.match(stem) else None


@dataclass
class Source:
    """One kind of file (train images, masks, test images) in a folder or inside a zip."""

    path: Path
    suffix: str
    zip_prefix: str | None = None  # None: a folder; else a zip, members under this prefix
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @property
    def in_zip(self) -> bool:
        return self.zip_prefix is not None

    def _zip(self) -> zipfile.ZipFile:
        zf = getattr(self._local, "zf", None)
        if zf is None:  # one handle per thread: reads from worker threads don't serialise
            zf = self._local.zf = open_zip(self.path)
        return zf

    @cached_property
    def members(self) -> dict[str, str]:
        """id -> file name (in the folder) or member name (in the zip), sorted by id."""
        if self.in_zip:
            names = self._zip().namelist()
        else:
            names = [e.name for e in os.scandir(self.path) if e.is_file()]
        found = {}
        for name in names:
            image_id = _id_from(name, self.suffix)
            if image_id is not None:
                found[image_id] = name
        return dict(sorted(found.items()))

    def ids(self) -> list[str]:
        return list(self.members)

    def where(self, image_id: str) -> str:
        name = self.members.get(image_id, image_id + self.suffix)
        return f"{self.path}:{name}" if self.in_zip else str(self.path / name)

    def stamp(self, image_id: str) -> str:
        """What changes when the file does: its size and modification time (in a folder), its size and CRC (in a
        zip). A mask edited in place, or a photo replaced, gets another stamp."""
        name = self.members.get(image_id)
        if name is None:
            return "missing"
        if self.in_zip:
            info = self._zip().getinfo(name)
            return f"{info.file_size}:{info.CRC}"
        st = os.stat(self.path / name)
        return f"{st.st_size}:{st.st_mtime_ns}"

    def ends(self, image_id: str, n: int = 8192) -> tuple[bytes, bytes]:
        """The first `n` bytes of one file (its header) and its last 64 (where a JPEG ends), without reading the
        middle of a file in a folder (a zip member is read through to its end)."""
        name = self.members.get(image_id)
        if name is None:
            raise DataError(f"{self.where(image_id)}: no such file")
        try:
            opened = open(self.path / name, "rb") if not self.in_zip else self._zip().open(name)
            with opened as f:
                head = f.read(n)
                size = (self.path / name).stat().st_size if not self.in_zip else self._zip().getinfo(name).file_size
                if size > len(head):
                    f.seek(max(len(head), size - 64))
                    return head, f.read()
                return head, head[-64:]
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise DataError(f"{self.where(image_id)}: unreadable ({e})") from e

    def check_photo(self, image_id: str) -> None:
        """A photo checked without decoding it: a 1918x1280 JPEG by its header, its end-of-image marker there (a
        file cut short, a PNG named .jpg, another photo: one line naming it)."""
        head, tail = self.ends(image_id)
        where = self.where(image_id)
        size = jpeg_size(head, where)
        if size != NATIVE_SHAPE:
            raise DataError(f"{where}: a {size[1]}x{size[0]} photo, expected {NATIVE_SHAPE[1]}x{NATIVE_SHAPE[0]}")
        if b"\xff\xd9" not in tail:
            raise DataError(f"{where}: truncated JPEG (no end-of-image marker): download or extract it again")

    def read(self, image_id: str) -> bytes:
        """Bytes of one file; a missing or corrupt one is a ValueError naming it."""
        name = self.members.get(image_id)
        if name is None:
            raise DataError(f"{self.where(image_id)}: no such file")
        if not self.in_zip:
            return (self.path / name).read_bytes()
        try:
            return self._zip().read(name)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise DataError(f"{self.where(image_id)}: corrupt zip member ({e})") from e


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip; a truncated or corrupt one is a UserError naming it."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: truncated or corrupt zip ({e}); download it again") from e


def _unnest(folder: Path, suffix: str) -> Path:
    """The folder, or the one an extraction nested in it (train_hq/train_hq/*.jpg): followed while the folder
    holds no such file and exactly one sub-folder."""
    for _ in range(3):
        with os.scandir(folder) as it:
            entries = list(it)
        if any(e.name.endswith(suffix) and e.is_file() for e in entries):
            return folder
        subdirs = [e for e in entries if e.is_dir() and not e.name.startswith((".", "__MACOSX"))]
        if len(subdirs) != 1:
            return folder
        folder = Path(subdirs[0].path)
    return folder


def _find_source(root: Path, names: tuple[str, ...], suffix: str) -> Source | None:
    for name in names:
        if (root / name).is_dir():
            return Source(_unnest(root / name, suffix), suffix)
    for name in names:
        z = root / f"{name}.zip"
        if z.is_file():
            return Source(z, suffix, zip_prefix=name)
    return None


class Dataset:
    """Read-only view of a Carvana data root in any accepted layout."""

    def __init__(self, root: Path):
        self.root = root
        self.train_images = _find_source(root, ("train_hq", "train"), ".jpg")
        self.train_masks = _find_source(root, ("train_masks",), "_mask.gif")
        self.test_images = _find_source(root, ("test_hq", "test"), ".jpg")
        self.flat = False
        if self.train_images is None and self.test_images is None:
            flat_images = Source(root, ".jpg")
            if flat_images.members:
                self.flat = True
                self.train_images = flat_images
                self.train_masks = Source(root, "_mask.gif")
        if self.train_images is None and self.test_images is None:
            raise UserError(f"{root}: no Carvana images found; {LAYOUTS_HELP}")

    def describe(self) -> str:
        """One line per source: where images, masks and test images come from."""
        def line(label: str, src: Source | None) -> str:
            if src is None:
                return f"  {label:<12} (none)"
            how = f"read in place from {src.path}" if src.in_zip else f"{src.path}"
            return f"  {label:<12} {len(src.members):>6} files, {how}"
        return "\n".join([f"data root {self.root}" + (" (flat folder)" if self.flat else ""),
                          line("train", self.train_images), line("masks", self.train_masks),
                          line("test", self.test_images)])

    # --- CSVs (plain or zipped, as Kaggle ships them) -------------------------------------------
    def csv_text(self, name: str) -> str | None:
        """Text of `name` (e.g. "train_masks.csv") or of `name.zip`; None when neither exists."""
        plain, zipped = self.root / name, self.root / f"{name}.zip"
        if plain.is_file():
            return plain.read_text()
        if zipped.is_file():
            zf = open_zip(zipped)
            members = [n for n in zf.namelist() if not _is_stray(n) and n.endswith(".csv")]
            if not members:
                raise UserError(f"{zipped}: holds no CSV file")
            return zf.read(members[0]).decode("utf-8")
        return None

    @cached_property
    def mask_rles(self) -> dict[str, str]:
        """id -> RLE from train_masks.csv (empty when there is no such file)."""
        text = self.csv_text("train_masks.csv")
        if text is None:
            return {}
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header != ["img", "rle_mask"]:
            raise UserError(f"{self.root}/train_masks.csv: header is {header}, expected img,rle_mask")
        out = {}
        for lineno, row in enumerate(reader, start=2):
            if len(row) != 2 or not row[0].endswith(".jpg"):
                raise UserError(f"{self.root}/train_masks.csv line {lineno}: expected <id>.jpg,<rle>")
            out[row[0][:-4]] = row[1]
        return out

    # --- training images and masks --------------------------------------------------------------
    @cached_property
    def train_ids(self) -> list[str]:
        """Sorted ids of training images that have a mask; an image or mask without partner is an error."""
        if self.train_images is None:
            raise UserError(f"{self.root}: no training images (train_hq/, train_hq.zip or <id>.jpg); {LAYOUTS_HELP}")
        images = set(self.train_images.ids())
        gif_ids = set(self.train_masks.ids()) if self.train_masks else set()
        masked = gif_ids | set(self.mask_rles)
        if not self.flat and self.train_masks is None and not self.mask_rles:
            raise UserError(f"{self.root}: no masks (train_masks/, train_masks.zip or train_masks.csv)")
        no_mask = sorted(images - masked)
        if no_mask:
            raise UserError(f"{self.train_images.where(no_mask[0])}: image has no mask "
                            f"({len(no_mask)} such); add <id>_mask.gif or a train_masks.csv row, or remove it")
        no_image = sorted(gif_ids - images)
        if no_image:
            raise UserError(f"{self.train_masks.where(no_image[0])}: mask has no image "
                            f"({len(no_image)} such); add the JPEG or remove the mask")
        return sorted(images)

    def train_stamp(self, ids: list[str]) -> str:
        """A digest of what the training pairs `ids` are made of: each photo's and mask's stamp (or its
        train_masks.csv row): a cache built from them is stale once any changes."""
        h = hashlib.sha1()
        for image_id in ids:
            mask = (self.train_masks.stamp(image_id) if self.train_masks is not None and image_id in
                    self.train_masks.members else self.mask_rles.get(image_id, ""))
            h.update(f"{image_id}|{self.train_images.stamp(image_id)}|{mask}\n".encode())
        return h.hexdigest()

    def read_train_image(self, image_id: str) -> bytes:
        return self.train_images.read(image_id)

    def read_mask(self, image_id: str, shape: tuple[int, int] = NATIVE_SHAPE) -> np.ndarray:
        """The 0/1 mask of a training image, from its GIF or else from train_masks.csv."""
        if self.train_masks is not None and image_id in self.train_masks.members:
            return read_mask(self.train_masks.read(image_id), self.train_masks.where(image_id), shape)
        if image_id in self.mask_rles:
            try:
                return rle.decode(self.mask_rles[image_id], shape)
            except ValueError as e:
                raise DataError(f"train_masks.csv, {image_id}.jpg: {e}") from e
        raise DataError(f"{image_id}: no mask")

    def where_train(self, image_id: str) -> str:
        return self.train_images.where(image_id)

    # --- test images ----------------------------------------------------------------------------
    @cached_property
    def test_ids(self) -> list[str]:
        """Test ids in sample_submission.csv order (sorted listing when there is no sample)."""
        text = self.csv_text("sample_submission.csv")
        if text is not None:
            return [name[:-4] for name in sample_submission_names(text, self.root / "sample_submission.csv")]
        if self.test_images is None:
            raise UserError(f"{self.root}: no test images (test_hq/ or test_hq.zip) and no sample_submission.csv")
        return self.test_images.ids()

    def read_test_image(self, image_id: str) -> bytes:
        if self.test_images is None:
            raise UserError(f"{self.root}: no test images (test_hq/ or test_hq.zip)")
        return self.test_images.read(image_id)

    def check_test_photos(self, ids: list[str]) -> None:
        """Every test photo `ids` names is there, a whole 1918x1280 JPEG (`Source.check_photo`): checked before a
        prediction starts, so a missing photo or a PNG named .jpg is one line at once, not hours later."""
        if self.test_images is None:
            raise UserError(f"{self.root}: no test images (test_hq/ or test_hq.zip)")
        missing = [i for i in ids if i not in self.test_images.members]
        if missing:
            raise UserError(f"{self.where_test(missing[0])}: no such photo, though the sample submission names it "
                            f"({len(missing)} such): the test set is incomplete; download or extract it again")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.test_images.check_photo, ids))

    def check_train_photos(self, ids: list[str]) -> None:
        """Every training photo of `ids` a whole 1918x1280 JPEG (`Source.check_photo`), checked before a cache is
        built or an epoch starts: a damaged photo is one line before any progress bar."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.train_images.check_photo, ids))

    def where_test(self, image_id: str) -> str:
        return self.test_images.where(image_id) if self.test_images else image_id


def sample_submission_names(text: str, where: Path | str) -> list[str]:
    """`img` column of a sample submission, checked: header img,rle_mask, `<id>.jpg` names, none twice."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "img,rle_mask":
        raise UserError(f"{where}: header is {lines[0] if lines else '(empty)'!r}, expected 'img,rle_mask'")
    names, seen = [], {}
    for lineno, line in enumerate(lines[1:], start=2):
        name = line.split(",", 1)[0]
        if not name.endswith(".jpg") or not ID_PATTERN.match(name[:-4]):
            raise UserError(f"{where} line {lineno}: {name!r} is not an <car>_<NN>.jpg image name")
        if name in seen:
            raise UserError(f"{where} line {lineno}: {name} a second time (line {seen[name]}): the sample submission "
                            f"is damaged; download it again (`python -m competition download --files "
                            f"sample_submission.csv --force`)")
        seen[name] = lineno
        names.append(name)
    return names


def sample_names(sample: Path | None, data: str | None) -> list[str]:
    """The `img` column of the sample submission, from --sample or the data root."""
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


def open_dataset(path: str | os.PathLike | None) -> Dataset:
    """Open a data root; None (or "auto") means the Kaggle competition input when inside a kernel."""
    if path in (None, "", "auto"):
        named = os.environ.get("KAGGLE_ROOT")
        if named and not Path(named).is_dir():
            raise UserError(f"no data root given, and KAGGLE_ROOT={named} is no folder: pass --data DIR, or unset "
                            f"KAGGLE_ROOT (it stands in for /kaggle)")
        found = find_input(COMPETITION)
        if found is not None:
            return Dataset(found)
        raise UserError("no data root given: pass --data DIR (e.g. data/synthetic after `make synth`)")
    root = Path(path)
    if root.is_file():
        raise UserError(f"--data {root}: is a file, not a folder; pass the data root (the folder holding train_hq/ "
                        f"or Kaggle's zips)")
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; run `make synth` for the synthetic dataset or `make data` "
                        f"for Kaggle's; {LAYOUTS_HELP}")
    return Dataset(root)


