"""Kaggle's dice by hand, threshold curves, fold scoring with its pictures, scoring a submission CSV."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from competition.base import rle
from competition.data.layout import open_dataset
from competition.base.errors import UserError
from competition.scoring.metrics import THRESHOLDS, dice, threshold_curve
from competition.scoring.score import cross_validate, score_fold, score_submission


def test_dice_by_hand():
    t = np.zeros((4, 4), np.uint8)
    t[:2, :2] = 1                      # 4 true pixels
    p = np.zeros((4, 4), np.uint8)
    p[:2, 0] = 1                       # 2 of them ...
    p[3, 2:] = 1                       # ... and 2 wrong ones
    assert dice(t, t) == 1.0
    assert dice(t, p) == 2 * 2 / (4 + 4)
    assert dice(np.zeros_like(t), np.zeros_like(t)) == 1.0
    assert dice(np.zeros_like(t), t) == 0.0 and dice(t, np.zeros_like(t)) == 0.0


def test_threshold_curve_matches_direct_dice():
    rng = np.random.default_rng(0)
    native = rng.integers(0, 256, (40, 60)).astype(np.uint8)
    true = (rng.random((40, 60)) < 0.4).astype(np.uint8)
    curve = threshold_curve(native, true)
    for i in (0, 20, 45, 90):
        pred = (native > THRESHOLDS[i] * 255).astype(np.uint8)
        assert curve[i] == pytest.approx(dice(true, pred))


def test_score_fold_writes_scores_pictures_and_report(tiny_run, synth_dir, capsys):
    from competition.cli import main
    assert main(["score", "--run", str(tiny_run), "--fold", "0", "--data", str(synth_dir), "--worst", "3"]) == 0
    out = tiny_run / "fold0"
    s = json.loads((out / "score.json").read_text())
    assert s["images"] == 16 and 0 <= s["dice_mean"] <= 1 and s["tta"] == "hflip"
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("img,car,view,dice") and len(rows) == 17
    per_image = [float(r.split(",")[3]) for r in rows[1:]]
    assert np.mean(per_image) == pytest.approx(s["dice_mean"], abs=1e-5)
    assert set(s["by_view"]) <= {f"{v:02d}" for v in range(1, 17)}
    pictures = sorted((out / "worst").glob("*.png"))
    assert len(pictures) == 3
    img = cv2.imread(str(pictures[0]))
    assert img is not None and img.shape == (640, 959, 3)
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for src in ("curves.png", "hist.png", "views.png", "makes.png", f"worst/{pictures[0].name}"):
        assert f'src="{src}"' in page and (out / src).is_file()
    printed = capsys.readouterr().out
    assert "Kaggle dice" in printed and "article's batch-global" in printed and "report.html" in printed


def _mean_dice_per_threshold(run, synth_dir, thresholds) -> np.ndarray:
    """Mean over fold 0's held-out images of the native dice at each threshold, by sorting, not histograms."""
    import csv
    from competition.base.geometry import Geometry
    from competition.inference.predictor import Predictor, load_models
    from competition.inference.upsample import to_native_u8
    from conftest import single_probabilities as probabilities
    cfg, _, models = load_models(run, [0])
    ds = open_dataset(synth_dir)
    ids = sorted(r["img"][:-4] for r in csv.DictReader(open(run / "folds.csv")) if r["fold"] == "0")
    geom = Geometry(cfg.height, cfg.width, cfg.fit)
    total = np.zeros(len(thresholds))
    for image_id, prob in probabilities(Predictor(models, geom, "none"), ids, ds.read_train_image, ds.where_train, 4):
        native, true = to_native_u8(prob, geom).ravel(), ds.read_mask(image_id).ravel().astype(bool)
        cut = thresholds * 255
        pred = native.size - np.searchsorted(np.sort(native), cut, side="right")   # pixels above each cut
        hits = true.sum() - np.searchsorted(np.sort(native[true]), cut, side="right")
        denom = true.sum() + pred
        total += np.where(denom > 0, 2 * hits / np.maximum(denom, 1), 1.0)
    return total / len(ids)


def test_tuned_threshold_is_the_argmax_and_predict_uses_it(tiny_run, synth_dir, tmp_path, capsys):
    from competition.config import load_config
    from competition.inference.predict import predict
    s = score_fold(tiny_run, 0, str(synth_dir), tta="none", worst=1, tune_threshold=True)
    curve = _mean_dice_per_threshold(tiny_run, synth_dir, THRESHOLDS)
    assert curve.max() - curve.min() > 1e-3  # the threshold matters on this model
    assert s["best_threshold"] == THRESHOLDS[int(np.argmax(curve))]
    assert s["dice_at_best_threshold"] == pytest.approx(curve.max(), abs=1e-9)
    assert load_config(tiny_run / "config.json").threshold == s["best_threshold"]
    assert load_config(tiny_run / "fold0" / "config.json").threshold == s["best_threshold"]
    capsys.readouterr()
    tuned = predict(tiny_run, str(synth_dir), tmp_path / "tuned.csv", tta="none").read_bytes()
    assert f"threshold {s['best_threshold']};" in capsys.readouterr().out
    explicit = predict(tiny_run, str(synth_dir), tmp_path / "explicit.csv", tta="none", threshold=s["best_threshold"])
    assert tuned == explicit.read_bytes()


def test_cv_table(tiny_run, synth_dir):
    text = cross_validate(tiny_run, str(synth_dir), tta="none")
    assert "| 0 | 16 |" in text and "Out-of-fold over all 16 images" in text
    history = pd.read_csv(tiny_run / "fold0" / "history.csv")  # the time each fold trained, from its epochs
    assert f"| {len(history)} epochs, {history['seconds'].sum() / 60:.1f} min |" in text
    assert (tiny_run / "cv.md").read_text() == text
    assert "## Out-of-fold dice by make and model" in text and "## Out-of-fold dice by view" in text
    views = text.split("## Out-of-fold dice by view (worst first)")[1].split("##")[0].strip().splitlines()[2:]
    counts = [line.split(" | ")[1] for line in views]  # | view | images | ...: a count, never "4.0"
    assert counts and all(c.isdigit() for c in counts) and sum(map(int, counts)) == 16, views
    oof = pd.read_csv(tiny_run / "scores.csv")
    assert len(oof) == 16 and set(oof["fold"]) == {0} and {"make", "model", "year", "view"} <= set(oof.columns)
    assert f"Out-of-fold over all 16 images: {oof['dice'].mean():.5f}" in text


def test_cv_tunes_one_threshold_over_every_folds_images(tiny_run, synth_dir):
    """A fold ensemble predicts every test image with one threshold: cv picks it over all held-out images of
    all folds (not one fold's best), and --tune-threshold saves it for predict."""
    import shutil
    from competition.config import load_config
    shutil.copytree(tiny_run / "fold0", tiny_run / "fold1")  # k=2: fold 1 holds out the other 16 images
    text = cross_validate(tiny_run, str(synth_dir), tta="none", tune_threshold=True)
    folds = [json.loads((tiny_run / f"fold{k}" / "score.json").read_text()) for k in (0, 1)]
    assert [f["images"] for f in folds] == [16, 16] and folds[0]["best_threshold"] != folds[1]["best_threshold"]
    best = load_config(tiny_run / "config.json").threshold
    assert best != 0.5

    def over_all_images(t: float) -> float:
        """Mean dice of all 32 held-out images, each fold scored at threshold t."""
        return sum(score_fold(tiny_run, k, str(synth_dir), tta="none", worst=0, threshold=t)["dice_mean"]
                   for k in (0, 1)) / 2
    promised = over_all_images(best)  # what cv.md says it gives is what scoring at it gives
    assert f"Out-of-fold best threshold: {best:.2f} -> {promised:.5f}" in text
    # better over all images than the run's 0.5 and than either fold's own best
    for other in {0.5, *(f["best_threshold"] for f in folds)} - {best}:
        assert over_all_images(other) < promised, other


def test_score_submission_of_true_masks_is_one(synth_dir, tmp_path):
    ds = open_dataset(synth_dir)
    p = tmp_path / "s.csv"
    p.write_text("img,rle_mask\n" + "".join(f"{i}.jpg,{rle.encode(ds.read_mask(i))}\n" for i in ds.train_ids[:5]))
    assert score_submission(p, str(synth_dir)) == {"dice_mean": 1.0, "images": 5}


def test_score_submission_of_imperfect_masks_is_their_exact_mean_dice(synth_dir, tmp_path):
    """Five predictions, each wrong in its own way; the expected score is numpy's dice, image by image."""
    ds = open_dataset(synth_dir)
    ids = ds.train_ids[:5]
    expected, lines = [], []
    for n, image_id in enumerate(ids):
        true = ds.read_mask(image_id).astype(bool)
        pred = true.copy()
        if n == 0:
            pred = np.roll(true, 40, axis=1)          # shifted right
        elif n == 1:
            pred[: true.shape[0] // 2] = False         # top half lost
        elif n == 2:
            pred[600:700, :] = True                    # a band of false positives
        elif n == 3:
            pred[:] = False                            # nothing found
        inter = np.logical_and(true, pred).sum()
        expected.append(2 * inter / (true.sum() + pred.sum()))
        lines.append(f"{image_id}.jpg,{rle.encode(pred.astype(np.uint8))}\n")
    p = tmp_path / "s.csv"
    p.write_text("img,rle_mask\n" + "".join(lines))
    assert expected[4] == 1.0 and expected[3] == 0.0 and all(0.1 < d < 0.99 for d in expected[:3]), expected
    result = score_submission(p, str(synth_dir))
    assert result["images"] == 5 and result["dice_mean"] == pytest.approx(np.mean(expected), abs=1e-12)


def test_score_submission_with_unknown_ids_is_one_line(synth_dir, tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("img,rle_mask\nffffffffffff_01.jpg,1 1\n")
    with pytest.raises(UserError, match="line 2: ffffffffffff_01.jpg is not a training image"):
        score_submission(p, str(synth_dir))
