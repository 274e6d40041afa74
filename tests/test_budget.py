"""`train --budget`: the plan as a pure function of stated rates, the first epoch's re-plan, the guard, and the CLI:
a budget too short or given with --epochs is one line with nothing written; a budgeted fold runs its schedule to
the planned end; a budgeted fold killed and resumed keeps its plan and ends bit for bit as the uninterrupted one."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from competition.training.budget import (MARGIN, MIN_REFINER_STEPS, REPLAN_TOLERANCE, Budget, Rates, TooShort, Work,
                                         epoch_seconds, fixed_seconds, make_plan, replan, training_end)

import forkserver

WORK = Work(train_images=4000, val_images=1000, batch=8, refiners=1, refiner_photos=4000, predict_refiner_photos=True)
RATES = Rates(train_step_s=0.5, eval_image_s=0.02, refiner_step_s=0.1, decode_s=0.01, trace_s=2.0, source="stated")


def test_epoch_and_fixed_seconds_are_the_counts_times_the_rates():
    assert epoch_seconds(WORK, RATES) == pytest.approx(500 * 0.5 + 1000 * 0.02)           # 270 s
    assert fixed_seconds(WORK, RATES) == pytest.approx(1000 * 0.02 + 4000 * (0.01 + 0.02))  # oof + the photos
    held_out = Work(4000, 1000, 8, refiners=6, refiner_photos=5000)
    assert fixed_seconds(held_out, RATES) == pytest.approx(1000 * 0.02 + 5000 * 0.01)      # decoded, not predicted


def test_a_plan_fills_the_budget_in_the_presets_ratio():
    plan = make_plan(3600, 0.0, epochs=20, refiner_steps=3000, warmup=1, work=WORK, rates=RATES)
    epoch, fixed = 270.0, 140.0
    available = MARGIN * 3600 - fixed
    assert plan["epochs"] == math.floor(available / (20 * epoch + 3000 * 0.1) * 20)  # the ratio, rounded down
    assert plan["refiner_steps"] == math.floor((available - plan["epochs"] * epoch) / 0.1)  # the rest to the refiner
    assert 0.9 * 3600 <= plan["planned_s"] <= MARGIN * 3600 + 0.1
    assert plan["warmup"] == 1 and plan["source"] == "stated" and plan["rates"]["train_step_s"] == 0.5


def test_a_plan_counts_what_was_spent_and_what_was_done():
    fresh = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    late = make_plan(3600, 600.0, 20, 3000, 1, WORK, RATES)
    assert late["planned_s"] <= MARGIN * 3600 + 0.1 and late["epochs"] < fresh["epochs"]
    resumed = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES, done_epochs=4)
    assert resumed["epochs"] == fresh["epochs"] + 4 and resumed["refiner_steps"] == fresh["refiner_steps"]


def test_without_a_refiner_every_second_goes_to_epochs():
    plan = make_plan(3600, 0.0, 20, 3000, 1, Work(4000, 1000, 8), RATES)
    assert plan["refiner_steps"] == 0 and plan["epochs"] == math.floor((MARGIN * 3600 - 20.0) / 270.0)


@pytest.mark.parametrize("epochs, warmup", [(1, 0), (2, 0), (3, 1), (30, 1)])
def test_a_short_plan_keeps_a_complete_schedule(epochs, warmup):
    """The warm-up is cut where the planned epochs leave no room for it after it (at least one decay epoch)."""
    budget = (270.0 * epochs + 20.0 + 1.0) / MARGIN
    plan = make_plan(budget, 0.0, 20, 0, 1, Work(4000, 1000, 8), RATES)
    assert (plan["epochs"], plan["warmup"]) == (epochs, warmup)


def test_a_budget_too_short_names_the_least_that_works():
    with pytest.raises(TooShort) as e:
        make_plan(300, 0.0, 20, 3000, 1, WORK, RATES)
    least = (270.0 + MIN_REFINER_STEPS * 0.1 + 140.0) / MARGIN
    assert e.value.least_s == pytest.approx(least) and "\n" not in str(e.value)
    plan = make_plan(least + 1, 0.0, 20, 3000, 1, WORK, RATES)
    assert plan["epochs"] == 1 and plan["refiner_steps"] >= MIN_REFINER_STEPS


def test_the_first_epoch_replans_only_when_it_is_off_by_more_than_the_tolerance():
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    near = plan["epoch_s"] * (1 + REPLAN_TOLERANCE * 0.9) + RATES.trace_s  # its tracing is taken out
    assert replan(plan, near, 3600, 300.0, WORK) is None
    slow = replan(plan, 2 * plan["epoch_s"] + RATES.trace_s, 3600, 600.0, WORK)
    assert slow["replanned"] is True and slow["epochs"] < plan["epochs"] and slow["warmup"] == plan["warmup"]
    assert slow["epoch_s"] == pytest.approx(2 * plan["epoch_s"], rel=1e-3)
    assert slow["planned_s"] <= MARGIN * 3600 + 0.1
    hopeless = replan(plan, 3500.0, 3600, 3500.0, WORK)  # the first epoch took it all: no more epochs
    assert hopeless["epochs"] == 1 and hopeless["refiner_steps"] == MIN_REFINER_STEPS


def test_a_budget_too_short_points_at_the_preset_next_below():
    from competition.config import preset
    from competition.training.budget import cheaper
    assert cheaper(preset("cpu")) == ", or a cheaper preset (--preset demo)"
    assert cheaper(preset("demo")) == ""  # nothing offered below it


def test_the_guard_keeps_the_time_after_training_free():
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    end = training_end(plan, Budget(3600, started=100.0, refiners=1))
    assert end == pytest.approx(100.0 + 3600 - plan["fixed_s"] - plan["refiner_steps"] * 0.1)
    assert training_end(plan, None) is None and training_end(None, Budget(3600, 0.0)) is None


# --- the command ------------------------------------------------------------------------------------------
@pytest.fixture
def measured_here(tmp_path, monkeypatch) -> Path:
    """The measured XLA choices and step times in the test's folder, not the machine's."""
    monkeypatch.setenv("COMPETITION_XLA_CACHE", str(tmp_path / "xla.json"))
    monkeypatch.setenv("COMPETITION_XLA", "0")
    return tmp_path


def test_a_budget_too_short_is_one_line_and_writes_nothing(measured_here, synth_dir, tiny_cache, capfd):
    from competition.cli import main
    run = measured_here / "runs" / "b"
    capfd.readouterr()
    assert main(["train", "--preset", "demo", "--run", str(run), "--data", str(synth_dir), "--cache",
                 str(measured_here / "cache"), "--k", "2", "--budget", "1s"]) == 2
    err = capfd.readouterr().err
    [line] = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("error")]
    assert err.count("error") == 1 and not [x for x in err.splitlines() if "Traceback" in x], err
    assert line.startswith("error: --budget 1s is too short for demo: it needs at least ") and "--budget " in line
    assert not run.exists()


def test_a_budget_with_epochs_is_one_line(measured_here, synth_dir, capfd):
    from competition.cli import main
    capfd.readouterr()
    assert main(["train", "--preset", "tiny", "--run", str(measured_here / "r"), "--data", str(synth_dir),
                 "--budget", "5m", "--epochs", "3"]) == 2
    assert capfd.readouterr().err == ("error: --budget 5m and --epochs 3: the budget chooses the epochs (and the "
                                      "refiner's steps); give one of them\n")


def _history(fold: Path) -> list[dict]:
    with open(fold / "history.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_a_budgeted_fold_runs_its_schedule_to_the_planned_end(measured_here, synth_dir, tiny_cache, capsys):
    """Cosine decay over the planned epochs: the last epoch trains at lr/100 (over the preset's 2 it would have
    ended at epoch 2); the plan, its line and the steps' cache are where they are said to be."""
    from competition.cli import main
    run = measured_here / "runs" / "b"
    assert main(["train", "--preset", "tiny", "--run", str(run), "--data", str(synth_dir), "--cache", str(tiny_cache),
                 "--budget", "12s", "--schedule", "cosine", "--warmup", "1", "--patience", "1000"]) == 0
    plan = json.loads((run / "fold0" / "budget.json").read_text())
    history = _history(run / "fold0")
    assert plan["epochs"] > 2 and len(history) == plan["epochs"]  # no early stop: every planned epoch
    assert float(history[-1]["lr"]) == pytest.approx(1e-2 * 0.01, rel=1e-3)  # tiny's lr 1e-2, to lr/100
    assert float(history[0]["lr"]) == pytest.approx(1e-3, rel=1e-3)  # the warm-up's first epoch: lr/10
    assert json.loads((run / "fold0" / "train.json").read_text())["epochs"] == plan["epochs"]
    assert "budget 12s: " in capsys.readouterr().out
    assert list(json.loads((measured_here / "steps.json").read_text()))  # measured once, kept


def test_a_budgeted_fold_killed_and_resumed_keeps_its_plan_and_its_numbers(measured_here, synth_dir, tiny_cache):
    """Killed just after epoch 2 (the plan made, the first epoch's re-plan recorded), then resumed without
    --budget: the plan kept, and the fold ends bit for bit as a run given that same plan and never killed."""
    import keras
    from conftest import DETERMINISTIC
    from test_reliability import KILLABLE
    env = {**os.environ, **DETERMINISTIC, "COMPETITION_XLA_CACHE": str(measured_here / "xla.json")}

    def run(name: str, kill: str | None, *extra: str) -> subprocess.CompletedProcess:
        args = ["train", "--preset", "tiny", "--run", str(measured_here / name), "--data", str(synth_dir),
                "--cache", str(tiny_cache), "--schedule", "cosine", "--patience", "1000", *extra]
        return forkserver.run([sys.executable, "-c", KILLABLE, *args], env={**env, "KILL": kill or "none:"},
                              timeout=300)

    r = run("cut", "epoch:2", "--budget", "12s")
    assert r.returncode == 9, r.stderr
    cut = measured_here / "cut" / "fold0"
    plan = (cut / "budget.json").read_bytes()
    assert json.loads(plan)["epochs"] > 2
    whole = measured_here / "whole" / "fold0"
    whole.mkdir(parents=True)
    shutil.copy(cut / "budget.json", whole / "budget.json")  # the same plan, never killed
    assert run("whole", None).returncode == 0
    r = run("cut", None)
    assert r.returncode == 0 and "resuming with its budget plan" in r.stdout, r.stderr
    assert (cut / "budget.json").read_bytes() == plan
    assert _history(cut) == _history(whole) and len(_history(cut)) == json.loads(plan)["epochs"]
    mine = keras.models.load_model(cut / "model.keras", compile=False).get_weights()
    theirs = keras.models.load_model(whole / "model.keras", compile=False).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))
