"""When things go wrong: one clear line, exit code 2, nothing lost. Each row of the README's table."""
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from competition import fileio, rle
from competition.data.layout import open_dataset
from competition.data.pipeline import build_cache
from competition.errors import DataError, UserError
from competition.geometry import Geometry
from competition.images import encode_jpeg

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "competition", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# --- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needles", [
    (["train", "--preset", "nope"], ["unknown preset 'nope'"]),
    (["train", "--preset", "tiny", "--size", "33x48"], ["not a multiple of 4", "try 32x48"]),
    (["train", "--preset", "tiny", "--loss", "focal"], ["unknown loss 'focal'"]),
    (["train", "--preset", "tiny", "--fold", "7"], ["--fold 7 is out of range", "k=2"]),
    (["train", "--preset", "tiny", "--data", "/no/such/dir"], ["/no/such/dir: no such folder"]),
    (["predict", "--run", "runs/none", "--out", "x.csv.gz", "--threshold", "1.5", "--data", "."], []),
    (["folds", "--data", "SYNTH", "--k", "1"], ["impossible"]),
])
def test_configuration_errors_are_one_line(args, needles, synth_dir, tmp_path):
    args = [str(synth_dir) if a == "SYNTH" else a for a in args]
    r = cli(*args, cwd=tmp_path)
    assert_one_line_error(r, *needles)


def test_debug_shows_the_traceback(tmp_path):
    r = cli("--debug", "train", "--preset", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_threshold_outside_zero_one(tiny_run, synth_dir, tmp_path):
    r = cli("predict", "--run", str(tiny_run), "--data", str(synth_dir), "--out", str(tmp_path / "x.csv.gz"),
            "--threshold", "1.5")
    assert_one_line_error(r, "threshold 1.5 must be strictly between 0 and 1")


# --- data -----------------------------------------------------------------------------------------
def _copy_flat(synth_dir: Path, dest: Path, n: int = 3) -> list[str]:
    ds = open_dataset(synth_dir)
    ids = ds.train_ids[:n]
    dest.mkdir(parents=True, exist_ok=True)
    for i in ids:
        shutil.copy(synth_dir / "train_hq" / f"{i}.jpg", dest / f"{i}.jpg")
        shutil.copy(synth_dir / "train_masks" / f"{i}_mask.gif", dest / f"{i}_mask.gif")
    return ids


def test_truncated_jpeg_in_training_names_the_file(synth_dir, tmp_path):
    ids = _copy_flat(synth_dir, tmp_path / "d")
    p = tmp_path / "d" / f"{ids[1]}.jpg"
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(DataError, match=f"{ids[1]}.jpg: truncated JPEG"):
        build_cache(open_dataset(tmp_path / "d"), ids, Geometry(32, 48), "area", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("images.npy")), "no cache is published from a failed build"


def test_mask_without_image_and_image_without_mask(synth_dir, tmp_path):
    ids = _copy_flat(synth_dir, tmp_path / "d")
    (tmp_path / "d" / f"{ids[0]}.jpg").unlink()
    with pytest.raises(UserError, match=f"{ids[0]}_mask.gif: mask has no image"):
        open_dataset(tmp_path / "d").train_ids
    ids = _copy_flat(synth_dir, tmp_path / "e")
    (tmp_path / "e" / f"{ids[2]}_mask.gif").unlink()
    with pytest.raises(UserError, match=f"{ids[2]}.jpg: image has no mask"):
        open_dataset(tmp_path / "e").train_ids


def test_test_image_of_unexpected_size(tiny_run, synth_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    first = open_dataset(data).test_ids[0]
    (data / "test_hq" / f"{first}.jpg").write_bytes(encode_jpeg(np.zeros((640, 959, 3), np.uint8)))
    r = cli("predict", "--run", str(tiny_run), "--data", str(data), "--out", str(tmp_path / "s.csv.gz"))
    assert_one_line_error(r, f"{first}.jpg", "expected 1918x1280")
    assert not (tmp_path / "s.csv.gz").exists()


@pytest.mark.parametrize("name, text, needle", [
    ("train_masks.csv", "image,mask\n", "header"),
    ("sample_submission.csv", "img,rle_mask\nnot-an-image,1 1\n", "line 2"),
])
def test_csv_with_bad_header_or_rows(synth_dir, tmp_path, name, text, needle):
    ids = _copy_flat(synth_dir, tmp_path / "d", 1)
    (tmp_path / "d" / name).write_text(text)
    ds = open_dataset(tmp_path / "d")
    with pytest.raises(UserError, match=needle):
        ds.mask_rles if name == "train_masks.csv" else ds.test_ids


def test_submission_csv_with_bad_header_is_one_line(synth_dir, tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("id,mask\n")
    assert_one_line_error(cli("validate", str(p), "--data", str(synth_dir)), "header")


# --- inference ------------------------------------------------------------------------------------
def test_nan_probabilities_name_the_image(synth_dir):
    import keras
    from competition.predict import Predictor, probabilities
    inp = keras.Input((32, 48, 3))
    conv = keras.layers.Conv2D(1, 1)
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.full((1, 1, 3, 1), np.nan, np.float32), np.zeros(1, np.float32)])
    ds = open_dataset(synth_dir)
    with pytest.raises(UserError, match=f"NaN/inf probabilities for .*{ds.test_ids[0]}.jpg"):
        list(probabilities(Predictor([model], Geometry(32, 48), "none"), ds.test_ids[:2], ds.read_test_image,
                           ds.where_test, 2))


def test_disk_full_while_writing_the_submission(tiny_run, synth_dir, tmp_path, monkeypatch):
    from competition import predict as predict_mod, submission
    monkeypatch.setattr(submission, "CHUNK_ROWS", 2)
    real, calls = os.fsync, []

    def full_on_third(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(submission.os, "fsync", full_on_third)
    out = tmp_path / "s.csv.gz"
    with pytest.raises(UserError, match="free disk space and rerun: 2 rows are kept"):
        predict_mod.predict(tiny_run, str(synth_dir), out)
    assert not out.exists()
    monkeypatch.setattr(submission.os, "fsync", real)
    assert predict_mod.predict(tiny_run, str(synth_dir), out).is_file()


def test_atomic_write_leaves_nothing_on_disk_full(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(UserError, match="disk full while writing .*x.json"):
        fileio.write_json(target, {"a": 1})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_gpu_out_of_memory_suggests_a_smaller_batch(synth_dir, tmp_path, monkeypatch):
    import keras
    import tensorflow as tf
    from competition.config import preset
    from competition.train import train

    def oom(self, *a, **k):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(keras.Model, "fit", oom)
    with pytest.raises(UserError, match="out of GPU memory .*try --batch 2 or a smaller --size"):
        train(preset("tiny", k=3), str(synth_dir), tmp_path / "r", 0, tmp_path / "cache")


# --- parsers never fail with anything but ValueError ------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("0123456789 -+x\t\n,.") + ["١", "²"]), max_size=40) | st.text(max_size=30))
def test_rle_decode_fuzz(text):
    try:
        m = rle.decode(text, (8, 8))
    except ValueError:
        return
    assert m.shape == (8, 8) and m.dtype == np.uint8 and m.max(initial=0) <= 1
    assert rle.encode(m) == rle.encode_idiom(m)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=30), max_size=5), st.binary(max_size=40))
def test_validate_fuzz(tmp_path, lines, raw):
    from competition.submission import validate
    p = tmp_path / "fuzz.csv"
    p.write_bytes(("\n".join(["img,rle_mask", *lines]) + "\n").encode("utf-8", "surrogatepass") + raw)
    try:
        rows, problems = validate(p, ["a_01.jpg", "a_02.jpg"])
    except ValueError:
        return
    except UserError:
        return
    assert isinstance(rows, int) and all(str(x) for x in problems)


# --- a training run killed at a random point resumes --------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_training_resumes_to_the_same_final_epoch(synth_dir, tmp_path, sig):
    args = ["train", "--preset", "tiny", "--name", "k", "--epochs", "5", "--patience", "10", "--k", "3",
            "--data", str(synth_dir), "--runs", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "competition", "--quiet", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "runs" / "k" / "fold0" / "backup" / "state.json"
    target = random.Random(int(sig)).randint(1, 3)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and fileio.read_json(state)["epoch"] >= target:
            time.sleep(random.Random(target).random() * 0.5)  # land somewhere inside the next epoch
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(sig)
    proc.wait(30)
    out = tmp_path / "runs" / "k" / "fold0"
    assert not (out / "train.json").exists()
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    import csv
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(x["epoch"]) for x in rows] == [1, 2, 3, 4, 5]
    assert fileio.read_json(out / "train.json")["epochs"] == 5
    import keras
    assert keras.models.load_model(out / "model.keras", compile=False).output_shape == (None, 32, 48, 1)
    assert not list(out.rglob("*.tmp*")), "no temporary files left behind"


def test_cache_that_will_not_fit_the_disk_is_refused_up_front(synth_dir, tmp_path, monkeypatch):
    from competition.data import pipeline
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    ds = open_dataset(synth_dir)
    with pytest.raises(UserError, match=r"cache of 4 images needs .* GB free: .*--cache none"):
        build_cache(ds, ds.train_ids[:4], Geometry(32, 48), "area", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.npy*"))
