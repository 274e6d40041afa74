"""Per-image tables joined with metadata.csv: dice by make/model, the worst masks saved for the report,
and the layers reading top-down (scoring never imports the report)."""
import ast
import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.base import rle
from competition.data.layout import car_of, open_dataset, view_of
from competition.scoring.metrics import dice
from competition.scoring.score import score_fold, score_submission
from competition.scoring.tables import breakdown, car_metadata, image_table, read_worst

PACKAGE = Path(__file__).resolve().parents[1] / "competition"


def _makes_by_hand(metadata_csv: Path) -> dict[str, str]:
    with open(metadata_csv, newline="") as f:
        return {r["id"]: r["make"] for r in csv.DictReader(f)}


def _groups_by_hand(dice_of: dict[str, float], make_of_car: dict[str, str]) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for img, d in dice_of.items():
        groups.setdefault(make_of_car[car_of(img[:-4])], []).append(d)
    return groups


def _means_by_hand(dice_of: dict[str, float], make_of_car: dict[str, str]) -> dict[str, tuple[int, float]]:
    return {m: (len(v), sum(v) / len(v)) for m, v in _groups_by_hand(dice_of, make_of_car).items()}


def _shifted_predictions(ds) -> dict[str, np.ndarray]:
    """Each real mask moved right by a number of pixels that depends on its view: different dice per image."""
    return {i: np.roll(ds.read_mask(i), 5 * view_of(i), axis=1) for i in ds.train_ids}


def test_breakdown_by_make_on_the_real_samples(fixtures_dir, tmp_path, capsys):
    ds = open_dataset(fixtures_dir)
    preds = _shifted_predictions(ds)
    dice_of = {f"{i}.jpg": dice(ds.read_mask(i), p) for i, p in preds.items()}
    expected = _means_by_hand(dice_of, _makes_by_hand(fixtures_dir / "metadata.csv"))
    assert len(expected) > 1  # several makes among the samples, or the test proves little

    table = image_table([{"img": k, "dice": v} for k, v in dice_of.items()], car_metadata(ds))
    assert len(table) == len(dice_of) and "unknown" not in set(table["make"])
    got = breakdown(table, "make")
    assert set(got.index) == set(expected)
    for make, (n, mean) in expected.items():
        assert got.loc[make, "images"] == n and got.loc[make, "dice_mean"] == pytest.approx(mean, abs=1e-12)
    for make, values in _groups_by_hand(dice_of, _makes_by_hand(fixtures_dir / "metadata.csv")).items():
        assert got.loc[make, "dice_std"] == pytest.approx(statistics.pstdev(values), abs=1e-12)
        assert got.loc[make, "dice_min"] == min(values)
    assert list(got["dice_mean"]) == sorted(got["dice_mean"])  # worst first

    # the same through the CLI's path: a submission CSV of these predictions, scored against the samples
    sub = tmp_path / "sub.csv"
    sub.write_text("img,rle_mask\n" + "".join(f"{i}.jpg,{rle.encode(p)}\n" for i, p in preds.items()))
    result = score_submission(sub, str(fixtures_dir))
    assert result["images"] == len(preds)
    assert result["dice_mean"] == pytest.approx(np.mean(list(dice_of.values())))
    worst_make = min(expected, key=lambda m: expected[m][1])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "by make" in ln)
    assert line.split("first: ")[1].startswith(f"{worst_make}:{expected[worst_make][1]:.4f}")


def test_metadata_missing_or_partial(tmp_path):
    class NoMeta:
        root = tmp_path

        def csv_text(self, name):
            return None
    table = image_table([{"img": "0cdf5b5d0ce1_01.jpg", "dice": 0.5}], car_metadata(NoMeta()))
    assert table.loc[0, "make"] == "unknown" and table.loc[0, "view"] == 1 and pd.isna(table.loc[0, "year"])


def test_fold_scores_join_metadata_and_keep_the_worst_masks(tiny_run, synth_dir):
    s = score_fold(tiny_run, 0, str(synth_dir), tta="none", worst=2)
    out = tiny_run / "fold0"
    assert json.loads((out / "score.json").read_text()) == s
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"img", "car", "view", "dice", "make", "model", "year"} <= set(rows[0])
    make_of_car = _makes_by_hand(synth_dir / "metadata.csv")
    assert all(r["make"] == make_of_car[r["car"]] for r in rows)
    expected = _means_by_hand({r["img"]: float(r["dice"]) for r in rows}, make_of_car)
    assert set(s["by_make"]) == set(expected)
    for make, (_, mean) in expected.items():
        assert s["by_make"][make] == pytest.approx(mean, abs=1e-6)
    assert list(s["by_make"].values()) == sorted(s["by_make"].values())

    ds = open_dataset(synth_dir)
    saved = read_worst(out)
    lowest = sorted(rows, key=lambda r: float(r["dice"]))[:2]
    assert [i for i, _ in saved] == [r["img"][:-4] for r in lowest] == [w["img"][:-4] for w in s["worst"]]
    for (image_id, mask), r in zip(saved, lowest):  # the saved masks are the predictions that were scored
        assert mask.shape == (1280, 1918) and dice(ds.read_mask(image_id), mask) == pytest.approx(float(r["dice"]),
                                                                                                 abs=1e-6)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
            names.update(f"{'.' * node.level}{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_scoring_never_imports_the_report():
    score_imports = _imported_modules(PACKAGE / "scoring" / "score.py")
    assert not any(n.rsplit(".", 1)[-1] == "report" for n in score_imports), score_imports
    report_imports = _imported_modules(PACKAGE / "scoring" / "report.py")
    assert ".tables" in report_imports  # the report draws what scoring computed and saved (tables.py)
    # ... and predicts nothing itself
    assert not any(n.lstrip(".").split(".")[0] in ("inference", "training", "models") for n in report_imports)
