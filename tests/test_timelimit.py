"""--time-limit and --mirror: the stop decision as a pure function of stated step times, a fold stopped by a
tiny limit and resumed by the same command, a prediction stopped between chunks and resumed byte for byte."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from competition.inference import writer
from competition.config import preset
from competition.base.errors import UserError
from competition.base.timelimit import Deadline, format_duration, parse_duration, stop_before_next

import forkserver

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, seconds", [("11h30m", 41400), ("45m", 2700), ("90s", 90), ("1h", 3600),
                                           ("2h15m30s", 8130), ("600", 600), ("1.5h", 5400), (" 45M ", 2700)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "11h30", "30m1h2", "5d", "0s", "1h1h", "-5m", "h"])
def test_bad_durations_are_one_line_errors(text):
    with pytest.raises(UserError) as e:
        parse_duration(text)
    assert "\n" not in str(e.value) and "--time-limit" in str(e.value)


def test_describe_round_trips_through_parse():
    for seconds in (90, 41400, 3600, 61, 7):
        assert parse_duration(format_duration(seconds)) == seconds


def test_stop_decision_uses_the_slowest_measured_step():
    # epochs of 100 s and 300 s: at 650 s the next (up to 300 s) ends at 950 s
    assert not stop_before_next(650, [100, 300], 1000)
    assert stop_before_next(701, [100, 300], 1000)        # 701 + 300 > 1000
    assert not stop_before_next(700, [100, 300], 1000)    # ends exactly at the limit: still allowed
    assert not stop_before_next(999, [], 1000)            # nothing measured yet: no basis to stop
    assert stop_before_next(500, [600], 1000)             # one slow first epoch is enough


def test_deadline_counts_from_its_start():
    d = Deadline(1000.0, started=0.0)
    d.elapsed = lambda: 650.0  # a stated clock, no wall time
    assert d.step_done(300.0) is False and d.steps == [300.0]
    d.elapsed = lambda: 701.0
    assert d.step_done(100.0) is True  # the slowest (300 s) is what counts


def _cli(*args: str) -> subprocess.CompletedProcess:
    return forkserver.run([sys.executable, "-m", "competition", *args], cwd=ROOT, timeout=120)


def test_cli_bad_time_limit_exits_2_with_one_line(tmp_path):
    proc = _cli("train", "--preset", "tiny", "--data", str(tmp_path), "--time-limit", "soon")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --time-limit 'soon': expected a duration like 11h30m, 45m, 90s or 2h15m30s"]


def test_train_time_limit_stops_after_an_epoch_and_the_same_command_resumes(tmp_path, synth_dir, capsys):
    from competition.training.train import train
    cfg = preset("tiny", epochs=2, patience=5, k=3)
    run, mirror = tmp_path / "runs" / "tl", tmp_path / "working"
    epochs_seen = []
    for attempt in range(2):  # the same call each time: a limit no epoch fits in (1 ms)
        summary = train(cfg, data=str(synth_dir), run_dir=run, fold=0, cache_dir=tmp_path / "cache",
                        time_limit=Deadline(0.001), mirror=mirror)
        if summary.get("time_limited"):
            state = json.loads((run / "fold0" / "backup" / "state.json").read_text())
            assert state["time_limited"] is True and state["epoch"] == summary["epochs"] == attempt + 1
            assert not (run / "fold0" / "train.json").exists()  # not complete
            # the mirror holds the best model and a state to resume from, marked the same way
            mirrored = json.loads((mirror / "fold0" / "backup" / "state.json").read_text())
            assert mirrored == state and (mirror / "fold0" / "backup" / state["backup"]).is_file()
            assert (mirror / "fold0" / "model.keras").is_file() and (mirror / "fold0" / "curves.png").is_file()
            assert len((mirror / "fold0" / "history.csv").read_text().splitlines()) == 1 + attempt + 1
            out = capsys.readouterr().out
            assert f"stopped {run / 'fold0'} after epoch {attempt + 1} of 2" in out and "time limit of" in out
        epochs_seen.append(summary["epochs"])
    # a stop, then the last epoch is never refused (nothing follows it): the fold is complete
    assert epochs_seen == [1, 2]
    done = json.loads((run / "fold0" / "train.json").read_text())
    assert done["epochs"] == 2 and not (run / "fold0" / "backup").exists()
    assert (mirror / "fold0" / "train.json").is_file() and not (mirror / "fold0" / "backup").exists()
    with open(run / "fold0" / "history.csv") as f:
        assert [float(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_predict_time_limit_stops_between_chunks_and_resumes_to_the_same_bytes(tmp_path, tiny_run, synth_dir,
                                                                               monkeypatch, capsys):
    from competition.inference.predict import predict
    monkeypatch.setattr(writer, "CHUNK_ROWS", 3)  # 8 test images: chunks of 3, 3, 2
    reference = predict(tiny_run, str(synth_dir), tmp_path / "ref" / "s.csv.gz", tta="none")
    out, mirror = tmp_path / "sub" / "s.csv.gz", tmp_path / "working"
    runs = 0
    while True:
        runs += 1
        path = predict(tiny_run, str(synth_dir), out, tta="none", time_limit=Deadline(0.001), mirror=mirror)
        if path is not None:
            break
        record = json.loads((mirror / "s.csv.gz.part.json").read_text())
        assert record["rows"] == 3 * runs and (mirror / "s.csv.gz.part").stat().st_size == record["bytes"]
        assert f"after {3 * runs} of 8 rows" in capsys.readouterr().out
    assert runs == 3  # stopped after chunk 1 and 2; the last chunk is never refused
    assert path.read_bytes() == reference.read_bytes()
    assert not list(mirror.iterdir())  # the finished file replaces the mirrored partial one


def test_a_resumed_fold_continues_the_lr_schedule(tmp_path, synth_dir):
    from competition.training.train import train
    cfg = preset("tiny", epochs=3, patience=5, k=3, reduce_lr_patience=1)
    run = tmp_path / "runs" / "lr"
    kwargs = dict(data=str(synth_dir), run_dir=run, fold=0, cache_dir=tmp_path / "cache", time_limit=Deadline(0.001))
    assert train(cfg, **kwargs)["time_limited"]
    state_path = run / "fold0" / "backup" / "state.json"
    state = json.loads(state_path.read_text())
    first_val = state["history"][0]["val_dice"]
    # after epoch 1 the schedule's best is that epoch's value, nothing waited, the LR as configured
    assert state["reduce_lr"] == {"wait": 0, "best": pytest.approx(first_val), "cooldown": 0, "lr": pytest.approx(cfg.lr)}
    # a schedule that had already lowered the LR and holds an unbeatable best (val_dice <= 1)
    state["reduce_lr"] = {"wait": 0, "best": 2.0, "cooldown": 0, "lr": cfg.lr / 4}
    state_path.write_text(json.dumps(state))
    assert train(cfg, **kwargs)["time_limited"]
    state = json.loads(state_path.read_text())
    assert state["history"][1]["lr"] == pytest.approx(cfg.lr / 4)   # epoch 2 trained with the restored LR
    # no improvement on the restored best with patience 1: halved, counter reset, best kept (a fresh
    # schedule would have taken epoch 2's value as its best and kept the LR)
    assert state["reduce_lr"] == {"wait": 0, "best": 2.0, "cooldown": 0, "lr": pytest.approx(cfg.lr / 8)}
