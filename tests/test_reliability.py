"""When things go wrong: one clear line, exit code 2, nothing lost. Each row of the README's table."""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from competition.base import fileio, rle
from competition.data.layout import open_dataset
from competition.data.pipeline import build_cache
from competition.base.errors import DataError, UserError
from competition.base.geometry import Geometry
from competition.base.images import encode_jpeg

import forkserver

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI, --quiet (no progress bars on stderr: what is left there is the error)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "competition", "--quiet", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2 and the whole of stderr one line, `error: ...`, holding each needle."""
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error:") and r.stderr.endswith("\n") and r.stderr.count("\n") == 1, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


# --- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needles", [
    (["train", "--preset", "nope"], ["unknown preset 'nope'"]),
    (["train", "--preset", "tiny", "--size", "33x48"], ["not a multiple of 4", "try 32x48"]),
    (["train", "--preset", "tiny", "--loss", "focal"], ["unknown loss 'focal'"]),
    (["train", "--preset", "tiny", "--fold", "7"], ["--fold 7 is out of range", "k=2"]),
    (["train", "--preset", "tiny", "--data", "/no/such/dir"], ["/no/such/dir: no such folder"]),
    (["folds", "--data", "SYNTH", "--k", "1"], ["folds: --k: 1 is not from 2 to 100"]),
])
def test_configuration_errors_are_one_line(args, needles, synth_dir, tmp_path):
    args = [str(synth_dir) if a == "SYNTH" else a for a in args]
    r = cli(*args, cwd=tmp_path)
    assert_one_line_error(r, *needles)


def test_a_configuration_error_never_imports_tensorflow(tmp_path):
    """TensorFlow takes seconds to import: an option error is reported before anything needs it, while a
    command that does need it still gets TensorFlow's start-up lines kept off stderr (the one-line tests)."""
    code = ("import sys; from competition.cli import main; rc = main(['--quiet', 'train', '--preset', 'nope']);"
            "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules, 'sklearn' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.split() == ["2", "False", "False", "False"], r.stdout + r.stderr
    assert r.stderr.startswith("error: unknown preset 'nope'") and r.stderr.count("\n") == 1, r.stderr
    # the first import of Keras (wherever a command makes it) is the quiet one: C++ start-up lines captured,
    # TensorFlow's Python warnings (retracing, deprecations) off; without the hook (--debug) they stay on
    code = ("import logging, sys; from competition.base import console; console.install(); import keras;"
            "import tensorflow as tf; print(tf.get_logger().level == logging.ERROR, console._FINDER in sys.meta_path)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert r.stdout.split() == ["True", "False"] and r.stderr == "", r.stdout + r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = cli("--debug", "train", "--preset", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_threshold_outside_zero_one(tiny_run, synth_dir, tmp_path):
    r = cli("predict", "--run", str(tiny_run), "--data", str(synth_dir), "--out", str(tmp_path / "x.csv.gz"),
            "--threshold", "1.5")
    assert_one_line_error(r, "predict: --threshold: 1.5 is not a finite number above 0 and below 1")


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
    from competition.inference.predictor import Predictor
    from conftest import single_probabilities as probabilities
    inp = keras.Input((32, 48, 3))
    conv = keras.layers.Conv2D(1, 1)
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.full((1, 1, 3, 1), np.nan, np.float32), np.zeros(1, np.float32)])
    ds = open_dataset(synth_dir)
    with pytest.raises(UserError, match=f"NaN/inf probabilities for .*{ds.test_ids[0]}.jpg"):
        list(probabilities(Predictor([model], Geometry(32, 48), "none"), ds.test_ids[:2], ds.read_test_image,
                           ds.where_test, 2))


def test_disk_full_while_writing_the_submission(tiny_run, synth_dir, tmp_path, monkeypatch):
    from competition.inference import predict as predict_mod, writer
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    real, calls = os.fsync, []

    def full_on_third(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    whole = predict_mod.predict(tiny_run, str(synth_dir), tmp_path / "whole.csv.gz").read_bytes()
    monkeypatch.setattr(writer.os, "fsync", full_on_third)
    out = tmp_path / "s.csv.gz"
    with pytest.raises(UserError, match="free disk space and rerun: 2 rows are kept"):
        predict_mod.predict(tiny_run, str(synth_dir), out)
    assert not out.exists()
    monkeypatch.setattr(writer.os, "fsync", real)
    real_post, redone = predict_mod.to_native, []
    monkeypatch.setattr(predict_mod, "to_native", lambda *a: redone.append(1) or real_post(*a))
    assert predict_mod.predict(tiny_run, str(synth_dir), out).read_bytes() == whole
    assert len(redone) == len(open_dataset(synth_dir).test_ids) - 2  # the 2 rows kept are not predicted again


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
    from competition.training.train import train

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
@given(st.lists(st.text(max_size=30), max_size=5), st.binary(max_size=40), st.booleans())
def test_validate_fuzz(tmp_path, capsys, lines, raw, fuzz_the_sample):
    """`validate` on arbitrary bytes (as the submission or as the sample): exit 0, or exit 2 ending in one
    `error:` line; any other exception (a UnicodeDecodeError, say) fails the test as a traceback would."""
    from competition.cli import main
    fuzz, good = tmp_path / "fuzz.csv", tmp_path / "good.csv"
    fuzz.write_bytes(("\n".join(["img,rle_mask", *lines]) + "\n").encode("utf-8", "surrogatepass") + raw)
    good.write_text("img,rle_mask\na_01.jpg,1 2\na_02.jpg,\n")
    file, sample = (good, fuzz) if fuzz_the_sample else (fuzz, good)
    capsys.readouterr()
    code = main(["validate", str(file), "--sample", str(sample)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert (err == "") if code == 0 else err.splitlines()[-1].startswith("error:"), err


# --- a training run killed at fixed points, mid-write included, resumes exactly ---------------------------
# Runs the CLI with os.replace wrapped: KILL="interrupt:<name>#<n>" raises KeyboardInterrupt (Ctrl-C) just after
# the n-th rename onto a file called <name>; "midwrite:<name>#<n>" truncates the n-th temporary file to half and
# dies there (os._exit, as SIGKILL), before the rename; "after:<key>" dies just after a state.json with <key> set;
# "epoch:<n>" just after the state.json of epoch n.
KILLABLE = """
import json, os, sys
from pathlib import Path
rule, arg = os.environ["KILL"].split(":", 1)
seen, real = {}, os.replace

def replace(src, dst, *a, **k):
    name = Path(dst).name
    seen[name] = seen.get(name, 0) + 1
    if rule == "midwrite" and f"{name}#{seen[name]}" == arg:
        os.truncate(src, os.path.getsize(src) // 2)
        os._exit(9)
    real(src, dst, *a, **k)
    if rule == "interrupt" and f"{name}#{seen[name]}" == arg:
        raise KeyboardInterrupt
    if rule == "after" and name == "state.json" and json.loads(Path(dst).read_text()).get(arg):
        os._exit(9)
    if rule == "epoch" and name == "state.json" and json.loads(Path(dst).read_text()).get("epoch") == int(arg):
        os._exit(9)

os.replace = replace
from competition.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_early_stoppings_count_survives_a_resume_in_fresh_processes(synth_dir, tiny_cache, tmp_path):
    """Patience 2, killed just after the epoch before the stop, which did not improve (its state says wait 1): the
    resumed run stops at the same epoch as the uninterrupted one, with the same history (a count restarted at 0
    would train one epoch more). Fresh interpreters, not forks of one: their hash seeds and numpy states are their
    own, so randomness a fork would share cannot hide here."""
    from conftest import DETERMINISTIC, tiny_train_args

    def run(runs: Path, kill: str | None) -> subprocess.CompletedProcess:
        args = tiny_train_args(synth_dir, runs, tiny_cache)
        args[args.index("--patience") + 1] = "2"
        env = {**os.environ, **DETERMINISTIC, "KILL": kill or "none:"}
        return subprocess.run([sys.executable, "-c", KILLABLE, *args], env=env, capture_output=True, text=True,
                              timeout=600, cwd=tmp_path)

    assert run(tmp_path / "whole", None).returncode == 0
    reference = tmp_path / "whole" / "tiny" / "fold0"
    epochs = len(_history(reference))
    assert epochs < 8, "patience 2 must stop this run early for the test to mean anything"
    r = run(tmp_path / "cut", f"epoch:{epochs - 1}")  # killed just after the epoch before the stop was recorded
    out = tmp_path / "cut" / "tiny" / "fold0"
    assert r.returncode == 9, r.stderr
    cut_at = fileio.read_json(out / "backup" / "state.json")
    assert cut_at["wait"] == 1 and cut_at["epoch"] == epochs - 1
    assert run(tmp_path / "cut", None).returncode == 0
    assert _history(out) == _history(reference)
    assert fileio.read_json(out / "train.json") == fileio.read_json(reference / "train.json")


def _history(fold: Path) -> list[dict]:
    import csv
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(fold / "history.csv"))]


def _temps(fold: Path) -> list[str]:
    return sorted(p.name for p in fold.rglob("*") if fileio.TEMP_MARK in p.name or ".tmp" in p.name)


def test_killed_training_resumes_exactly_like_the_uninterrupted_run(trained_run, synth_dir, tiny_cache, tmp_path):
    """Ctrl-C, then kills in the middle of writing state.json and a backup model, then a kill just after the
    epoch where early stopping fired: the fifth run ends where the uninterrupted run ended, bit for bit."""
    import keras
    from conftest import DETERMINISTIC, TINY, tiny_train_args
    reference = trained_run / "fold0"
    stop = len(_history(reference))  # the epoch where early stopping fired in the uninterrupted run
    assert stop < TINY["epochs"]
    out = tmp_path / "runs" / "tiny" / "fold0"
    args = tiny_train_args(synth_dir, tmp_path / "runs", tiny_cache)

    def run(kill: str | None) -> subprocess.CompletedProcess:
        env = {**os.environ, **DETERMINISTIC, "KILL": kill or "none:"}
        return forkserver.run([sys.executable, "-c", KILLABLE, *args], env=env, timeout=300)

    def state() -> dict:
        return fileio.read_json(out / "backup" / "state.json")

    r = run("interrupt:state.json#1")  # Ctrl-C just after epoch 1 was recorded
    assert r.returncode == 130 and "interrupted: rerun the same command" in r.stderr, r.stderr
    assert state()["epoch"] == 1 and _temps(out) == []
    r = run("midwrite:state.json#1")  # killed while recording epoch 2
    assert r.returncode == 9 and state()["epoch"] == 1, r.stderr
    assert [t for t in _temps(out) if t.startswith(".state.json.tmp-")], _temps(out)
    r = run(f"midwrite:epoch{stop:03d}.keras#1")  # killed while saving the backup of the stopping epoch
    assert r.returncode == 9 and state()["epoch"] == stop - 1, r.stderr
    assert [t for t in _temps(out) if t.startswith(f".epoch{stop:03d}.keras.tmp-")], _temps(out)
    r = run("after:stopped")  # killed just after early stopping fired and was recorded
    assert r.returncode == 9 and state()["epoch"] == stop and state()["stopped"] is True, r.stderr
    assert not (out / "train.json").exists()
    r = run(None)
    assert r.returncode == 0, r.stderr

    assert _history(out) == _history(reference)  # same epochs (none trained after the stop), same numbers
    assert fileio.read_json(out / "train.json") == fileio.read_json(reference / "train.json")
    mine = keras.models.load_model(out / "model.keras", compile=False).get_weights()
    theirs = keras.models.load_model(reference / "model.keras", compile=False).get_weights()
    assert len(mine) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(mine, theirs))
    with np.load(out / "oof.npz") as a, np.load(reference / "oof.npz") as b:
        np.testing.assert_array_equal(a["probs"], b["probs"])
    assert _temps(out.parent) == [] and not (out / "backup").exists()


def test_cache_that_will_not_fit_the_disk_is_refused_up_front(synth_dir, tmp_path, monkeypatch):
    from competition.data import pipeline
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    ds = open_dataset(synth_dir)
    with pytest.raises(UserError, match=r"cache of 4 images needs .* GB free: .*--cache none"):
        build_cache(ds, ds.train_ids[:4], Geometry(32, 48), "area", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.npy*"))
