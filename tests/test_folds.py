"""Folds through scikit-learn: every car on one side, images balanced, the same folds for the same seed."""
from collections import Counter

import numpy as np
import pytest

from competition.data.folds import assign_folds, folds_csv, read_folds, write_folds
from competition.data.layout import car_of, open_dataset


def _ids(sizes: list[int]) -> list[str]:
    """Image ids of cars with the given numbers of views."""
    return [f"{c:012x}_{v:02d}" for c, n in enumerate(sizes) for v in range(1, n + 1)]


def _check_grouped(folds: dict[str, int]) -> None:
    by_car: dict[str, set[int]] = {}
    for image_id, f in folds.items():
        by_car.setdefault(car_of(image_id), set()).add(f)
    assert all(len(fs) == 1 for fs in by_car.values())


@pytest.mark.parametrize("sizes,k", [([16] * 10, 3), ([16] * 318, 5), ([3, 9, 1, 16, 16, 4, 7, 2, 12, 5], 4)])
def test_grouped_balanced_deterministic(sizes, k):
    ids = _ids(sizes)
    folds = assign_folds(ids, k, seed=3)
    assert set(folds) == set(ids) and set(folds.values()) == set(range(k))
    _check_grouped(folds)
    counts = np.bincount(list(folds.values()), minlength=k)
    assert counts.max() - counts.min() <= max(sizes)  # never more than one car apart
    assert assign_folds(list(reversed(ids)), k, seed=3) == folds  # order of the input does not matter


def test_seed_moves_cars_between_folds():
    ids = _ids([16] * 12)
    per_seed = [tuple(assign_folds(ids, 3, seed=s)[f"{c:012x}_01"] for c in range(12)) for s in range(5)]
    assert len(set(per_seed)) > 1
    for s in per_seed:
        assert sorted(Counter(s).values()) == [4, 4, 4]


def test_real_samples_grouped_and_round_trip(fixtures_dir, tmp_path):
    ids = open_dataset(fixtures_dir).train_ids
    folds = assign_folds(ids, 4, seed=7)
    _check_grouped(folds)
    assert folds == assign_folds(ids, 4, seed=7)
    biggest = max(Counter(car_of(i) for i in ids).values())
    counts = np.bincount(list(folds.values()))
    assert counts.max() - counts.min() <= biggest
    write_folds(tmp_path / "folds.csv", folds)
    text = (tmp_path / "folds.csv").read_text()
    assert text.splitlines()[0] == "img,car,fold" and text == folds_csv(folds)
    assert read_folds(tmp_path / "folds.csv") == folds
