"""Inference and the submission file: ids and order, TTA undo, resume, shards, validation."""
import gzip
import os
import sys
import json

import numpy as np
import pytest

import keras

from competition.inference import predict as predict_mod
from competition.base import rle
from competition.inference import submission, writer
from competition.data.layout import open_dataset
from competition.base.errors import UserError
from competition.base.geometry import Geometry
from competition.inference.predictor import Predictor
from competition.inference.upsample import to_native_mask
from competition.inference.writer import shard_path
from competition.inference.predict import predict
from competition.inference.submission import merge
from competition.base.submission_csv import validate
from conftest import DETERMINISTIC, interrupt_call, single_probabilities
import forkserver


def _rows(path):
    with gzip.open(path, "rt") if path.name.endswith(".gz") else open(path) as f:
        return f.read().splitlines()


def test_submission_has_the_sample_ids_in_order_and_decodes(tiny_run, synth_dir, tmp_path):
    out = predict(tiny_run, str(synth_dir), tmp_path / "sub.csv.gz", tta="hflip")
    lines = _rows(out)
    sample = (synth_dir / "sample_submission.csv").read_text().splitlines()
    assert lines[0] == "img,rle_mask"
    assert [l.split(",")[0] for l in lines] == [l.split(",")[0] for l in sample]
    for line in lines[1:]:
        assert rle.decode(line.split(",")[1]).shape == (1280, 1918)
    assert not out.with_name(out.name + ".part").exists() and not out.with_name(out.name + ".part.json").exists()
    plain = predict(tiny_run, str(synth_dir), tmp_path / "sub.csv", tta="hflip")
    assert plain.read_text().splitlines() == lines


def interrupt_postprocess(monkeypatch, on_call: int) -> None:
    """Make the n-th post-processed image raise KeyboardInterrupt, as a Ctrl-C there would."""
    interrupt_call(monkeypatch, predict_mod, "to_native", on_call)


RAMP = np.linspace(-3.0, 3.0, 48, dtype=np.float32)  # a logit that grows from left to right


def _position_dependent_model(shape):
    """sigmoid(10 * (red - 0.5) + a left-to-right ramp): not flip-equivariant, so hflip TTA changes its output."""
    ramp = keras.ops.convert_to_tensor(RAMP[None, None, :, None])
    inp = keras.Input(shape)
    out = keras.layers.Lambda(lambda x: keras.ops.sigmoid(10.0 * (x[..., :1] - 0.5) + ramp))(inp)
    return keras.Model(inp, out)


def test_hflip_tta_averages_the_flipped_prediction_flipped_back():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 32, 48, 3)).astype(np.uint8)
    model = _position_dependent_model((32, 48, 3))
    geom = Geometry(32, 48)
    red = batch[..., 0].astype(np.float32) / 255
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    as_is = sigmoid(10 * (red - 0.5) + RAMP)             # the model on the image
    flipped_back = sigmoid(10 * (red - 0.5) + RAMP[::-1])  # on the mirrored image, mirrored back
    assert np.abs(as_is - flipped_back).mean() > 0.1       # so flipping matters, and so does undoing it
    np.testing.assert_allclose(Predictor([model], geom, "none")(batch), as_is, atol=1e-5)
    np.testing.assert_allclose(Predictor([model], geom, "hflip")(batch), (as_is + flipped_back) / 2, atol=1e-5)


def test_threshold_after_resize_to_native():
    """A left-to-right gradient: the mask's edge lands where the bilinearly resized probability crosses the
    threshold, not on the model pixel's edge where thresholding first (then resizing) would put it."""
    h, w, t = 32, 16, 0.35  # wide model pixels (120 native columns), the threshold a quarter into one
    geom = Geometry(h, w)
    prob = np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))
    mask = to_native_mask(prob, geom, t)
    assert mask.shape == (1280, 1918) and set(np.unique(mask)) == {0, 1}
    firsts = mask.argmax(axis=1)  # each row: 0 up to an edge, 1 after it
    assert all(row[f:].all() and not row[:f].any() for row, f in zip(mask, firsts))
    # native column x samples model x (x + 0.5) * w / 1918 - 0.5, where the ramp is that / (w - 1)
    after = t * (w - 1)
    expected = (after + 0.5) * 1918 / w - 0.5
    before = (np.floor(after) + 1) * 1918 / w - 0.5   # first model pixel above t, at its left edge
    band = (w - 1) * 1918 / w / 255  # columns the 8-bit quantisation (1/255) may move the edge
    assert np.abs(firsts - expected).max() <= band + 1, (firsts.min(), firsts.max(), expected)
    assert abs(before - expected) > 2 * (band + 1)  # the two orders are told apart


def count_postprocessed(monkeypatch) -> list[int]:
    """Count the images post-processed from now on (one per image predicted)."""
    real, calls = predict_mod.to_native, []

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(predict_mod, "to_native", counting)
    return calls


@pytest.mark.parametrize("gz", [True, False])
def test_resume_after_a_torn_chunk_predicts_only_the_rest_and_is_byte_identical(tiny_run, synth_dir, tmp_path,
                                                                                  monkeypatch, gz):
    """Killed while appending the third chunk (half of it on disk): the rerun drops the torn half, predicts only
    the rows after the two recorded chunks, and writes exactly the bytes of an uninterrupted run."""
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    ext = ".csv.gz" if gz else ".csv"
    whole = predict(tiny_run, str(synth_dir), tmp_path / f"a{ext}").read_bytes()
    total = len(open_dataset(synth_dir).test_ids)
    real_fsync, fsyncs = writer.os.fsync, []

    def torn_third_chunk(fd):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            return real_fsync(fd)  # the progress record
        fsyncs.append(fd)
        if len(fsyncs) == 3:  # the third chunk is in the file: cut it in half and die
            size = os.fstat(fd).st_size
            os.ftruncate(fd, size - (size - prefix[0]) // 2)
            raise KeyboardInterrupt
        real_fsync(fd)
        prefix[0] = os.fstat(fd).st_size

    prefix = [0]
    monkeypatch.setattr(writer.os, "fsync", torn_third_chunk)
    out = tmp_path / f"b{ext}"
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_run, str(synth_dir), out)
    part = out.with_name(out.name + ".part")
    assert not out.exists() and part.stat().st_size > prefix[0]  # a torn chunk after the recorded ones
    monkeypatch.setattr(writer.os, "fsync", real_fsync)
    computed = count_postprocessed(monkeypatch)
    assert predict(tiny_run, str(synth_dir), out).read_bytes() == whole
    assert len(computed) == total - 4 and 0 < len(computed) < total  # two chunks of 2 rows were kept


def test_partial_file_from_other_settings_is_refused(tiny_run, synth_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    real = predict_mod.to_native
    interrupt_postprocess(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_run, str(synth_dir), tmp_path / "c.csv", threshold=0.5)
    monkeypatch.setattr(predict_mod, "to_native", real)
    with pytest.raises(UserError, match="other settings"):
        predict(tiny_run, str(synth_dir), tmp_path / "c.csv", threshold=0.4)


def test_merging_overlapping_shards_is_refused(synth_dir, tmp_path):
    names = [f"{i}.jpg" for i in open_dataset(synth_dir).test_ids]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("img,rle_mask\n" + "".join(f"{n},1 2\n" for n in names[:5]))
    b.write_text("img,rle_mask\n" + "".join(f"{n},\n" for n in names[4:]))  # names[4] is in both
    with pytest.raises(UserError, match=f"b.csv line 2: {names[4]} is also in another shard"):
        merge([a, b], tmp_path / "m.csv", synth_dir / "sample_submission.csv")
    assert not (tmp_path / "m.csv").exists() and not list(tmp_path.glob(".m.csv*"))


def test_two_folds_are_averaged(tiny_run, synth_dir, tmp_path):
    """Fold 1 is fold 0 with its output logit shifted: the submission is the mean of the two folds' probabilities."""
    import shutil
    shutil.copytree(tiny_run / "fold0", tiny_run / "fold1")
    m1 = keras.models.load_model(tiny_run / "fold1" / "model.keras", compile=False)
    head = m1.get_layer("head_logits")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + 2.0])
    m1.save(tiny_run / "fold1" / "model.keras")
    m0 = keras.models.load_model(tiny_run / "fold0" / "model.keras", compile=False)
    out = predict(tiny_run, str(synth_dir), tmp_path / "two.csv", folds=[0, 1], tta="none")
    ds = open_dataset(synth_dir)
    geom = Geometry(32, 48)
    rows = dict(line.split(",") for line in _rows(out)[1:])
    far = 0
    for image_id in ds.test_ids:
        x = Predictor([m0], geom, "none").load(ds.read_test_image(image_id), image_id)[None].astype(np.float32) / 255
        p0, p1 = (np.asarray(m(x, training=False))[0, ..., 0] for m in (m0, m1))
        far += np.abs(p0 - p1).mean() > 0.05
        expected = to_native_mask((p0 + p1) / 2, geom, 0.5)
        np.testing.assert_array_equal(rle.decode(rows[f"{image_id}.jpg"]), expected)
    assert far == len(ds.test_ids)  # the two folds really differ


def test_shards_merged_equal_the_single_run(tiny_run, synth_dir, tmp_path):
    single = predict(tiny_run, str(synth_dir), tmp_path / "one.csv.gz")
    parts = [predict(tiny_run, str(synth_dir), tmp_path / "s.csv.gz", shard=(i, 3)) for i in (2, 0, 1)]
    assert parts[0] == shard_path(tmp_path / "s.csv.gz", (2, 3)) and parts[0].name == "s.shard-2-of-3.csv.gz"
    merged = merge(parts, tmp_path / "merged.csv.gz", synth_dir / "sample_submission.csv")
    assert _rows(merged) == _rows(single)
    with pytest.raises(UserError, match="miss"):
        merge(parts[:2], tmp_path / "m2.csv.gz", synth_dir / "sample_submission.csv")
    assert not (tmp_path / "m2.csv.gz").exists()


def test_shards_made_differently_are_not_merged(tiny_run, synth_dir, tmp_path, capsys):
    """Each finished file keeps a record of what made it; merge compares the shards' records before writing."""
    sample = synth_dir / "sample_submission.csv"
    parts = [predict(tiny_run, str(synth_dir), tmp_path / "s.csv", shard=(i, 2), threshold=t)
             for i, t in ((0, 0.5), (1, 0.4))]
    made = [json.loads(submission.made_path(p).read_text()) for p in parts]
    assert [m["threshold"] for m in made] == [0.5, 0.4] and [m["shard"] for m in made] == [[0, 2], [1, 2]]
    with pytest.raises(UserError, match=r"s.shard-1-of-2.csv and s.shard-0-of-2.csv were not made the same way "
                                        r"\(threshold: 0.4 against 0.5\)"):
        merge(parts, tmp_path / "m.csv", sample)
    assert not list(tmp_path.glob("m.csv*")) and not list(tmp_path.glob(".m.csv*"))

    # Predicted again at 0.5 somewhere else (another path to the same run): the same models, so they merge.
    elsewhere = tmp_path / "elsewhere"
    import shutil
    shutil.copytree(tiny_run, elsewhere)
    parts[1] = predict(elsewhere, str(synth_dir), tmp_path / "s.csv", shard=(1, 2), threshold=0.5)
    merged = merge(parts, tmp_path / "m.csv", sample)
    record = json.loads(submission.made_path(merged).read_text())
    assert record["threshold"] == 0.5 and record["shards"] == 2 and "shard" not in record
    assert record["models"] == made[0]["models"]

    # A retrained fold is another model, even under the same path.
    model = keras.models.load_model(elsewhere / "fold0" / "model.keras", compile=False)
    head = model.get_layer("head_logits")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + 1.0])
    model.save(elsewhere / "fold0" / "model.keras")
    parts[1] = predict(elsewhere, str(synth_dir), tmp_path / "s.csv", shard=(1, 2), threshold=0.5)
    with pytest.raises(UserError, match="other models"):
        merge(parts, tmp_path / "m.csv", sample)

    # Shards without records (made by hand, or by an older toolkit) merge, saying nothing was compared.
    for p in parts:
        submission.made_path(p).unlink()
    merged = merge(parts, tmp_path / "m.csv", sample)
    assert "settings not compared" in capsys.readouterr().out
    assert not submission.made_path(merged).exists()  # the earlier merge's record no longer describes it


def test_model_size_mismatch_is_caught(tiny_run, synth_dir, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    from competition.config import load_config, save_config
    save_config(bad / "config.json", load_config(bad / "config.json").replace(height=64, width=96))
    with pytest.raises(UserError, match="takes 32x48 inputs"):
        predict(bad, str(synth_dir), tmp_path / "x.csv.gz")


SAMPLE = ["a_01.jpg", "a_02.jpg", "b_01.jpg"]


@pytest.mark.parametrize("body, problem", [
    ("img,rle_mask\na_01.jpg,1 2\nb_01.jpg,\n", "missing"),
    ("img,rle_mask\na_01.jpg,1 2\na_01.jpg,\nb_01.jpg,\n", "duplicate"),
    ("image,mask\na_01.jpg,\n", "header"),
    ("img,rle_mask\na_01.jpg,1 2 3\na_02.jpg,\nb_01.jpg,\n", "odd count"),
    ("img,rle_mask\na_01.jpg,1 5 3 2\na_02.jpg,\nb_01.jpg,\n", "overlapping"),
    (f"img,rle_mask\na_01.jpg,{1280 * 1918} 2\na_02.jpg,\nb_01.jpg,\n", "beyond"),
    ("img,rle_mask\na_02.jpg,\na_01.jpg,\nb_01.jpg,\n", "out of order"),
    ("img,rle_mask\na_01.jpg,\na_02.jpg,\nzz_01.jpg,\n", "not in the sample"),
])
def test_validate_catches(tmp_path, body, problem):
    p = tmp_path / "s.csv"
    p.write_text(body)
    try:
        _, problems = validate(p, SAMPLE)
    except UserError as e:
        problems = [str(e)]
    assert any(problem in str(x) for x in problems), problems


def test_validate_accepts_a_good_file_and_reports_line_numbers(tmp_path):
    p = tmp_path / "s.csv.gz"
    p.write_bytes(gzip.compress(b"img,rle_mask\na_01.jpg,1 2 10 3\na_02.jpg,\nb_01.jpg,5 5\n"))
    assert validate(p, SAMPLE) == (3, [])
    q = tmp_path / "t.csv"
    q.write_text("img,rle_mask\na_01.jpg,1 2\na_02.jpg,0 1\nb_01.jpg,\n")
    _, problems = validate(q, SAMPLE)
    assert problems[0].line == 3


_TWO_DEVICES = '''
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from competition.__main__ import main
sys.exit(main(sys.argv[1:]))
'''


def test_predict_spreads_batches_over_every_device_and_writes_the_same_bytes(tiny_run, synth_dir, tmp_path):
    """Kaggle's T4 x2 has two GPUs: predict puts a copy of the models on each and gives them batches in turn. Two
    logical CPU devices stand in for them here (a fresh process splits its CPU before TensorFlow starts): the
    submission is byte-identical to one device's, batch after batch in order."""
    script = tmp_path / "two_devices.py"
    script.write_text(_TWO_DEVICES)
    args = ["predict", "--run", str(tiny_run), "--data", str(synth_dir), "--tta", "hflip", "--batch", "2"]
    two = forkserver.run([sys.executable, str(script), *args, "--out", str(tmp_path / "two.csv")],
                         env={**os.environ, **DETERMINISTIC}, timeout=300)
    assert two.returncode == 0, two.stderr
    assert "models on 2 devices (" in two.stdout and "device:CPU:1" in two.stdout
    one = forkserver.run([sys.executable, "-m", "competition", *args, "--out", str(tmp_path / "one.csv")],
                         env={**os.environ, **DETERMINISTIC}, timeout=300)
    assert one.returncode == 0, one.stderr
    assert "models on" not in one.stdout
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


class _Counted:
    """A model that counts its batches (what the device running it would see)."""

    def __init__(self, model):
        self.model, self.batches = model, 0

    def predict_on_batch(self, x):
        self.batches += 1
        return self.model.predict_on_batch(x)


def test_each_device_gets_every_other_batch_in_order(synth_dir):
    """Batch n runs on device n mod 2 (both copies busy, never one batch on two), results in the ids' order."""
    model = _position_dependent_model((48, 48, 3))
    first, second = _Counted(model), _Counted(model)
    geometry = Geometry(48, 48, "resize")
    predictor = Predictor([first], geometry, "none", copies=[[second]], devices=[None, None])
    ds = open_dataset(synth_dir)
    ids = ds.test_ids[:5]
    got = list(single_probabilities(predictor, ids, ds.read_test_image, ds.where_test, batch=2))
    assert [i for i, _ in got] == ids and (first.batches, second.batches) == (2, 1)
    alone = Predictor([model], geometry, "none")
    expected = list(single_probabilities(alone, ids, ds.read_test_image, ds.where_test, batch=2))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected))
