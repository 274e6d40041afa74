"""`make extract`: plans within a budget, atomic and idempotent extraction, faults — on synthetic zips."""
from __future__ import annotations

import errno
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from competition.cli import main
from competition.data import extract as ex
from competition.data.layout import open_dataset
from competition.base.errors import UserError

ZIPS = ["train_masks.csv.zip", "metadata.csv.zip", "sample_submission.csv.zip", "train_masks.zip",
        "train_hq.zip", "test_hq.zip"]  # the plan's priority order


@pytest.fixture
def data(synth_zip_dir, tmp_path) -> Path:
    """A writable copy of the synthetic Kaggle zips."""
    out = tmp_path / "carvana"
    shutil.copytree(synth_zip_dir, out)
    return out


@pytest.fixture
def copies(monkeypatch) -> list[str]:
    """Names of the members actually written."""
    written: list[str] = []
    real = ex._copy

    def counting(src, dst):
        written.append(Path(dst.name).name)
        real(src, dst)
    monkeypatch.setattr(ex, "_copy", counting)
    return written


def _sizes(data: Path) -> dict[str, int]:
    """Uncompressed size of each zip's members (what extracting it costs)."""
    out = {}
    for name in ZIPS:
        with zipfile.ZipFile(data / name) as zf:
            out[name] = sum(i.file_size for i in zf.infolist() if not i.is_dir())
    return out


def _actions(plan: ex.Extraction) -> dict[str, str]:
    return {i.source.name: i.action for i in plan.items}


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def _same_view(root: Path, reference: Path) -> None:
    """The dataset view of `root` reads exactly what the view of the original zips reads."""
    ds, ref = open_dataset(root), open_dataset(reference)
    assert ds.train_ids == ref.train_ids and ds.test_ids == ref.test_ids
    for image_id in ds.train_ids[::7]:
        assert ds.read_train_image(image_id) == ref.read_train_image(image_id)
        np.testing.assert_array_equal(ds.read_mask(image_id), ref.read_mask(image_id))
    for image_id in ds.test_ids:
        assert ds.read_test_image(image_id) == ref.read_test_image(image_id)
    assert ds.mask_rles == ref.mask_rles


@pytest.mark.parametrize("text, expected", [("20GB", 20 * 10**9), ("500MB", 500 * 10**6), ("1.5G", 1_500_000_000),
                                            ("2GiB", 2 * 2**30), ("123", 123), (" 7 kb ", 7000)])
def test_parse_bytes(text, expected):
    assert ex.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "20 gigs", "-1GB", "1.2.3GB"])
def test_parse_bytes_rejects_nonsense(text):
    with pytest.raises(UserError, match="expected a size like 20GB"):
        ex.parse_bytes(text)


def test_budget_that_fits_all_extracts_everything(data, synth_zip_dir, copies):
    plan = ex.extract(data, budget="1GB", to=None)
    assert list(_actions(plan)) == ZIPS and set(_actions(plan).values()) == {"extract"}
    assert plan.extracted == sum(_sizes(data).values()) and plan.in_place == 0
    for folder in ("train_masks", "train_hq", "test_hq"):
        assert (data / folder).is_dir() and not (data / f"{folder}.partial").exists()
    for csv in ("train_masks.csv", "metadata.csv", "sample_submission.csv"):
        assert (data / csv).is_file()
    ds = open_dataset(data)
    assert not ds.train_images.in_zip and not ds.train_masks.in_zip and not ds.test_images.in_zip
    assert len(copies) == 3 + 32 + 32 + 4
    _same_view(data, synth_zip_dir)
    assert _leftovers(data) == []


def test_budget_that_fits_part_keeps_the_biggest_last_in_its_zip(data, synth_zip_dir, capsys):
    sizes = _sizes(data)
    budget = sum(sizes.values()) - sizes["test_hq.zip"]  # exactly everything but the test images
    plan = ex.extract(data, budget=str(budget), to=None)
    assert _actions(plan)["test_hq.zip"] == "in place"
    assert all(a == "extract" for n, a in _actions(plan).items() if n != "test_hq.zip")
    assert plan.extracted == budget and plan.extracted <= plan.budget
    assert not (data / "test_hq").exists() and (data / "train_hq").is_dir()
    ds = open_dataset(data)
    assert not ds.train_images.in_zip and ds.test_images.in_zip
    _same_view(data, synth_zip_dir)
    table = capsys.readouterr().out
    assert "test_hq.zip" in table and "read in place" in table and f"of {ex.human(budget)}" in table


def test_budget_counts_what_earlier_runs_extracted_and_is_exact_to_the_byte(data, synth_zip_dir):
    sizes = _sizes(data)
    total = sum(sizes.values())
    first = ex.extract(data, budget=str(sum(sizes[n] for n in ZIPS[:4])), to=None)  # CSVs and masks only
    assert [n for n, a in _actions(first).items() if a == "extract"] == ZIPS[:4]
    # one byte short of everything: the 4 zips already extracted count, so only train_hq still fits
    short = ex.extract(data, budget=str(total - 1), to=None)
    assert _actions(short) == {**{n: "done" for n in ZIPS[:4]}, "train_hq.zip": "extract", "test_hq.zip": "in place"}
    assert short.extracted == total - sizes["test_hq.zip"] <= short.budget
    assert not (data / "test_hq").exists()
    exact = ex.extract(data, budget=str(total), to=None)  # exactly everything: test_hq fits to the byte
    assert _actions(exact)["test_hq.zip"] == "extract" and exact.extracted == total == exact.budget
    assert (data / "test_hq").is_dir()
    _same_view(data, synth_zip_dir)


def test_budget_that_fits_none_extracts_nothing(data, synth_zip_dir):
    plan = ex.extract(data, budget="0", to=None)
    assert set(_actions(plan).values()) == {"in place"} and plan.extracted == 0
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in synth_zip_dir.iterdir())
    _same_view(data, synth_zip_dir)


def test_free_disk_limits_the_plan(data, monkeypatch):
    sizes = _sizes(data)
    csvs_and_masks = sum(sizes[n] for n in ZIPS[:4])
    monkeypatch.setattr(ex, "_free", lambda to: ex.RESERVE + csvs_and_masks)
    plan = ex.extract(data, budget=None, to=None, dry_run=True)
    assert [n for n, a in _actions(plan).items() if a == "extract"] == ZIPS[:4]
    assert "free disk" in next(i.note for i in plan.items if i.source.name == "train_hq.zip")


def test_dry_run_prints_the_plan_and_writes_nothing(data, synth_zip_dir, capsys):
    assert main(["extract", "--data", str(data), "--budget", "1GB", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "extraction plan" in out and all(name in out for name in ZIPS)
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in synth_zip_dir.iterdir())


def test_rerun_is_idempotent(data, copies):
    ex.extract(data, budget=None, to=None)
    stamp = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    copies.clear()
    plan = ex.extract(data, budget=None, to=None)
    assert set(_actions(plan).values()) == {"done"} and copies == []
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == stamp


def test_truncated_zip_is_one_line_naming_it(data):
    whole = (data / "train_hq.zip").read_bytes()
    (data / "train_hq.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError) as e:
        ex.extract(data, budget=None, to=None, dry_run=True)
    assert "train_hq.zip" in str(e.value) and "\n" not in str(e.value)
    assert main(["extract", "--data", str(data)]) == 2
    assert not (data / "train_hq").exists() and not (data / "train_masks").exists()  # refused before writing


def test_corrupt_member_fails_the_crc_and_leaves_no_file(data):
    path = data / "test_hq.zip"
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[1]
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[data_start + 5000] ^= 0xFF  # stored member: CRC no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError) as e:
        ex.extract(data, budget=None, to=None)
    assert "test_hq.zip" in str(e.value) and "corrupt member" in str(e.value) and "\n" not in str(e.value)
    bad = Path(info.filename).name
    assert not (data / "test_hq").exists() and not (data / "test_hq.partial" / bad).exists()
    assert _leftovers(data) == []


def test_disk_full_midway_leaves_no_half_written_file_and_resumes(data, synth_zip_dir, monkeypatch):
    real = ex._copy
    calls = []

    def fills_up(src, dst):
        calls.append(1)
        if len(calls) == 3 + 32 + 10:  # 3 CSVs, 32 masks, then the 10th image of train_hq
            dst.write(src.read(1000))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)
    monkeypatch.setattr(ex, "_copy", fills_up)
    with pytest.raises(UserError) as e:
        ex.extract(data, budget=None, to=None)
    line = str(e.value)
    assert "\n" not in line and "disk full" in line and "train_hq.zip" in line and "--budget" in line
    assert _leftovers(data) == []
    assert not (data / "train_hq").exists()  # the view never sees half a folder
    with zipfile.ZipFile(data / "train_hq.zip") as zf:
        sizes = {Path(i.filename).name: i.file_size for i in zf.infolist()}
    partial = list((data / "train_hq.partial").iterdir())
    assert len(partial) == 9  # the 10th was being written when the disk filled
    assert all(p.stat().st_size == sizes[p.name] for p in partial)  # every file there is whole

    monkeypatch.setattr(ex, "_copy", counter := _counter(real))
    plan = ex.extract(data, budget=None, to=None)
    assert [a for a in _actions(plan).values()] == ["done"] * 4 + ["extract"] * 2
    assert len(counter.names) == len(sizes) - len(partial) + 4  # the rest of train_hq, then test_hq
    _same_view(data, synth_zip_dir)


class _counter:
    def __init__(self, real):
        self.real, self.names = real, []

    def __call__(self, src, dst):
        self.names.append(dst.name)
        self.real(src, dst)


def test_kaggle_input_extracts_to_working_with_links_for_the_rest(synth_zip_dir, tmp_path, monkeypatch):
    inputs = tmp_path / "input" / "competitions" / "carvana-image-masking-challenge"  # as API-pushed kernels see it
    shutil.copytree(synth_zip_dir, inputs)
    inputs.chmod(0o555)  # read-only, as /kaggle/input is
    working = tmp_path / "working"
    monkeypatch.setenv("KAGGLE_ROOT", str(tmp_path))
    try:
        default = ex.extract(None, budget=None, to=None, dry_run=True)
        assert default.to == working and default.budget == ex.KAGGLE_BUDGET
        sizes = _sizes(inputs)
        plan = ex.extract(None, budget=str(sum(sizes.values()) - sizes["test_hq.zip"]), to=None)
    finally:
        inputs.chmod(0o755)
    assert _actions(plan)["test_hq.zip"] == "in place"
    assert sorted(p.name for p in inputs.iterdir()) == sorted(p.name for p in synth_zip_dir.iterdir())
    assert (working / "train_hq").is_dir() and (working / "test_hq.zip").is_symlink()
    assert not any(p.name.endswith(".partial") for p in working.iterdir())
    _same_view(working, synth_zip_dir)
