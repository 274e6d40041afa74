"""Dataset layouts (folders, zips, Kaggle input, flat), car-grouped folds, the synthetic dataset."""
import csv
import io
import zipfile

import numpy as np
import pytest

from competition.base import rle
from competition.data.folds import assign_folds, folds_csv, read_folds, write_folds
from competition.data.layout import Dataset, car_of, open_dataset
from competition.data.synth import SynthSpec, generate
from competition.base.errors import UserError
from competition.base.images import decode_jpeg
from competition.base.masks import read_mask


def test_flat_fixture_folder(fixtures_dir):
    ds = open_dataset(fixtures_dir)
    assert ds.flat
    assert len(ds.train_ids) == 48 and ds.train_ids == sorted(ds.train_ids)
    assert len({car_of(i) for i in ds.train_ids}) == 12
    assert ds.test_ids[0] == "0004d4463b50_01"  # from sample_submission.csv, in its order
    m = ds.read_mask(ds.train_ids[0])
    assert m.shape == (1280, 1918)


def test_synthetic_folders_have_kaggle_names_and_formats(synth_dir):
    assert (synth_dir / "train_hq").is_dir() and (synth_dir / "train_masks").is_dir()
    ds = open_dataset(synth_dir)
    ids = ds.train_ids
    assert len(ids) == 48 and all(len(car_of(i)) == 12 for i in ids)
    assert {i.split("_")[1] for i in ids} == {f"{v:02d}" for v in range(1, 17)}
    assert (synth_dir / "train_masks" / f"{ids[0]}_mask.gif").is_file()
    rows = dict(csv.reader((synth_dir / "train_masks.csv").read_text().splitlines()))
    for i in ids[:5]:
        gif = read_mask(synth_dir / "train_masks" / f"{i}_mask.gif")
        assert rows[f"{i}.jpg"] == rle.encode(gif)
        assert decode_jpeg((synth_dir / "train_hq" / f"{i}.jpg").read_bytes(), i).shape == (1280, 1918, 3)
    sample = (synth_dir / "sample_submission.csv").read_text().splitlines()
    assert sample[0] == "img,rle_mask" and len(sample) == 9 and all(r.endswith(",1 1") for r in sample[1:])
    assert ds.test_ids == [r.split(",")[0][:-4] for r in sample[1:]]
    meta = (synth_dir / "metadata.csv").read_text().splitlines()
    assert meta[0] == '"id","year","make","model","trim1","trim2"'


def test_synthetic_cars_have_thin_antennas(synth_dir):
    ds = open_dataset(synth_dir)
    m = ds.read_mask(ds.train_ids[0])
    rows = np.flatnonzero(m.any(axis=1))
    top = m[rows[0]:rows[0] + 20]
    widths = top.sum(axis=1)
    assert 1 <= widths.max() <= 6, "the top of the car is a thin (1-3 px, maybe tilted) antenna"
    assert m[rows[0] + 200].sum() > 100, "below it, the car is wide"
    assert 0.03 < m.mean() < 0.4


def test_synth_is_deterministic_and_idempotent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    spec = SynthSpec(cars=1, test=2, seed=5)
    assert generate(a, spec) and generate(b, spec)
    assert not generate(a, spec)  # already there
    for f in ("train_masks.csv", "sample_submission.csv", "metadata.csv"):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_zip_layout_reads_in_place(synth_zip_dir, synth_dir):
    assert not (synth_zip_dir / "train_hq").exists()
    ds = open_dataset(synth_zip_dir)
    assert ds.train_images.in_zip and ds.test_images.in_zip
    assert len(ds.train_ids) == 32 and len(ds.test_ids) == 4
    i = ds.train_ids[3]
    assert decode_jpeg(ds.read_train_image(i), i).shape == (1280, 1918, 3)
    assert ds.read_mask(i).sum() > 0
    assert "read in place" in ds.describe()


def test_zip_with_stray_members(tmp_path, synth_dir):
    src = open_dataset(synth_dir)
    with zipfile.ZipFile(tmp_path / "train_hq.zip", "w") as z:
        for i in src.train_ids[:2]:
            z.writestr(f"train_hq/{i}.jpg", src.read_train_image(i))
        z.writestr("__MACOSX/train_hq/._x_01.jpg", b"junk")
        z.writestr("train_hq/.DS_Store", b"junk")
    with zipfile.ZipFile(tmp_path / "train_masks.zip", "w") as z:
        for i in src.train_ids[:2]:
            z.writestr(f"train_masks/{i}_mask.gif", (synth_dir / "train_masks" / f"{i}_mask.gif").read_bytes())
    ds = open_dataset(tmp_path)
    assert ds.train_ids == src.train_ids[:2]


def test_truncated_zip_is_one_clear_error(tmp_path, synth_zip_dir):
    data = (synth_zip_dir / "train_hq.zip").read_bytes()
    (tmp_path / "train_hq.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="train_hq.zip: truncated or corrupt zip"):
        open_dataset(tmp_path).train_ids


@pytest.mark.parametrize("mount", ["competitions/{slug}", "notebooks/someone/{slug}", "datasets/someone/{slug}",
                                   "{slug}"])
def test_kaggle_input_found_automatically_in_every_mount_layout(monkeypatch, tmp_path, synth_zip_dir, mount):
    from competition import COMPETITION
    where = tmp_path / "input" / mount.format(slug=COMPETITION)
    where.parent.mkdir(parents=True)
    where.symlink_to(synth_zip_dir, target_is_directory=True)
    (tmp_path / "input" / "competitions" / "other-competition").mkdir(parents=True)  # not taken for ours
    monkeypatch.setenv("KAGGLE_ROOT", str(tmp_path))
    assert open_dataset(None).root == where
    monkeypatch.setenv("KAGGLE_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(UserError, match="no data root given"):
        open_dataset(None)


def test_no_layout_and_missing_partners(tmp_path, synth_dir):
    with pytest.raises(UserError, match="no Carvana images found; accepted layouts"):
        open_dataset(tmp_path)
    (tmp_path / "abc_01.jpg").write_bytes((synth_dir / "train_hq" / open_dataset(synth_dir).train_ids[0]).with_suffix(".jpg").read_bytes())
    with pytest.raises(UserError, match="abc_01.jpg: image has no mask"):
        open_dataset(tmp_path).train_ids


def test_mask_from_train_masks_csv_when_no_gif(tmp_path, synth_dir):
    src = open_dataset(synth_dir)
    i = src.train_ids[0]
    (tmp_path / f"{i}.jpg").write_bytes(src.read_train_image(i))
    (tmp_path / "train_masks.csv").write_text(f"img,rle_mask\n{i}.jpg,{rle.encode(src.read_mask(i))}\n")
    ds = open_dataset(tmp_path)
    np.testing.assert_array_equal(ds.read_mask(i), src.read_mask(i))


def test_folds_grouped_balanced_deterministic(fixtures_dir):
    ids = open_dataset(fixtures_dir).train_ids
    f1, f2 = assign_folds(ids, 4, seed=7), assign_folds(ids, 4, seed=7)
    assert f1 == f2
    for car in {car_of(i) for i in ids}:
        assert len({f1[i] for i in ids if car_of(i) == car}) == 1
    sizes = np.bincount(list(f1.values()))
    assert sizes.max() - sizes.min() <= 4


def test_folds_csv_round_trip_and_bad_k(tmp_path, fixtures_dir):
    ids = open_dataset(fixtures_dir).train_ids
    folds = assign_folds(ids, 3)
    write_folds(tmp_path / "folds.csv", folds)
    assert read_folds(tmp_path / "folds.csv") == folds
    assert folds_csv(folds).splitlines()[0] == "img,car,fold"
    for k in (1, 13):
        with pytest.raises(UserError, match="impossible"):
            assign_folds(ids, k)
