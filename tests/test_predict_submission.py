"""Inference and the submission file: ids and order, TTA undo, resume, shards, validation."""
import gzip

import numpy as np
import pytest

import keras

from competition import predict as predict_mod
from competition import rle, submission
from competition.data.layout import open_dataset
from competition.errors import UserError
from competition.geometry import Geometry
from competition.predict import Predictor, predict, shard_path, to_native_mask
from competition.submission import merge, validate


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
    real, calls = predict_mod.postprocess, []

    def dies(*args):
        calls.append(1)
        if len(calls) == on_call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(predict_mod, "postprocess", dies)


def _pointwise_model(shape):
    """A flip-equivariant but orientation-sensitive model: sigmoid(20 * (red - 0.5)), pixel by pixel."""
    inp = keras.Input(shape)
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.array([20.0, 0, 0], np.float32).reshape(1, 1, 3, 1), np.array([-10.0], np.float32)])
    return model


def test_hflip_tta_is_undone():
    rng = np.random.default_rng(0)
    batch = np.zeros((2, 32, 48, 3), np.uint8)
    batch[:, :, :10, 0] = 255  # the left edge is red: flipping without undoing moves it to the right
    batch[:, 5:9, 20:30] = rng.integers(0, 255, (2, 4, 10, 3))
    model = _pointwise_model((32, 48, 3))
    geom = Geometry(32, 48)
    plain = Predictor([model], geom, "none")(batch)
    tta = Predictor([model], geom, "hflip")(batch)
    np.testing.assert_allclose(tta, plain, atol=1e-5)
    assert plain[:, :, :10].min() > 0.99 and plain[:, :, -10:].max() < 0.01


def test_threshold_after_resize_to_native():
    geom = Geometry(64, 96)
    prob = np.zeros((64, 96), np.float32)
    prob[10:30, 20:60] = 0.9
    mask = to_native_mask(prob, geom, 0.5)
    assert mask.shape == (1280, 1918) and set(np.unique(mask)) == {0, 1}
    assert abs(mask.sum() / (20 * 40 * 20 * 19.98) - 1) < 0.05


def test_resume_after_interruption_is_byte_identical(tiny_run, synth_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(submission, "CHUNK_ROWS", 2)
    whole = predict(tiny_run, str(synth_dir), tmp_path / "a.csv.gz").read_bytes()
    real = predict_mod.postprocess
    interrupt_postprocess(monkeypatch, 5)
    out = tmp_path / "b.csv.gz"
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_run, str(synth_dir), out)
    assert not out.exists() and out.with_name("b.csv.gz.part").exists()
    monkeypatch.setattr(predict_mod, "postprocess", real)
    assert predict(tiny_run, str(synth_dir), out).read_bytes() == whole


def test_partial_file_from_other_settings_is_refused(tiny_run, synth_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(submission, "CHUNK_ROWS", 2)
    real = predict_mod.postprocess
    interrupt_postprocess(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_run, str(synth_dir), tmp_path / "c.csv", threshold=0.5)
    monkeypatch.setattr(predict_mod, "postprocess", real)
    with pytest.raises(UserError, match="other settings"):
        predict(tiny_run, str(synth_dir), tmp_path / "c.csv", threshold=0.4)


def test_shards_merged_equal_the_single_run(tiny_run, synth_dir, tmp_path):
    single = predict(tiny_run, str(synth_dir), tmp_path / "one.csv.gz")
    parts = [predict(tiny_run, str(synth_dir), tmp_path / "s.csv.gz", shard=(i, 3)) for i in (2, 0, 1)]
    assert parts[0] == shard_path(tmp_path / "s.csv.gz", (2, 3)) and parts[0].name == "s.shard-2-of-3.csv.gz"
    merged = merge(parts, tmp_path / "merged.csv.gz", synth_dir / "sample_submission.csv")
    assert _rows(merged) == _rows(single)
    with pytest.raises(UserError, match="miss"):
        merge(parts[:2], tmp_path / "m2.csv.gz", synth_dir / "sample_submission.csv")
    assert not (tmp_path / "m2.csv.gz").exists()


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
