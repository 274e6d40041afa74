"""One command a stage: `train` trains the fold and, where the run refines with the net, its refiner (stage.py)."""
from __future__ import annotations

import json

from competition import cli
from competition.training import refiner as refiner_module


def _train(tmp_path, synth_dir, *flags: str) -> int:
    return cli.main(["train", "--preset", "tiny", "--epochs", "1", "--runs", str(tmp_path), "--run", "r",
                     "--data", str(synth_dir), "--cache", "none", "--refine", "net", "--refiner-steps", "2", *flags])


def test_train_trains_the_folds_own_refiner_and_a_rerun_after_a_failed_refiner_trains_only_it(
        tmp_path, synth_dir, monkeypatch, capsys):
    real = refiner_module.train_refiner

    def broken(*a, **k):
        raise KeyboardInterrupt  # as a kill while the refiner trains: the fold is finished, the refiner is not
    monkeypatch.setattr(refiner_module, "train_refiner", broken)
    try:
        _train(tmp_path, synth_dir, "--refiner-from", "training")
    except KeyboardInterrupt:
        pass
    run = tmp_path / "r"
    assert (run / "fold0" / "train.json").is_file() and not (run / "refiner" / "fold0.keras").exists()
    model = (run / "fold0" / "model.keras").read_bytes()
    monkeypatch.setattr(refiner_module, "train_refiner", real)
    capsys.readouterr()
    assert _train(tmp_path, synth_dir, "--refiner-from", "training") == 0
    out = capsys.readouterr().out
    assert "is already trained" in out and "Epoch 1/1" not in out
    assert (run / "fold0" / "model.keras").read_bytes() == model  # the fold is not trained again
    record = json.loads((run / "refiner" / "refiner.json").read_text())
    assert record["fold0.keras"]["steps"] == 2 and record["fold0.keras"]["learns_from"] == "training"
    assert (run / "refiner" / "all.keras").is_file()


def test_held_out_refiners_are_trained_by_the_train_that_finishes_the_last_fold(tmp_path, synth_dir, capsys):
    assert _train(tmp_path, synth_dir, "--refiner-from", "held-out", "--fold", "0") == 0
    run = tmp_path / "r"
    assert "the train of the last fold trains it (1 of 2 folds trained)" in capsys.readouterr().out
    assert not (run / "refiner").exists()
    assert _train(tmp_path, synth_dir, "--refiner-from", "held-out", "--fold", "1") == 0
    assert sorted(p.name for p in (run / "refiner").glob("*.keras")) == ["all.keras", "fold0.keras", "fold1.keras"]


def test_a_full_size_preset_on_the_synthetic_set_or_for_days_on_a_cpu_gets_one_line_unless_anyway(
        tmp_path, synth_dir, monkeypatch, capsys):
    from competition.training import train as train_module
    from competition.models.runtime import Device
    import competition.models.runtime as runtime_module
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runtime_module, "this_device", lambda: Device(None, bf16_cpu=False))
    real = tmp_path / "carvana"
    real.mkdir()
    for preset, data, says in (("unet", synth_dir, "is for the real photos, not the synthetic set"),
                               ("full", synth_dir, "use --preset demo there"),
                               ("unet", real, "days a fold (an estimate"), ("full", real, "use --preset cpu")):
        assert cli.main(["train", "--preset", preset, "--data", str(data)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "--anyway" in err, err
    assert not (tmp_path / "runs").exists()
    calls = []
    monkeypatch.setattr(train_module, "train", lambda *a, **k: calls.append(k) or {})
    assert cli.main(["train", "--preset", "unet", "--data", str(synth_dir), "--anyway"]) == 0
    assert cli.main(["train", "--preset", "cpu", "--data", str(real)]) == 0  # the CPU recipe goes ahead
    monkeypatch.setattr(runtime_module, "this_device", lambda: Device((7, 5)))
    assert cli.main(["train", "--preset", "unet", "--data", str(real)]) == 0  # a T4: hours, not days
    assert len(calls) == 3


def test_the_cpu_estimate_scales_the_measured_recipe():
    from competition.costs.facts import CPU_MEASURED, cpu_fold_hours
    m = CPU_MEASURED
    assert cpu_fold_hours(m["pixels"], m["filters"], m["depth"], m["image_epochs"], True) * 60 == m["minutes"]
    assert cpu_fold_hours(m["pixels"], m["filters"], m["depth"], m["image_epochs"], False) * 60 == 2 * m["minutes"]
    assert cpu_fold_hours(4 * m["pixels"], 2 * m["filters"], m["depth"], m["image_epochs"], True) * 60 == \
        16 * m["minutes"]


def test_submit_and_validate_find_data_carvana_or_say_which_flag_in_one_line(tmp_path, monkeypatch, capsys):
    from competition.cli import inference
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr("competition.inference.submission.validate_submission",
                        lambda file, sample, data: seen.append(data))
    assert cli.main(["validate", "s.csv.gz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data DIR" in err and "--sample" in err
    (tmp_path / inference.DEFAULT_DATA).mkdir(parents=True)
    assert cli.main(["validate", "s.csv.gz"]) == 0 and seen == [inference.DEFAULT_DATA]
    assert cli.main(["validate", "s.csv.gz", "--data", "elsewhere"]) == 0 and seen[-1] == "elsewhere"
