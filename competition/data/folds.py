"""Car-grouped K folds: the 16 views of one car are always on the same side of the split."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..base.errors import UserError
from ..base.fileio import damaged, write_text
from .layout import ID_PATTERN, car_of


def assign_folds(image_ids: list[str], k: int, seed: int = 42) -> dict[str, int]:
    """Map image id -> fold 0..k-1, grouped by car, balanced by image count, deterministic for a seed.

    scikit-learn's GroupKFold splits by size: the car with most images goes into the fold with fewest
    so far. The cars are numbered in an order drawn from `seed`, so that ties (every Carvana car has 16
    views) fall differently per seed. (GroupKFold's own shuffle=True cuts the shuffled car list into k
    runs of equal length and ignores how many images each car has.)
    """
    from sklearn.model_selection import GroupKFold  # here: scikit-learn takes seconds to import
    ids = sorted(image_ids)
    cars = sorted({car_of(i) for i in ids})
    if not 2 <= k <= len(cars):
        raise UserError(f"k={k} folds is impossible with {len(cars)} cars: choose 2 <= k <= {len(cars)}")
    rank = {car: r for r, car in enumerate(np.asarray(cars)[np.random.default_rng(seed).permutation(len(cars))])}
    groups = np.array([rank[car_of(i)] for i in ids])
    fold = np.empty(len(ids), dtype=int)
    for f, (_, held_out) in enumerate(GroupKFold(n_splits=k).split(ids, groups=groups)):
        fold[held_out] = f
    return {i: int(f) for i, f in zip(ids, fold)}


def folds_csv(folds: dict[str, int]) -> str:
    """folds.csv text: `img,car,fold` rows sorted by image."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["img", "car", "fold"])
    for image_id, fold in sorted(folds.items()):
        w.writerow([f"{image_id}.jpg", car_of(image_id), fold])
    return buf.getvalue()


def write_folds(path: str | Path, folds: dict[str, int]) -> None:
    """Write folds.csv atomically."""
    write_text(path, folds_csv(folds))


def read_folds(path: str | Path, rebuild: str = "delete it to have it made again") -> dict[str, int]:
    """Read folds.csv back, checked: its header, every row `<car>_<NN>.jpg,<car>,<fold>` with the car of its image,
    no image twice, every car in one fold, folds 0..k-1 each holding images. Whatever is wrong is the damaged-file
    line (which line, what) with `rebuild`."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise damaged(path, f"unreadable ({e})", rebuild) from e
    rows = list(csv.reader(text.splitlines()))
    if not rows or rows[0] != ["img", "car", "fold"]:
        raise damaged(path, "empty" if not rows else f"header {','.join(rows[0])!r}, not img,car,fold", rebuild)
    out: dict[str, int] = {}
    car_fold: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        name = row[0] if row else ""
        image_id = name[:-4]
        if len(row) != 3 or not name.endswith(".jpg") or not ID_PATTERN.match(image_id) or not row[2].isdigit():
            raise damaged(path, f"line {lineno} is {','.join(row)!r}, not <car>_<NN>.jpg,<car>,<fold>", rebuild)
        fold, car = int(row[2]), car_of(image_id)
        if row[1] != car:
            raise damaged(path, f"line {lineno}: {name} is a photo of car {car}, not {row[1]}", rebuild)
        if image_id in out:
            raise damaged(path, f"line {lineno}: {name} a second time", rebuild)
        if car_fold.setdefault(car, fold) != fold:
            raise damaged(path, f"line {lineno}: car {car} in folds {car_fold[car]} and {fold} (a car's photos "
                                f"belong to one fold)", rebuild)
        out[image_id] = fold
    empty = sorted(set(range(num_folds(out))) - set(out.values()))
    if not out or empty:
        raise damaged(path, "no rows" if not out else f"fold {empty[0]} has no images", rebuild)
    return out


def check_fold(fold: int, k: int, owner: str = "this run", flag: str = "--fold") -> None:
    """A one-line UserError unless 0 <= fold < k."""
    if not 0 <= fold < k:
        raise UserError(f"{flag} {fold} is out of range: {owner} has k={k} folds (0..{k - 1})")


def num_folds(folds: dict[str, int]) -> int:
    return max(folds.values()) + 1 if folds else 0
