"""`train --budget`: the plan as a pure function of stated rates, the first epoch's re-plan, the guard, and the CLI:
a budget too short or given with --epochs is one line with nothing written; a budgeted fold runs its schedule to
the planned end; a budgeted fold killed and resumed keeps its plan and ends bit for bit as the uninterrupted one."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from competition.training.budget import (CURVES_S, MARGIN, MIN_REFINER_STEPS, REFINER_SAVE_S, REPLAN_TOLERANCE, Budget,
                                         Rates, TooShort, Work, epoch_seconds, fixed_seconds, make_plan,
                                         refiner_steps_at, replan, training_end)

import forkserver

WORK = Work(train_images=4000, val_images=1000, batch=8, refiners=1, refiner_photos=4000, predict_refiner_photos=True)
RATES = Rates(train_step_s=0.5, eval_image_s=0.02, refiner_step_s=0.1, decode_s=0.01, trace_s=2.0, reload_s=3.0,
              refiner_trace_s=4.0, source="stated")
AFTER = 1000 * 0.02 + 3.0 + 2.0 + CURVES_S  # the out-of-fold pass, the best model reloaded, traced again, the curves


def test_epoch_and_fixed_seconds_are_the_counts_times_the_rates():
    assert epoch_seconds(WORK, RATES) == pytest.approx(500 * 0.5 + 1000 * 0.02)           # 270 s
    start = 3.0 + 4.0  # each refiner: the fold's model reloaded, its first batch traced
    assert fixed_seconds(WORK, RATES) == pytest.approx(AFTER + 4000 * (0.01 + 0.02) + start)  # + the photos
    held_out = Work(4000, 1000, 8, refiners=6, refiner_photos=5000)
    assert fixed_seconds(held_out, RATES) == pytest.approx(AFTER + 5000 * 0.01 + 6 * start)  # not predicted
    assert fixed_seconds(Work(4000, 1000, 8), RATES) == pytest.approx(AFTER)


def test_a_plan_fills_the_budget_in_the_presets_ratio():
    plan = make_plan(3600, 0.0, epochs=20, refiner_steps=3000, warmup=1, work=WORK, rates=RATES)
    epoch, fixed = 270.0, fixed_seconds(WORK, RATES)
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
    assert plan["refiner_steps"] == 0 and plan["epochs"] == math.floor((MARGIN * 3600 - AFTER) / 270.0)


@pytest.mark.parametrize("epochs, warmup", [(1, 0), (2, 0), (3, 1), (30, 1)])
def test_a_short_plan_keeps_a_complete_schedule(epochs, warmup):
    """The warm-up is cut where the planned epochs leave no room for it after it (at least one decay epoch)."""
    budget = (270.0 * epochs + AFTER + 1.0) / MARGIN
    plan = make_plan(budget, 0.0, 20, 0, 1, Work(4000, 1000, 8), RATES)
    assert (plan["epochs"], plan["warmup"]) == (epochs, warmup)


def test_a_budget_too_short_names_the_least_that_works():
    with pytest.raises(TooShort) as e:
        make_plan(300, 0.0, 20, 3000, 1, WORK, RATES)
    least = (270.0 + MIN_REFINER_STEPS * 0.1 + fixed_seconds(WORK, RATES)) / MARGIN
    assert e.value.least_s == pytest.approx(least) and "\n" not in str(e.value)
    plan = make_plan(least + 1, 0.0, 20, 3000, 1, WORK, RATES)
    assert plan["epochs"] == 1 and plan["refiner_steps"] >= MIN_REFINER_STEPS


def test_the_first_epoch_replans_only_when_it_is_off_by_more_than_the_tolerance():
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    assert replan(plan, plan["epoch_s"] * (1 + REPLAN_TOLERANCE * 0.9), 3600, 300.0, WORK, 1) is None
    slow = replan(plan, 2 * plan["epoch_s"], 3600, 600.0, WORK, 1)
    assert slow["replanned"] is True and slow["epochs"] < plan["epochs"] and slow["warmup"] == plan["warmup"]
    assert slow["epoch_s"] == pytest.approx(2 * plan["epoch_s"] - RATES.trace_s, rel=1e-3)  # its tracing a one-off
    assert slow["planned_s"] <= MARGIN * 3600 + 0.1
    fast = replan(plan, plan["epoch_s"] / 2, 3600, 150.0, WORK, 1)  # after the first epoch a plan may grow
    assert fast["epochs"] > plan["epochs"]
    hopeless = replan(plan, 3500.0, 3600, 3500.0, WORK, 1)  # the first epoch took it all: no more epochs
    assert hopeless["epochs"] == 1 and hopeless["refiner_steps"] == MIN_REFINER_STEPS


def test_the_first_epochs_tracing_is_not_taken_for_every_epochs_time():
    """A first epoch slower than planned by no more than its one-off tracing (measured before training) keeps the
    plan: cpu's fold 0 on a 5-minute budget lost 2 of its 8 epochs to a first epoch of 27.7 s against 24.8
    planned (mutation: the first epoch's wall time taken as every epoch's)."""
    rates = dataclasses.replace(RATES, trace_s=30.0)
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, rates)
    assert replan(plan, plan["epoch_s"] + 30.0, 3600, 300.0, WORK, 1) is None  # 11% slower, all of it tracing
    assert replan(plan, plan["epoch_s"] + 30.0, 3600, 1800.0, WORK, 5, always=True)["epoch_s"] == \
        pytest.approx(plan["epoch_s"] + 30.0, rel=1e-3)  # the guard's epochs: their mean as it is


def test_the_guards_replan_counts_the_epochs_done_and_never_grows_late():
    """The guard saw the fold would overrun after epoch 5: planned again from the epochs' mean, whatever the
    tolerance, with the 5 epochs counted; a late re-plan that would add epochs keeps the plan (its schedule)."""
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    late = replan(plan, plan["epoch_s"] * 1.05, 3600, 5 * plan["epoch_s"] * 1.05 + 400, WORK, 5, always=True)
    assert late["epochs"] >= 5 and late["epochs"] <= plan["epochs"] and late["planned_s"] <= MARGIN * 3600 + 0.1
    # the schedule under way is kept while the refiner can give the time (cpu's fold 0 on 5 minutes: a guard that
    # cut 8 epochs to 6 scored 0.98567-0.98630, the runs that kept 8 0.98666-0.98695); mutation: epochs cut first
    kept = replan(plan, plan["epoch_s"] * 1.05, 3600, 5 * plan["epoch_s"] * 1.05 + 100, WORK, 5, always=True)
    assert kept["epochs"] == plan["epochs"] and MIN_REFINER_STEPS <= kept["refiner_steps"] < plan["refiner_steps"]
    assert kept["planned_s"] <= MARGIN * 3600 + 0.1
    worse = replan(plan, plan["epoch_s"] * 1.5, 3600, 5 * plan["epoch_s"] * 1.5 + 400, WORK, 5, always=True)
    assert worse["epochs"] < plan["epochs"] and worse["planned_s"] <= MARGIN * 3600 + 0.1  # too much for the refiner
    assert replan(plan, plan["epoch_s"] / 2, 3600, 500.0, WORK, 5, always=True) is None


def test_what_a_fit_spends_beyond_its_epochs_is_counted_once_more(tmp_path):
    """The first fit's start (its data pipeline, its tracing) comes again with the fit that goes on after the
    re-plan: a re-plan given it plans fewer epochs than one without (mutation: restart_s ignored)."""
    import time
    from competition.training.budget import checked_plan
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    budget = Budget(3600, started=time.monotonic() - 600, refiners=1, own_photos=True)
    plain = checked_plan(plan, budget, 2 * plan["epoch_s"], 1, False, 4000, 1000, 8, tmp_path / "a")
    restarted = checked_plan(plan, budget, 2 * plan["epoch_s"], 1, False, 4000, 1000, 8, tmp_path / "b", 600.0)
    assert restarted["epochs"] < plain["epochs"] and json.loads((tmp_path / "b" / "budget.json").read_text()) == \
        restarted


def test_a_late_replan_keeps_the_epochs_and_fits_the_refiner_to_what_is_left():
    """The guard fired after epoch 16 of 19 (epochs 10% slower than planned): a plan that would now trade refiner
    steps for more epochs keeps its 19 (their schedule is under way) and gives the refiner what is left (mutation:
    the old plan kept whole, which overran: cpu's fold 0 on a 10-minute budget took 667 s)."""
    rates = dataclasses.replace(RATES, refiner_step_s=0.5)  # a refiner that takes much of the fold
    plan = make_plan(7200, 0.0, 20, 3000, 1, WORK, rates)
    slow = plan["epoch_s"] * 1.1
    spent = 16 * slow + 10
    again = replan(plan, slow, 7200, spent, WORK, 16, always=True)
    assert again["epochs"] == plan["epochs"] and again["replanned_after"] == 16
    left = MARGIN * 7200 - spent - fixed_seconds(WORK, rates) - (plan["epochs"] - 16) * again["epoch_s"]
    assert again["refiner_steps"] == math.floor(left / 0.5) < plan["refiner_steps"]
    assert again["planned_s"] <= MARGIN * 7200 + 0.5


def test_a_refiner_stops_before_a_step_that_would_end_past_its_deadline(monkeypatch):
    """`train --budget`'s last guard: the refiner's steps end by the deadline, and the model says how many ran.
    A clock that moves 1 s each time it is read: the start at 1, step k ends at 1 + k; with the deadline at 8,
    step 7 ends at 8 and an 8th would end at 9 (mutations: the check after the break, or without the next step)."""
    from types import SimpleNamespace

    import competition.training.refiner as refiner
    from test_refinenet import _samples
    samples = _samples(range(4))
    assert refiner.train_refiner(samples, steps=6, crop=48, batch=2).trained_steps == 6
    ticks = iter(range(1, 1_000))
    monkeypatch.setattr(refiner, "time", SimpleNamespace(monotonic=lambda: float(next(ticks))))
    assert refiner.train_refiner(samples, steps=100, crop=48, batch=2, deadline=8.0).trained_steps == 7


def test_the_refiners_steps_are_planned_again_from_the_time_left_at_their_start():
    """What the epochs left (slack or overrun) goes to the refiner: its steps from the seconds left, less each
    refiner's trace and save, shared among the refiners still to train (mutations: the start not counted, the time
    not shared, no floor)."""
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    start = 4.0 + REFINER_SAVE_S  # traced once, saved
    assert refiner_steps_at(plan, 500.0, 1) == math.floor((500.0 - start) / 0.1)
    assert refiner_steps_at(plan, 500.0, 2) == math.floor((500.0 - 2 * start) / 0.2)
    # late: what is left over a complete schedule, even under MIN_REFINER_STEPS (cpu's fold 0 on 5 minutes: 200
    # planned at its start, 73 run when the deadline stopped it, its rate still high)
    assert refiner_steps_at(plan, 17.0, 1) == 100 < MIN_REFINER_STEPS and refiner_steps_at(plan, 5.0, 1) == 1
    assert refiner_steps_at(make_plan(3600, 0.0, 20, 0, 1, dataclasses.replace(WORK, refiners=0),
                                      dataclasses.replace(RATES, refiner_step_s=0.0)), 500.0, 1) == 0


def test_a_budget_as_a_cap_keeps_the_presets_schedule_where_it_fits_and_shortens_it_where_not():
    """`--budget-cap` (a train kernel's default, the session as the cap): a budget that holds the preset's 20
    epochs and 3,000 refiner steps gets exactly those; one that does not gets what a filled budget would (mutations:
    no cap, the cap on the epochs alone, the cap lost when the first epoch plans again or the refiner starts)."""
    big = make_plan(10 * 3600, 0.0, 20, 3000, 1, WORK, RATES, cap=True)
    assert (big["epochs"], big["refiner_steps"], big["cap"]) == (20, 3000, True)
    assert big["planned_s"] < MARGIN * 10 * 3600  # the rest of the budget left unspent
    small = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES, cap=True)
    filled = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES)
    assert (small["epochs"], small["refiner_steps"]) == (filled["epochs"], filled["refiner_steps"]) and \
        small["epochs"] < 20
    faster = replan(big, big["epoch_s"] / 2, 10 * 3600, 300.0, WORK, 1)  # the first epoch twice as fast
    assert faster["epochs"] == 20 and faster["refiner_steps"] == 3000 and faster["cap"]
    assert refiner_steps_at(big, 5 * 3600, 1) == 3000  # time left over: still the preset's steps
    assert refiner_steps_at({**big, "cap": False}, 5 * 3600, 1) > 3000
    resumed = make_plan(10 * 3600, 0.0, 20, 3000, 1, WORK, RATES, done_epochs=7, cap=True)
    assert resumed["epochs"] == 20  # the epochs done count toward the preset's


def test_a_kept_plan_is_kept_only_for_the_same_budget_and_the_same_use_of_it():
    from competition.training.budget import keeps
    plan = make_plan(3600, 0.0, 20, 3000, 1, WORK, RATES, cap=True)
    assert keeps(plan, Budget(3600, 0.0, cap=True)) and keeps(plan, Budget(3600.04, 0.0, cap=True))
    assert not keeps(plan, Budget(3600, 0.0)) and not keeps(plan, Budget(3700, 0.0, cap=True))
    assert not keeps(None, Budget(3600, 0.0, cap=True))


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
    assert main(["train", "--preset", "tiny", "--run", str(measured_here / "r"), "--data", str(synth_dir),
                 "--budget-cap"]) == 2
    assert capfd.readouterr().err == "error: --budget-cap: give the --budget it caps (e.g. --budget 11h --budget-cap)\n"
    assert not (measured_here / "r").exists()


def _history(fold: Path) -> list[dict]:
    with open(fold / "history.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_a_budgeted_fold_runs_its_schedule_to_the_planned_end(measured_here, synth_dir, tiny_cache, capsys):
    """Cosine decay over the planned epochs: the last epoch trains at lr/100 (over the preset's 2 it would have
    ended at epoch 2); the plan, its line and the steps' cache are where they are said to be."""
    from competition.cli import main
    run = measured_here / "runs" / "b"
    assert main(["train", "--preset", "tiny", "--run", str(run), "--data", str(synth_dir), "--cache", str(tiny_cache),
                 "--budget", "25s", "--schedule", "cosine", "--warmup", "1", "--patience", "1000"]) == 0
    plan = json.loads((run / "fold0" / "budget.json").read_text())
    history = _history(run / "fold0")
    assert plan["epochs"] > 2 and len(history) == plan["epochs"]  # no early stop: every planned epoch
    assert float(history[-1]["lr"]) == pytest.approx(1e-2 * 0.01, rel=1e-3)  # tiny's lr 1e-2, to lr/100
    assert float(history[0]["lr"]) == pytest.approx(1e-3, rel=1e-3)  # the warm-up's first epoch: lr/10
    assert json.loads((run / "fold0" / "train.json").read_text())["epochs"] == plan["epochs"]
    assert "budget 25s: " in capsys.readouterr().out
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

    r = run("cut", "epoch:2", "--budget", "20s")
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


def test_a_budgeted_folds_refiner_is_planned_again_as_it_starts_and_a_rerun_keeps_it(
        measured_here, synth_dir, tiny_cache, monkeypatch, capsys):
    """The refiner's steps are planned again from the time left once the fold is trained (stage.refiner_replan),
    recorded in budget.json before it trains: the same command again finds the refiner up to date, not retrained,
    and does not plan again (mutations: not recorded, recorded after the refiner, planned again on a rerun)."""
    from competition.cli import main
    from competition.training import stage
    asked = []
    monkeypatch.setattr(stage, "refiner_steps_at", lambda plan, left, count: asked.append((left, count)) or 3)
    run = measured_here / "runs" / "r"
    args = ["train", "--preset", "tiny", "--run", str(run), "--data", str(synth_dir), "--cache", str(tiny_cache),
            "--refine", "net", "--refiner-from", "training", "--refiner-steps", "100000", "--budget", "1m"]
    assert main(args) == 0
    [(left, count)] = asked
    assert 0 < left < MARGIN * 60 and count == 1  # the time this command has left, one refiner to train
    plan = json.loads((run / "fold0" / "budget.json").read_text())
    assert plan["refiner_steps"] == 3 and plan["refiner_replanned_from"] > 3
    assert json.loads((run / "refiner" / "refiner.json").read_text())["fold0.keras"]["steps"] == 3
    assert "the refiner's steps planned again as it starts, from the time left: 3 (planned " in capsys.readouterr().out
    refiner = (run / "refiner" / "fold0.keras").read_bytes()
    assert main(args) == 0
    assert "fold0.keras is up to date" in capsys.readouterr().out and len(asked) == 1
    assert (run / "refiner" / "fold0.keras").read_bytes() == refiner
