"""Cross-run blends: the weighted mean of each run's native probabilities, valid and resumable submissions that
record every run, scoring beside each run, and the predict kernel that blends several runs."""
from __future__ import annotations

import gzip
import os
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from competition.kaggle import build as kbuild
from competition.inference import predict as predict_mod
from competition.base import rle
from competition.inference import writer
from competition.cli import main
from competition.inference.ensemble import MemberSpec, parse_member
from competition.data.layout import open_dataset
from competition.base.errors import UserError
from competition.base.geometry import Geometry
from competition.inference.predictor import Predictor, load_models
from competition.inference.upsample import threshold_native, to_native_u8
from competition.inference.predict import predict
from conftest import single_probabilities as probabilities
from competition.inference.submission import merge
from competition.base.submission_csv import validate
from conftest import interrupt_call

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def run_pair(trained_run, tmp_path_factory) -> tuple[Path, Path]:
    """Two runs that share folds.csv: `tiny` (32x48, resize) and `wide`, made from it at another input size
    and fit (64x128, padded), with its output bias shifted and its own threshold 0.4. Read-only: use `runs`."""
    import keras
    from competition.config import load_config, save_config
    from competition.models import build_model
    from competition.models.saving import save_model
    root = tmp_path_factory.mktemp("pair") / "runs"
    a = root / "tiny"
    shutil.copytree(trained_run, a)
    b = root / "wide"
    b.mkdir()
    shutil.copy(a / "folds.csv", b / "folds.csv")
    cfg = load_config(a / "config.json").replace(height=64, width=128, fit="pad", threshold=0.4)
    save_config(b / "config.json", cfg)
    source = keras.models.load_model(a / "fold0" / "model.keras", compile=False)
    model = build_model(cfg)  # a U-Net is fully convolutional: the same weights serve another input size
    weights = source.get_weights()
    weights[-1] = weights[-1] + 0.7  # the output layer's bias: a run that disagrees with `tiny`
    model.set_weights(weights)
    save_model(model, b / "fold0" / "model.keras")
    return a, b


@pytest.fixture
def runs(run_pair, tmp_path) -> tuple[Path, Path]:
    """This test's own copies of the two runs, under tmp_path/runs/ (a blend's folder: tmp_path/runs/blends/)."""
    copies = []
    for run in run_pair:
        dest = tmp_path / "runs" / run.name
        shutil.copytree(run, dest)
        copies.append(dest)
    return copies[0], copies[1]


def _rows(path: Path) -> list[str]:
    with gzip.open(path, "rt") if path.name.endswith(".gz") else open(path) as f:
        return f.read().splitlines()


def _native_probabilities(run: Path, data: Path, tta: str = "hflip", refine: str = "none") -> dict[str, np.ndarray]:
    """Each test image's 8-bit native probability from the run alone, through its own predictor."""
    cfg, _, models = load_models(run, None)
    ds = open_dataset(data)
    predictor = Predictor(models, Geometry(cfg.height, cfg.width, cfg.fit), tta, cfg.image_interp)
    if refine == "none":
        return {i: to_native_u8(p, predictor.geometry)
                for i, p in probabilities(predictor, ds.test_ids, ds.read_test_image, ds.where_test, 4)}
    from competition.base.images import decode_jpeg
    from competition.inference.upsample import guide_reduction, refined_native_u8
    return {i: refined_native_u8(p, predictor.geometry,
                                 decode_jpeg(ds.read_test_image(i), i, guide_reduction(predictor.geometry)))
            for i, p in probabilities(predictor, ds.test_ids, ds.read_test_image, ds.where_test, 4)}


def test_blend_is_the_weighted_mean_of_each_runs_native_probabilities(runs, synth_dir, tmp_path):
    a, b = runs
    out = predict([MemberSpec(str(a)), MemberSpec(str(b), weight=3.0)], str(synth_dir),
                        tmp_path / "blend.csv", threshold=0.5)
    got = dict(line.split(",") for line in _rows(out)[1:])
    pa, pb = _native_probabilities(a, synth_dir), _native_probabilities(b, synth_dir)
    differs_a = differs_b = 0
    for image_id in open_dataset(synth_dir).test_ids:
        mean = np.rint((1.0 * pa[image_id].astype(np.float64) + 3.0 * pb[image_id]) / 4.0).astype(np.uint8)
        expected = threshold_native(mean, 0.5)
        assert got[f"{image_id}.jpg"] == rle.encode(expected), image_id
        differs_a += int((expected != threshold_native(pa[image_id], 0.5)).sum())
        differs_b += int((expected != threshold_native(pb[image_id], 0.5)).sum())
    assert differs_a > 1000 and differs_b > 0  # the blend is neither run alone: the test could fail


def test_a_member_whose_run_refines_is_blended_refined(runs, synth_dir, tmp_path):
    """`wide` (padded frames) says refine="guided" in its config: the blend averages `tiny`'s plain native map
    with `wide`'s refined one, from the photo read once."""
    from competition.config import load_config, save_config
    a, b = runs
    save_config(b / "config.json", load_config(b / "config.json").replace(refine="guided"))
    out = predict([MemberSpec(str(a)), MemberSpec(str(b), weight=3.0)], str(synth_dir),
                        tmp_path / "blend.csv", threshold=0.5)
    got = dict(line.split(",") for line in _rows(out)[1:])
    pa, pb = _native_probabilities(a, synth_dir), _native_probabilities(b, synth_dir, refine="guided")
    plain_b = _native_probabilities(b, synth_dir)
    changed = 0
    for image_id in open_dataset(synth_dir).test_ids:
        mean = np.rint((1.0 * pa[image_id].astype(np.float64) + 3.0 * pb[image_id]) / 4.0).astype(np.uint8)
        assert got[f"{image_id}.jpg"] == rle.encode(threshold_native(mean, 0.5)), image_id
        changed += int((threshold_native(pb[image_id], 0.5) != threshold_native(plain_b[image_id], 0.5)).sum())
    assert changed > 0  # the refinement moved pixels: the test could fail


def test_a_one_run_blend_is_that_runs_own_prediction(runs, synth_dir, tmp_path):
    """The blend path (shared JPEG decoding, native mean) changes nothing when there is one run to blend."""
    _, b = runs
    alone = predict(b, str(synth_dir), tmp_path / "alone.csv.gz")
    blended = predict([MemberSpec(str(b))], str(synth_dir), tmp_path / "blend.csv.gz")
    assert blended.read_bytes() == alone.read_bytes()


def test_a_one_run_blend_equals_a_prediction_computed_apart(runs, synth_dir, tmp_path):
    """Issue 45: the one-member blend against an independent computation, not against the toolkit's own other
    path. Each test photo decoded by OpenCV at the largest reduction that still covers the model's input, shrunk
    with INTER_AREA, every fold's model on it and on its mirror image (mirrored back), averaged, quantised to 8
    bits, resized bilinearly to 1918x1280 and thresholded: the same masks, pixel for pixel but for a handful that
    float summation order may tip."""
    import json as json_mod

    import cv2
    import keras
    b, _ = runs  # tiny: 32x48, resized
    out = predict([MemberSpec(str(b), weight=1.0)], str(synth_dir), tmp_path / "one.csv", tta="hflip",
                  refine="none")
    cfg = json_mod.loads((b / "config.json").read_text())
    assert cfg["fit"] == "resize" and cfg["image_interp"] == "area"
    models = [keras.models.load_model(p, compile=False) for p in sorted(b.glob("fold*/model.keras"))]
    h, w = cfg["height"], cfg["width"]
    flag = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2, 1: 1}
    factor = max(f for f in (1, 2, 4, 8) if 1280 / f >= 0.97 * h and 1918 / f >= 0.97 * w)
    rows = dict(line.split(",", 1) for line in _rows(out)[1:])
    assert len(rows) == len(open_dataset(synth_dir).test_ids)
    for name, encoded in rows.items():
        photo = cv2.imread(str(synth_dir / "test_hq" / name), flag[factor])[..., ::-1]  # BGR -> RGB
        x = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)[None] / 255.0
        passes = [m.predict_on_batch(x)[0, ..., 0] for m in models]
        passes += [m.predict_on_batch(x[:, :, ::-1])[0, :, ::-1, 0] for m in models]
        prob8 = np.clip(np.rint(np.mean(passes, axis=0) * 255), 0, 255).astype(np.uint8)
        native = cv2.resize(prob8, (1918, 1280), interpolation=cv2.INTER_LINEAR)
        mine = native > cfg["threshold"] * 255
        theirs = rle.decode(encoded).astype(bool)
        assert np.count_nonzero(mine != theirs) <= 0.0005 * mine.size, name


def test_parse_member():
    assert parse_member("unet") == MemberSpec("unet")
    assert parse_member("runs/unet-1280@0,2:0.25") == MemberSpec("runs/unet-1280", (0, 2), 0.25)
    assert parse_member("a@3") == MemberSpec("a", (3,), 1.0) and parse_member("a:2") == MemberSpec("a", None, 2.0)
    for bad, words in (("a:x", "weight"), ("a:0", "positive"), ("a:-1", "positive"), ("a@x", "fold numbers"),
                       ("a@1,:2", "fold numbers"), (":2", "no run")):
        with pytest.raises(UserError, match=words):
            parse_member(bad)


def test_cli_blend_is_valid_and_records_both_runs(runs, synth_dir, tmp_path, monkeypatch, capsys):
    """`--run` twice blends both: the progress record names both runs and both runs' model digests."""
    a, b = runs
    out = tmp_path / "sub.csv.gz"
    args = ["predict", "--run", str(a), "--run", f"{b}:3", "--data", str(synth_dir), "--out", str(out)]
    assert main(args) == 0
    names = [f"{i}.jpg" for i in open_dataset(synth_dir).test_ids]
    rows, problems = validate(out, names)
    assert rows == len(names) and problems == []
    assert main(["validate", str(out), "--data", str(synth_dir)]) == 0
    printed = capsys.readouterr().out
    assert "blend of tiny (folds 0, 32x48 resize, weight 1), wide (folds 0, 64x128 pad, weight 3)" in printed
    assert "threshold 0.425 (the weighted mean of the runs' own thresholds)" in printed  # (0.5 + 3 * 0.4) / 4

    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    _interrupt_blend(monkeypatch, 3)
    partial = tmp_path / "partial.csv"
    assert main(["predict", "--run", str(a), "--run", f"{b}:3", "--data", str(synth_dir), "--out", str(partial)]) == 130
    meta = json.loads(partial.with_name("partial.csv.part.json").read_text())["meta"]
    assert meta["runs"] == [str(a), str(b)] and meta["weights"] == [1.0, 3.0] and meta["folds"] == [[0], [0]]
    assert set(meta["models"]) == {str(a / "fold0"), str(b / "fold0")}
    assert meta["models"][str(b / "fold0")] != meta["models"][str(a / "fold0")]

    monkeypatch.undo()
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    err = _refused(capsys, "--run", str(a), "--run", str(b), "--data", str(synth_dir), "--out", str(partial))
    assert "weights: [1.0, 3.0] there, [1.0, 1.0] now" in err
    import keras
    model = keras.models.load_model(b / "fold0" / "model.keras", compile=False)  # retrain one run (a bit)
    model.set_weights([w + 0.01 for w in model.get_weights()])
    model.save(b / "fold0" / "model.keras")
    err = _refused(capsys, "--run", str(a), "--run", f"{b}:3", "--data", str(synth_dir), "--out", str(partial))
    assert f"by other models ({b / 'fold0'}/model.keras is not the one that made its rows" in err


def _refused(capsys, *args: str) -> str:
    capsys.readouterr()  # what came before (an interrupted run's progress bar)
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "partial prediction made" in err
    return err


def _interrupt_blend(monkeypatch, on_call: int) -> list[int]:
    """Make the n-th blended image raise KeyboardInterrupt (a Ctrl-C there); returns the call counter."""
    return interrupt_call(monkeypatch, predict_mod, "to_native", on_call)


def test_blended_predict_resumes_to_the_same_bytes(runs, synth_dir, tmp_path, monkeypatch):
    a, b = runs
    specs = [MemberSpec(str(a), weight=2.0), MemberSpec(str(b))]
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    whole = predict(specs, str(synth_dir), tmp_path / "whole.csv.gz").read_bytes()
    _interrupt_blend(monkeypatch, 6)
    out = tmp_path / "resumed.csv.gz"
    with pytest.raises(KeyboardInterrupt):
        predict(specs, str(synth_dir), out)
    assert not out.exists() and json.loads(out.with_name(out.name + ".part.json").read_text())["rows"] == 4
    computed = _interrupt_blend(monkeypatch, 0)  # counts only
    assert predict(specs, str(synth_dir), out).read_bytes() == whole
    assert len(computed) == len(open_dataset(synth_dir).test_ids) - 4  # the two recorded chunks were kept


def test_shards_of_a_blend_merge_into_the_whole(runs, synth_dir, tmp_path):
    a, b = runs
    specs = [MemberSpec(str(a)), MemberSpec(str(b))]
    whole = predict(specs, str(synth_dir), tmp_path / "whole.csv")
    parts = [predict(specs, str(synth_dir), tmp_path / "s.csv", shard=(i, 2)) for i in range(2)]
    assert [p.name for p in parts] == ["s.shard-0-of-2.csv", "s.shard-1-of-2.csv"]
    merged = merge(parts, tmp_path / "merged.csv", None, data=str(synth_dir))
    assert merged.read_bytes() == whole.read_bytes()


def test_score_prints_each_run_beside_the_blend_and_saves_its_threshold(runs, synth_dir, tmp_path, capsys):
    a, b = runs
    alone = {}
    for run in runs:
        assert main(["score", "--run", str(run), "--fold", "0", "--data", str(synth_dir), "--worst", "0"]) == 0
        alone[run.name] = json.loads((run / "fold0" / "score.json").read_text())["dice_mean"]
    capsys.readouterr()
    assert main(["score", "--run", str(a), "--run", str(b), "--fold", "0", "--data", str(synth_dir), "--worst", "2",
                 "--tune-threshold"]) == 0
    printed = capsys.readouterr().out
    folder = tmp_path / "runs" / "blends" / "tiny+wide"
    s = json.loads((folder / "fold0" / "score.json").read_text())
    assert [m["run"] for m in s["members"]] == ["tiny", "wide"] and s["images"] == 16
    for m in s["members"]:  # each run's score beside the blend is what scoring that run alone gives
        assert m["dice_mean"] == pytest.approx(alone[m["run"]], abs=1e-9)
        assert f"  {m['run']:<5}  {m['dice_mean']:.5f}" in printed
    assert f"  blend  {s['dice_mean']:.5f}" in printed
    assert f"best blend threshold {s['best_threshold']:.2f} -> {s['dice_at_best_threshold']:.5f}" in printed
    table = (folder / "fold0" / "scores.csv").read_text().splitlines()
    assert "dice_tiny" in table[0] and "dice_wide" in table[0] and len(table) == 17
    saved = json.loads((folder / "blend.json").read_text())
    assert saved["threshold"] == s["best_threshold"]
    assert saved["members"] == [{"run": "tiny", "weight": 1.0}, {"run": "wide", "weight": 1.0}]

    out = predict([MemberSpec(str(a)), MemberSpec(str(b))], str(synth_dir), tmp_path / "t.csv", limit=2)
    assert f"threshold {s['best_threshold']} (tuned, from {folder / 'blend.json'})" in capsys.readouterr().out
    assert out.is_file()
    saved["members"][1]["weight"] = 2.0  # a blend.json of other weights under this name is refused
    (folder / "blend.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="holds the threshold of the blend tiny:1, wide:2, not of tiny:1, wide:1"):
        predict([MemberSpec(str(a)), MemberSpec(str(b))], str(synth_dir), tmp_path / "u.csv", limit=2)


def test_score_refuses_runs_with_other_folds(runs, synth_dir, capsys):
    a, b = runs
    lines = (b / "folds.csv").read_text().splitlines()
    car_fold = dict(line.split(",")[1:] for line in lines[1:])  # two cars of two folds swap them: a valid, other split
    (a_car, a_fold), (b_car, b_fold) = [next(item for item in car_fold.items() if item[1] == f) for f in ("0", "1")]
    swap = {a_car: b_fold, b_car: a_fold}
    lines = [line.rsplit(",", 1)[0] + "," + swap[line.split(",")[1]] if line.split(",")[1] in swap else line
             for line in lines]
    (b / "folds.csv").write_text("\n".join(lines) + "\n")
    assert main(["score", "--run", str(a), "--run", str(b), "--fold", "0", "--data", str(synth_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {b / 'folds.csv'} differs from {a / 'folds.csv'}" in err


def test_run_given_twice_is_never_silently_one(runs, synth_dir, tmp_path, capsys):
    a, _ = runs
    assert main(["predict", "--run", str(a), "--run", str(a), "--data", str(synth_dir),
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "is given twice" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "competition", "train", "--run", "a", "--run", "b"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--run given twice (a and b)" in proc.stderr


def test_cv_of_a_blend_scores_the_folds_every_run_trained(runs, synth_dir, tmp_path, capsys):
    a, b = runs
    shutil.copytree(a / "fold0", a / "fold1")  # a fold only `tiny` has: not the blend's
    assert main(["score", "--run", str(a), "--run", str(b), "--fold", "0", "--data", str(synth_dir),
                 "--worst", "0"]) == 0
    folder = tmp_path / "runs" / "blends" / "tiny+wide"
    scored = json.loads((folder / "fold0" / "score.json").read_text())
    (folder / "fold0" / "score.json").unlink()
    capsys.readouterr()
    assert main(["cv", "--run", str(a), "--run", str(b), "--data", str(synth_dir)]) == 0
    s = json.loads((folder / "fold0" / "score.json").read_text())
    assert s["dice_mean"] == scored["dice_mean"] and s["members"] == scored["members"]
    assert not (folder / "fold1").exists()
    text = (folder / "cv.md").read_text()
    assert text.startswith("# Cross-validation of the blend `tiny+wide`") and text in capsys.readouterr().out
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| fold |")) + 2
    rows = lines[start:lines.index("", start)]  # the per-fold table: fold 0 only
    assert rows == [f"| 0 | 16 | {s['members'][0]['dice_mean']:.5f} | {s['members'][1]['dice_mean']:.5f} | "
                    f"**{s['dice_mean']:.5f}** | {s['dice_std']:.5f} | {s['dice_min']:.5f} | {s['threshold']:g} |"]
    oof = (folder / "scores.csv").read_text().splitlines()
    assert len(oof) == 17 and "dice_tiny" in oof[0] and oof[0].endswith(",fold")
    assert f"Out-of-fold over all 16 images: {s['dice_mean']:.5f}" in text
    assert main(["cv", "--run", f"{a}@0", "--run", str(b), "--data", str(synth_dir)]) == 2
    assert "leave out @FOLDS" in capsys.readouterr().err


# --- the predict kernel blends runs -----------------------------------------------------------------
def test_predict_kernel_blends_several_runs(runs, tmp_path, synth_zip_dir):
    from competition.kaggle import kernels
    from competition.kaggle.spec import KernelSpec
    from test_kernels import _kaggle_root, _run_kernel  # the same stand-in /kaggle as the CPU kernel tests
    a, b = runs
    spec = KernelSpec(task="predict", preset="tiny", name="tiny+widex3", user="alice", accelerator="none",
                      blend=["tiny", "wide@0:3"])
    folder = kernels.build(spec, tmp_path / "build")
    assert folder.name == "carvana-tiny-widex3-predict"
    meta = json.loads((folder / kbuild.METADATA_FILE).read_text())
    assert meta["kernel_sources"] == ["alice/carvana-tiny-fold-0", "alice/carvana-tiny-fold-1",  # tiny: k=2
                                      "alice/carvana-wide-fold-0", "alice/carvana-tiny-widex3-predict"]
    spec = KernelSpec(task="predict", preset="tiny", name="tiny+widex3", user="alice", accelerator="none",
                      blend=["tiny@0", "wide@0:3"])
    folder = kernels.build(spec, tmp_path / "build")
    root = _kaggle_root(tmp_path / "kaggle", synth_zip_dir)
    for run in runs:  # a train kernel's output is its run folder
        (root / "input" / f"carvana-{run.name}-fold-0").symlink_to(run, target_is_directory=True)
    proc = _run_kernel(folder / "run.py", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "blend of tiny (folds 0, 32x48 resize, weight 1), wide (folds 0, 64x128 pad, weight 3)" in proc.stdout
    submission_file = root / "working" / "tiny+widex3.csv.gz"
    names = [f"{i}.jpg" for i in open_dataset(synth_zip_dir).test_ids]
    rows, problems = validate(submission_file, names)
    assert rows == len(names) and problems == []
    # the same blend predicted here, from the same runs, gives the same file
    local = predict([MemberSpec(str(a), (0,)), MemberSpec(str(b), (0,), 3.0)], str(synth_zip_dir),
                          tmp_path / "local.csv.gz")
    assert submission_file.read_bytes() == local.read_bytes()


def test_blend_kernel_carries_the_tuned_threshold_and_refuses_train_options(tmp_path, monkeypatch):
    from competition.kaggle import kernels
    from competition.kaggle.spec import KernelSpec
    monkeypatch.chdir(tmp_path)  # runs/ here: where `kernel build --run tiny --run wide` looks for runs/blends/
    spec = KernelSpec(task="predict", preset="tiny", name="tiny+wide", user="alice", blend=["tiny", "wide"])
    assert "'threshold': None" in (kernels.build(spec, tmp_path / "b") / "run.py").read_text()
    folder = tmp_path / "runs" / "blends" / "tiny+wide"
    folder.mkdir(parents=True)
    (folder / "blend.json").write_text(json.dumps({"members": [{"run": "tiny", "weight": 1.0},
                                                               {"run": "wide", "weight": 1.0}], "threshold": 0.43}))
    assert "'threshold': 0.43" in (kernels.build(spec, tmp_path / "b") / "run.py").read_text()
    for bad in (KernelSpec(task="train", preset="tiny", name="x", user="alice", blend=["tiny", "wide"]),
                KernelSpec(task="predict", preset="tiny", name="x", user="alice", blend=["tiny", "wide"],
                           train_kernels="alice/k")):
        with pytest.raises(UserError, match="several --run"):
            kernels.build(bad, tmp_path / "b")


def test_cli_kernel_build_with_two_runs_names_the_blend_and_sources_both(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "competition", "kernel", "build", "--task", "predict", "--preset",
                           "tiny", "--run", "tiny", "--run", "wide@0:3", "--user", "alice", "--out", str(tmp_path)],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "carvana-tiny-widex3-predict"
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == ["alice/carvana-tiny-fold-0", "alice/carvana-tiny-fold-1",
                                      "alice/carvana-wide-fold-0", "alice/carvana-tiny-widex3-predict"]
    script = (folder / "run.py").read_text()
    assert "'blend': [{'name': 'tiny', 'folds': [0, 1], 'weight': 1.0" in script
    assert "{'name': 'wide', 'folds': [0], 'weight': 3.0" in script
