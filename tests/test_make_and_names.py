"""The Make path and the names: the data root Make picks, `make submit` re-predicting after retraining,
a partial prediction refusing other models, preset aliases, and `--run NAME` = `--run runs/NAME`."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from competition import cli
from competition.inference import predict as predict_mod
from competition.runs import folder as runs_mod
from competition.inference import submission, writer
from competition.config import OFFERED, PRESETS, RENAMED, RETIRED, TrainConfig, load_config, preset
from competition.runs.folder import run_path
from competition.base.errors import UserError
from competition.base.fileio import write_json
from competition.inference.predict import predict
from competition.runs.folder import check_run_config

ROOT = Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


# --- Make, as a dry run in a copy holding only the Makefile ----------------------------------------
@pytest.fixture
def make_dir(tmp_path) -> Path:
    """A folder with the Makefile and an up-to-date (fake) virtualenv, so dry runs show only the commands."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").write_text("")
    set_mtime(tmp_path / "requirements.txt", 1_000)
    set_mtime(tmp_path / ".venv" / ".installed", 2_000)
    return tmp_path


def set_mtime(path: Path, t: float) -> None:
    os.utime(path, (t, t))


def dry_run(folder: Path, *args: str) -> list[str]:
    """The commands `make -n ARGS` would run in `folder`, one per line."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "RUN", "NAME", "OUT", "FOLDS", "ENSEMBLE",
                                                             "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(folder), *args], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def data_roots(lines: list[str]) -> set[str]:
    """Every value passed as --data (or announced as `data: X`) in these commands."""
    roots = set()
    for line in lines:
        words = line.replace('"', " ").split()
        roots.update(words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--data", "data:"))
    return roots


DATA_TARGETS = ["info", "folds", "train", "train-all", "predict", "validate", "submit", "score", "cv", "refiner",
                "extract"]


@needs_make
@pytest.mark.parametrize("target", DATA_TARGETS)
def test_make_uses_the_real_data_once_fetched_and_says_so_first(make_dir, target):
    before = dry_run(make_dir, target)
    assert before[0] == 'echo "data: data/synthetic"' and data_roots(before) == {"data/synthetic"}
    (make_dir / "data" / "carvana").mkdir(parents=True)  # what a `make data` without credentials leaves
    assert data_roots(dry_run(make_dir, target)) == {"data/synthetic"}
    (make_dir / "data" / "carvana" / "train_masks.csv.zip").write_bytes(b"PK")  # `make data`'s first file
    after = dry_run(make_dir, target)
    assert after[0] == 'echo "data: data/carvana"' and data_roots(after) == {"data/carvana"}
    assert data_roots(dry_run(make_dir, target, "DATA=elsewhere")) == {"elsewhere"}


@needs_make
def test_make_synth_writes_the_synthetic_set_even_when_the_real_data_is_there(make_dir):
    (make_dir / "data" / "carvana" / "train_masks").mkdir(parents=True)
    assert any("synth --out data/synthetic" in line for line in dry_run(make_dir, "synth"))


def predicts(lines: list[str]) -> bool:
    return any("-m competition predict" in line for line in lines)


def submitted_run(make_dir: Path) -> tuple[Path, Path]:
    """runs/unet with fold 0 trained and its submission, newer than its model and config: (run, submission)."""
    run = make_dir / "runs" / "unet"
    (run / "fold0").mkdir(parents=True)
    (make_dir / "submissions").mkdir()
    out = make_dir / "submissions" / "unet.csv.gz"
    for path in (run / "config.json", run / "fold0" / "model.keras", out):
        path.write_bytes(b"x")
    set_mtime(run / "config.json", 3_000)
    set_mtime(run / "fold0" / "model.keras", 3_000)
    set_mtime(out, 4_000)
    return run, out


@needs_make
def test_make_submit_predicts_again_when_a_model_or_the_config_is_newer(make_dir):
    run, out = submitted_run(make_dir)
    assert not predicts(dry_run(make_dir, "submit"))  # the submission is newer than every model: kept
    set_mtime(run / "fold0" / "model.keras", 5_000)  # fold 0 retrained
    lines = dry_run(make_dir, "submit")
    assert predicts(lines) and any(line.endswith("--out submissions/unet.csv.gz") for line in lines)
    set_mtime(out, 6_000)
    (run / "fold1").mkdir()
    (run / "fold1" / "model.keras").write_bytes(b"y")
    set_mtime(run / "fold1" / "model.keras", 7_000)  # another fold trained since
    assert predicts(dry_run(make_dir, "submit"))
    set_mtime(out, 8_000)
    set_mtime(run / "config.json", 9_000)  # `make score TUNE=1` saved a tuned threshold
    assert predicts(dry_run(make_dir, "submit"))
    assert predicts(dry_run(make_dir, "submit", "RUN=runs/unet"))
    other_run = dry_run(make_dir, "submit", "RUN=other", "OUT=submissions/unet.csv.gz")
    assert not predicts(other_run)  # another run's models do not count
    assert predicts(dry_run(make_dir, "submit", "RUN=other"))  # a missing submission is always predicted


@needs_make
def test_make_submit_predicts_again_when_asked_for_another_refinement_tta_or_ensemble(make_dir, monkeypatch):
    """The submission's record (<out>.json, which predict writes) says how it was made; `make submit` with other
    TTA, REFINE or FOLDS predicts again instead of uploading the old file."""
    import sys
    (make_dir / ".venv" / "bin").mkdir()
    python = make_dir / ".venv" / "bin" / "python"  # this interpreter, in its own venv
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    run, out = submitted_run(make_dir)
    assert not predicts(dry_run(make_dir, "submit", "REFINE=net"))  # no record (made by hand): kept
    write_json(submission.made_path(out), {"run": "runs/unet", "folds": [0, 1], "tta": "hflip", "threshold": 0.5,
                                           "refine": "guided"})
    for same in ([], ["REFINE=guided"], ["FOLDS=1,0"], ["TTA=hflip", "REFINE=guided", "FOLDS=0,1"]):
        assert not predicts(dry_run(make_dir, "submit", *same)), same  # made as asked
    for change, says in (("REFINE=net", "refinement guided"), ("TTA=none", "TTA hflip"),
                         ("FOLDS=0", "folds [0, 1]")):
        lines = dry_run(make_dir, "submit", change)
        assert predicts(lines), change
        assert any(f"was made with {says}: predicting again" in line for line in lines), lines
    write_json(submission.made_path(out), {"run": "runs/unet", "folds": [0, 1], "tta": "hflip", "threshold": 0.5})
    assert predicts(dry_run(make_dir, "submit", "REFINE=guided"))  # no refine recorded: made without one


@needs_make
def test_make_reaches_mixed_precision_threshold_tuning_and_the_ensemble(make_dir):
    train = dry_run(make_dir, "train", "MIXED_PRECISION=1")[-1]
    assert train.split()[-1] == "--mixed-precision"
    assert "mixed-precision" not in dry_run(make_dir, "train")[-1]  # the preset's
    assert dry_run(make_dir, "train", "MIXED_PRECISION=0")[-1].split()[-1] == "--no-mixed-precision"
    assert dry_run(make_dir, "score", "TUNE=1")[-1].split()[-1] == "--tune-threshold"
    assert "--tune-threshold" not in dry_run(make_dir, "score")[-1]
    for var in ("FOLDS", "ENSEMBLE"):  # ENSEMBLE: the former name, still honoured
        assert "--folds 0,2" in dry_run(make_dir, "predict", f"{var}=0,2")[-1]
        assert "--folds 0,2" in dry_run(make_dir, "kernel-push", "TASK=predict", f"{var}=0,2")[-1]
    assert "--folds" not in dry_run(make_dir, "predict")[-1]
    for target in ("predict", "score", "cv", "kernel-push"):  # a predict kernel trains its own refiner
        assert "--refine net" in dry_run(make_dir, target, "TASK=predict", "REFINE=net")[-1]
    assert "--refine" not in dry_run(make_dir, "kernel-push", "REFINE=net")[-1]  # a train kernel scores as configured
    for var in ("REFINER_FROM", "LEARN_FROM"):  # LEARN_FROM: its former spelling
        for learn in ("held-out", "training"):  # what the refiner learns from reaches the CLI, which accepts it
            line = dry_run(make_dir, "refiner", f"{var}={learn}")[-1]
            args = cli.build_parser().parse_args(line.split(" -m competition ")[1].split())
            assert args.refiner_from == learn
    assert "--refiner-from" not in dry_run(make_dir, "refiner")[-1]  # the run's config says (refiner_from)


@needs_make
def test_make_names_the_run_once(make_dir):
    for args, run, out in ((), "unet", "submissions/unet.csv.gz"),\
                          (("NAME=mine",), "mine", "submissions/mine.csv.gz"),\
                          (("RUN=runs/mine",), "runs/mine", "submissions/mine.csv.gz"),\
                          (("PRESET=article-unet",), "article-unet", "submissions/article-unet.csv.gz"):
        for target in ("train", "predict", "score", "cv", "kernel-push"):
            assert f"--run {run} " in dry_run(make_dir, target, *args)[-1] + " "
        assert dry_run(make_dir, "predict", *args)[-1].endswith(f"--out {out}")


# --- a partial prediction remembers its models ------------------------------------------------------
def test_resuming_with_a_retrained_model_is_refused_in_one_line(tiny_run, synth_dir, tmp_path, monkeypatch):
    import keras
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "sub.csv.gz"
    monkeypatch.setattr(writer, "CHUNK_ROWS", 2)
    real, calls = predict_mod.to_native, []

    def dies(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(predict_mod, "to_native", dies)
    with pytest.raises(KeyboardInterrupt):
        predict(run, str(synth_dir), out)
    monkeypatch.setattr(predict_mod, "to_native", real)
    assert out.with_name(out.name + ".part").is_file()
    model_path = run / "fold0" / "model.keras"
    model = keras.models.load_model(model_path, compile=False)
    model.set_weights([w + np.float32(0.01) for w in model.get_weights()])  # "retrained": other weights
    model.save(model_path)
    with pytest.raises(UserError) as e:
        predict(run, str(synth_dir), out)
    message = str(e.value)
    assert "\n" not in message
    assert "fold0/model.keras" in message and "other models" in message
    assert "delete it" in message and "--out" in message
    assert not out.exists() and out.with_name(out.name + ".part").is_file()  # refused before touching it


def test_a_partial_prediction_records_each_models_bytes(tiny_run):
    digests = runs_mod.model_digests(tiny_run, [0])
    assert list(digests) == ["fold0"] and len(digests["fold0"]) == 64
    assert digests == runs_mod.model_digests(tiny_run, [0])


def test_what_changed_names_the_difference():
    new = {"run": "runs/a", "folds": [0, 1], "threshold": 0.5, "models": {"fold0": "aa", "fold1": "bb"}}
    assert "fold1/model.keras" in writer.what_changed({**new, "models": {"fold0": "aa", "fold1": "cc"}}, new)
    assert "did not record" in writer.what_changed({k: v for k, v in new.items() if k != "models"}, new)
    assert "threshold: 0.4 there, 0.5 now" in writer.what_changed({**new, "threshold": 0.4}, new)


# --- preset names -----------------------------------------------------------------------------------
@pytest.mark.parametrize("old,new", sorted(RETIRED.items()))
def test_a_retired_preset_given_to_train_names_its_successor_in_one_line_and_writes_nothing(old, new, tmp_path,
                                                                                             monkeypatch, capsys):
    assert new in PRESETS and old not in PRESETS
    with pytest.raises(UserError, match=f"preset '{old}' is retired: use --preset {new}"):
        preset(old)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--preset", old, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--preset {new}" in err
    assert not list(tmp_path.iterdir())


def test_an_unknown_preset_names_the_offered_ones_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--preset", "unet-9000", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(name in err for name in OFFERED)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("old,new", sorted(RENAMED.items()))
def test_a_run_made_under_a_renamed_preset_still_loads_and_resumes_as_its_successor(old, new, tmp_path):
    d = preset(new).to_json()
    d["preset"] = old  # as config.json of a run made before the rename
    write_json(tmp_path / "config.json", d)
    assert TrainConfig.from_json(d) == preset(new)
    check_run_config(tmp_path, preset(new))  # no "different config" error


def test_a_run_made_under_a_superseded_preset_still_loads_with_its_own_values(tmp_path):
    d = preset("demo", k=5, augment=("flip", "contrast")).to_json()
    d["preset"] = "real-cpu-30"  # a run of the former 30-epoch CPU recipe
    write_json(tmp_path / "config.json", d)
    cfg = load_config(tmp_path / "config.json")
    assert cfg.preset == "real-cpu-30" and cfg.k == 5 and cfg.epochs == PRESETS["demo"]["epochs"]


def test_help_offers_at_most_six_presets_and_hides_the_test_one():
    assert len(OFFERED) <= 6 and set(OFFERED) <= set(PRESETS) and "tiny" not in OFFERED
    assert {"demo", "cpu", "unet", "full"} <= set(OFFERED)
    assert {"article-simple", "article-unet", "article-unet-strided"} <= set(PRESETS) - set(OFFERED)
    assert not [name for name in PRESETS if name.startswith("seed")]
    train_help = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "tiny" not in train_help.split("--preset", 1)[1].split("--data")[0]
    assert all(name in train_help for name in OFFERED)


# --- one way to name a run --------------------------------------------------------------------------
def test_run_name_and_path_mean_the_same_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_path("unet") == run_path("runs/unet") == Path("runs/unet")
    assert run_path("/abs/x") == Path("/abs/x") and run_path("./x") == Path("x")
    assert run_path("unet", "elsewhere") == Path("elsewhere/unet")
    (tmp_path / "old").mkdir()  # a run folder named by a bare path before --run NAME existed
    assert run_path("old") == Path("old")
    (tmp_path / "runs" / "old").mkdir(parents=True)
    assert run_path("old") == Path("runs/old")  # runs/NAME wins when both exist


def capture(monkeypatch, module, name: str) -> list[dict]:
    """Replace module.name by a recorder of its keyword arguments and first positional one."""
    calls: list[dict] = []

    def record(*args, **kwargs):
        calls.append({"args": args, **kwargs})
        return {}  # train and predict return a summary (or None)

    monkeypatch.setattr(module, name, record)
    return calls


def test_every_command_takes_run_as_a_name_or_a_path(tmp_path, monkeypatch, synth_dir):
    from competition.kaggle import kernels
    from competition.scoring import report, score
    from competition.inference.ensemble import as_specs
    from competition.inference import predict as predict_module
    from competition.training import train as train_module
    monkeypatch.chdir(tmp_path)
    data = ["--data", str(synth_dir)]
    for spelling in ("mine", "runs/mine"):
        reports = capture(monkeypatch, report, "report_folds")
        trains = capture(monkeypatch, train_module, "train")
        assert cli.main(["--debug", "train", "--preset", "tiny", "--run", spelling, *data]) == 0
        assert trains[0]["run_dir"] == Path("runs/mine")
        predicts_ = capture(monkeypatch, predict_module, "predict")
        assert cli.main(["--debug", "predict", "--run", spelling, "--out", "s.csv", *data]) == 0
        assert as_specs(predicts_[0]["args"][0])[0].path == Path("runs/mine")
        scores = capture(monkeypatch, score, "score_fold")
        assert cli.main(["--debug", "score", "--run", spelling, *data]) == 0
        assert scores[0]["args"][0] == Path("runs/mine")
        cvs = capture(monkeypatch, score, "cross_validate")
        assert cli.main(["--debug", "cv", "--run", spelling, *data]) == 0
        assert cvs[0]["args"][0] == Path("runs/mine")
        assert [r["args"][0] for r in reports] == [Path("runs/mine")] * 2  # score's and cv's reports
        outputs = capture(monkeypatch, kernels, "output")
        assert cli.main(["kernel", "output", "--preset", "tiny", "--run", spelling]) == 0
        assert outputs[0]["args"][0].name == "mine" and outputs[0]["dest"] == Path("runs/mine")


def test_name_is_still_accepted(tmp_path, monkeypatch, synth_dir):
    from competition.kaggle import kernels
    from competition.training import train as train_module
    monkeypatch.chdir(tmp_path)
    trains = capture(monkeypatch, train_module, "train")
    assert cli.main(["--debug", "train", "--preset", "tiny", "--name", "mine", "--data", str(synth_dir)]) == 0
    assert [c["run_dir"] for c in trains] == [Path("runs/mine")]
    builds = capture(monkeypatch, kernels, "build")
    assert cli.main(["kernel", "build", "--preset", "tiny", "--name", "mine"]) == 0
    assert builds[0]["args"][0].run_name == "mine"
